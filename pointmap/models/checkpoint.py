"""Loading weights: pointmap's own checkpoints and Point-MAE's (pretraining or finetuned)."""
import logging
import re
from typing import Dict, List, NamedTuple, Tuple

import torch
from torch import nn

from .hybrid_encoder import TokenEncoder
from .partseg import PartSegmenter
from .pretrainer import MAPPretrainer

_logger = logging.getLogger(__name__)

# Point-MAE name → pointmap name, as the classifier / pretrainer spell it (first match wins).
_POINT_MAE_RULES: List[Tuple[str, str]] = [
    (r"^(?:MAE_encoder\.)?encoder\.(first_conv|second_conv)\.", r"encoder.tokenizer.\1."),
    (r"^(?:MAE_encoder\.)?pos_embed\.", "encoder.pos_embed."),
    (r"^(?:MAE_encoder\.)?blocks\.blocks\.(\d+)\.attn\.", r"encoder.blocks.\1.mixer."),
    (r"^(?:MAE_encoder\.)?blocks\.blocks\.(\d+)\.", r"encoder.blocks.\1."),
    (r"^(?:MAE_encoder\.)?norm\.", "encoder.norm."),
    (r"^cls_head_finetune\.", "head."),
    (r"^MAE_decoder\.blocks\.(\d+)\.attn\.", r"decoder.blocks.\1.mixer."),
    (r"^MAE_decoder\.", "decoder."),
    (r"^increase_dim\.0\.", "predictor."),
    (r"^(cls_token|cls_pos|mask_token|decoder_pos_embed\..*)$", r"\1"),
]
# Keys that belong to one kind of model only: dropped (and listed as ignored) for the others.
_PRETRAIN_ONLY = re.compile(r"^(mask_token|decoder_pos_embed\.|decoder\.|predictor\.)")
_FINETUNE_ONLY = re.compile(r"^(cls_token|cls_pos|head\.)")


class LoadResult(NamedTuple):
    """missing_keys: target keys the checkpoint did not fill; unexpected_keys: checkpoint keys with no
    place in the target; ignored_keys: keys of the other kind of model (a pretraining decoder loaded
    into a classifier, a head loaded into an encoder), left out on purpose."""

    missing_keys: List[str]
    unexpected_keys: List[str]
    ignored_keys: List[str]


def point_mae_to_pointmap(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Renames a Point-MAE ``base_model`` state dict to pointmap's names (classifier / pretrainer level).
    Unknown names are kept as they are, so they surface as unexpected keys."""
    out = {}
    for name, value in state.items():
        new = name
        for pattern, repl in _POINT_MAE_RULES:
            if re.match(pattern, name):
                new = re.sub(pattern, repl, name)
                break
        if new.startswith("predictor.") and value.dim() == 3:               # Conv1d(C, 3K, 1) → Linear
            value = value.squeeze(-1)
        out[new] = value
    return out


def _extract_state(ckpt) -> Tuple[Dict[str, torch.Tensor], str]:
    """Finds the state dict inside a checkpoint and says whose format it is."""
    if not isinstance(ckpt, dict):
        raise ValueError(f"a checkpoint must be a dict, got {type(ckpt).__name__}")
    for key, fmt in (("base_model", "point_mae"), ("model", "pointmap"), ("state_dict", "pointmap")):
        if key in ckpt and isinstance(ckpt[key], dict):
            return ckpt[key], fmt
    return ckpt, "pointmap"


def _adapt_to_target(state: Dict[str, torch.Tensor], model: nn.Module):
    """Re-roots classifier/pretrainer-level names onto ``model`` and drops the other kind's keys."""
    ignored = []
    if isinstance(model, MAPPretrainer):
        other = _FINETUNE_ONLY
    elif isinstance(model, (TokenEncoder, PartSegmenter)):
        other = re.compile(_FINETUNE_ONLY.pattern + "|" + _PRETRAIN_ONLY.pattern)
    else:
        other = _PRETRAIN_ONLY
    kept = {}
    for k, v in state.items():
        if other.match(k):
            ignored.append(k)
        elif isinstance(model, TokenEncoder) and k.startswith("encoder."):
            kept[k[len("encoder."):]] = v
        else:
            kept[k] = v
    return kept, ignored


def load_checkpoint(model: nn.Module, path: str, source: str = "auto", weights_only: bool = True) -> LoadResult:
    """Loads weights into ``model``: an encoder, a classifier, a part segmenter or a :class:`MAPPretrainer`.

    Args:
        model: the target; its keys decide what is taken from the checkpoint.
        path: a ``.pth`` file: pointmap's (``{"model": state}`` or a bare state dict) or Point-MAE's
            (``{"base_model": state}``, pretraining ``Point_MAE`` or finetuned ``PointTransformer``,
            with or without the ``module.`` prefix of DDP).
        source: ``auto`` (from the file's keys), ``pointmap`` or ``point_mae``.
        weights_only: passed to ``torch.load``; set False only for a file you trust.

    Returns:
        :class:`LoadResult` (missing, unexpected and ignored keys), also logged.

    Raises:
        ValueError: a checkpoint tensor's shape differs from the target's (names the first such key
            and both shapes), or ``source`` is unknown.
    """
    if source not in ("auto", "pointmap", "point_mae"):
        raise ValueError(f"source must be 'auto', 'pointmap' or 'point_mae'; got {source!r}")
    ckpt = torch.load(path, map_location="cpu", weights_only=weights_only)
    state, detected = _extract_state(ckpt)
    source = detected if source == "auto" else source
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    if source == "point_mae":
        state = point_mae_to_pointmap(state)
    state, ignored = _adapt_to_target(state, model)
    target = model.state_dict()
    for k, v in state.items():
        if k in target and target[k].shape != v.shape:
            raise ValueError(f"checkpoint {path}: {k!r} has shape {tuple(v.shape)} in the checkpoint but "
                             f"{tuple(target[k].shape)} in the model")
    result = model.load_state_dict(state, strict=False)
    out = LoadResult(list(result.missing_keys), list(result.unexpected_keys), ignored)
    _logger.info("loaded %s (%s format) into %s: %d tensors, missing %s, unexpected %s, ignored %d",
                 path, source, type(model).__name__, len(state) - len(out.unexpected_keys),
                 out.missing_keys or "none", out.unexpected_keys or "none", len(ignored))
    return out
