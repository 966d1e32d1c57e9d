"""Model registry à la timm: ``@register_model`` presets, ``create_model(name)``, ``list_models()``."""
from typing import Callable, List, Optional

from torch import nn

from ..registry import Registry

MODELS = Registry("model")


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Registers ``fn`` under its ``__name__``; ``fn(num_classes=None, **overrides)`` builds the model."""
    return MODELS.register(obj=fn)


def list_models(pattern: Optional[str] = None) -> List[str]:
    """Sorted registered names, optionally filtered by a shell-style ``pattern`` (``"hybridnet_*"``)."""
    return MODELS.names(pattern)


def create_model(name: str, num_classes: Optional[int] = None, **overrides) -> nn.Module:
    """Builds a registered preset.

    Args:
        name: a name from :func:`list_models`.
        num_classes: None builds the encoder alone; an int adds the classification head.
        **overrides: preset arguments to change (``embed_dim``, ``layout``, ``num_group``, ...), or
            ``num_parts`` / ``num_categories`` for the part-segmentation model.
    """
    return MODELS.build(name, num_classes=num_classes, **overrides)
