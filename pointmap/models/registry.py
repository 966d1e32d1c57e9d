"""Model registry à la timm: ``@register_model`` presets, ``create_model(name)``, ``list_models()``."""
import fnmatch
from typing import Callable, Dict, List, Optional

from torch import nn

_model_entrypoints: Dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Registers ``fn`` under its ``__name__``; ``fn(num_classes=None, **overrides)`` builds the model."""
    name = fn.__name__
    if name in _model_entrypoints:
        raise ValueError(f"model {name!r} is registered twice")
    _model_entrypoints[name] = fn
    return fn


def list_models(pattern: Optional[str] = None) -> List[str]:
    """Sorted registered names, optionally filtered by a shell-style ``pattern`` (``"hybridnet_*"``)."""
    names = sorted(_model_entrypoints)
    return fnmatch.filter(names, pattern) if pattern else names


def create_model(name: str, num_classes: Optional[int] = None, **overrides) -> nn.Module:
    """Builds a registered preset.

    Args:
        name: a name from :func:`list_models`.
        num_classes: None builds the encoder alone; an int adds the classification head.
        **overrides: preset arguments to change (``embed_dim``, ``layout``, ``num_group``, ...), or
            ``num_parts`` / ``num_categories`` for the part-segmentation model.
    """
    if name not in _model_entrypoints:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return _model_entrypoints[name](num_classes=num_classes, **overrides)
