"""Model registry à la timm: ``@register_model`` presets, ``create_model(name)``, ``list_models()``."""
from typing import Any, Callable, List, Mapping, Optional, Sequence, Set, Union

from torch import nn

from ..errors import accepted_kwargs, check_kwargs
from ..registry import Registry

MODELS = Registry("model")


def register_model(fn: Optional[Callable[..., nn.Module]] = None, *, forwards: Sequence[Callable] = ()):
    """Registers ``fn`` under its ``__name__``; ``fn(num_classes=None, **overrides)`` builds the model.
    ``forwards``: where the preset's ``**overrides`` go (its builder, the encoder class), which decides the
    names ``model.args`` may hold (:func:`model_arguments`); ``@register_model(forwards=(...))``."""
    def add(f):
        out = MODELS.register(obj=f)  # a taken name raises here, before f is changed
        f.forwards_kwargs = tuple(forwards)
        return out

    return add if fn is None else add(fn)


def model_arguments(name: str) -> Optional[Set[str]]:
    """The keyword names preset ``name`` accepts (None: it does not declare where its ``**kwargs`` go)."""
    fn = MODELS.get(name)
    return accepted_kwargs(fn, *getattr(fn, "forwards_kwargs", ()))


def check_model_args(name: str, args: Mapping[str, Any], section: str = "model.args", fixed=()) -> None:
    """A :class:`~pointmap.errors.ConfigError` naming ``section`` and the first key preset ``name`` does not take."""
    check_kwargs(section, name, args, model_arguments(name), fixed)


def list_models(pattern: Optional[str] = None) -> List[str]:
    """Sorted registered names, optionally filtered by a shell-style ``pattern`` (``"hybridnet_*"``)."""
    return MODELS.names(pattern)


def create_model(name: str, num_classes: Optional[int] = None, pretrained: Union[None, bool, str] = None,
                 **overrides: Any) -> nn.Module:
    """Builds a registered preset.

    Args:
        name: a name from :func:`list_models`.
        num_classes: None builds the encoder alone (with ``pretrained``: the weights' own head); an int adds
            the classification head; 0 the same classifier without a head, returning pooled features
            (timm's ``num_classes=0``).
        pretrained: weights to load (see :mod:`pointmap.models.pretrained`): ``True`` (the preset's default
            entry), an entry of :func:`~pointmap.models.pretrained.list_pretrained`, a folder written by
            ``tools/export.py`` or a checkpoint file. The model is built with the weights' arguments and head
            (``overrides`` win) and filled whole; a ``num_classes`` of your own gets a new head (the file's
            is set aside). A file that does not fit is a :class:`~pointmap.models.CheckpointError`.
        **overrides: preset arguments to change (``embed_dim``, ``layout``, ``num_group``, ...), or
            ``num_parts`` / ``num_categories`` for the part-segmentation model.

    The model's ``pretrained_cfg`` is its card as a dict (:func:`~pointmap.models.pretrained.pretrained_cfg`):
    the input (``num_points`` and the test ``transforms``, or an image's ``input_size``), ``class_names``,
    where the weights came from; ``pointmap.data.create_transform(model.pretrained_cfg)`` is its test-time
    pipeline.
    """
    from .pretrained import pretrained_cfg

    if pretrained is None or pretrained is False:
        model = MODELS.build(name, num_classes=num_classes, **overrides)
        model.pretrained_cfg = pretrained_cfg(name, model)
        return model
    from .checkpoint import load_checkpoint
    from .pretrained import resolve_pretrained

    MODELS.get(name)  # an unknown preset is named before anything is downloaded
    card, path = resolve_pretrained(pretrained, preset=name)
    kwargs = card.model_kwargs(num_classes, **overrides) if card else {**overrides, "num_classes": num_classes}
    own_head = card is not None and num_classes is None and "num_parts" not in overrides
    model = MODELS.build(name, **kwargs)
    load_checkpoint(model, path, source=card.format if card else "auto", whole=own_head)
    model.pretrained_cfg = pretrained_cfg(name, model, card, own_head=own_head, source=path)
    return model
