"""Models: HybridEncoder, heads, the MAP pretrainer, the image adapter, the registry, checkpoint import, the
published weights by name (pretrained.yaml)."""
from .checkpoint import CheckpointError, LoadResult, checkpoint_state, load_checkpoint, load_state, read_checkpoint
from .convert import detect_format, map3d_to_pointmap, point_mae_to_pointmap, pointmamba_to_pointmap
from .classifier import HEAD_DEFAULTS, POOLS, Classifier, mlp_head, pool_tokens, pooled_features
from .hybrid_encoder import EncoderOutput, HybridEncoder, PatchTokens, TokenEncoder, no_weight_decay
from .image import ImageEncoder, patchify
from .partseg import PartSegmenter, PointMAEPartSegmenter
from .presets import build_model
from .decoders import MAPDecoder
from .pretrained import (ModelCard, absolute_spec, check_pretrained, list_pretrained, load_pretrained, pretrained_card, read_card,
                         resolve_pretrained)
from .pretrainer import (MAPPretrainer, PretrainOutput, create_pretrainer, objective_config, random_mask,
                         row_attention_mask)
from .registry import check_model_args, create_model, list_models, model_arguments, register_model
from . import map3d  # noqa: F401  (registers map3d_official, mamba3d)
from . import map2d_presets  # noqa: F401  (registers map_*_patch16_224, mambar_*_patch16_224)
from .map2d import MAP2DEncoder
from .map2d_decoder import MAP2DPretrainer
from .mambar import RegisterClassifier

__all__ = [
    "CheckpointError", "Classifier", "MAP2DEncoder", "MAP2DPretrainer", "RegisterClassifier", "EncoderOutput",
    "HybridEncoder", "ImageEncoder", "LoadResult", "MAPDecoder",
    "ModelCard", "absolute_spec", "check_pretrained", "MAPPretrainer", "PartSegmenter", "PatchTokens",
    "PointMAEPartSegmenter", "PretrainOutput", "TokenEncoder", "HEAD_DEFAULTS", "POOLS", "build_model",
    "check_model_args", "checkpoint_state", "create_model", "create_pretrainer", "objective_config", "detect_format",
    "list_models", "list_pretrained", "load_checkpoint", "load_pretrained", "load_state", "map3d_to_pointmap",
    "mlp_head", "model_arguments", "no_weight_decay", "patchify",
    "point_mae_to_pointmap", "pointmamba_to_pointmap", "pool_tokens", "pooled_features", "pretrained_card",
    "read_card", "read_checkpoint", "resolve_pretrained", "random_mask", "register_model", "row_attention_mask",
]
