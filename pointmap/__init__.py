"""pointmap: masked autoregressive pretraining (MAP) for point clouds with hybrid Mamba-Transformer encoders."""
from .version import __version__
from .models import create_model, create_pretrainer, list_models, list_pretrained, register_model

__all__ = ["__version__", "create_model", "create_pretrainer", "embed", "list_models", "list_pretrained", "load_model",
           "predict", "register_model", "segment"]

_INFERENCE = ("embed", "load_model", "predict", "segment")  # pointmap.engine.inference, imported when first used


def __getattr__(name: str):
    if name in _INFERENCE:
        from .engine import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'pointmap' has no attribute {name!r}")
