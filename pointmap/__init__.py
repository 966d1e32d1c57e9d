"""pointmap: masked autoregressive pretraining (MAP) for point clouds with hybrid Mamba-Transformer encoders."""
from .version import __version__
from .models import create_model, create_pretrainer, list_models, list_pretrained, register_model

__all__ = ["__version__", "create_model", "create_pretrainer", "list_models", "list_pretrained", "register_model"]
