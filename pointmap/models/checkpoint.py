"""Loading weights: pointmap's own checkpoints and the peers' (Point-MAE, PointMamba, MAP 3D, Mamba3D).

Loud by default: every encoder tensor of the target must come from the file, and every tensor of the
file must have a place in the target or be of a kind the target does not have (a pretraining decoder
loaded into a classifier, a classification head loaded into an encoder); otherwise it is a ValueError
that names the format and what is missing. ``strict=False`` loads what fits and says so at WARNING.
"""
import argparse
import logging
import os
import pickle
import re
from typing import Dict, List, NamedTuple

import torch
from torch import nn

from ..errors import UserError, one_line
from .convert import CONVERTERS, FORMATS, detect_format
from .hybrid_encoder import TokenEncoder

_logger = logging.getLogger(__name__)

# Keys of one kind of model only: left out (and listed as ignored) when the target has no place for them.
_KNOWN_KINDS = re.compile(r"^(mask_token|decoder_pos_embed\.|decoder\.|predictor\.|cls_token|cls_pos|head\.|neck\.|norm_neck\.)")
_SHOWN = 3  # names quoted in an error


class LoadResult(NamedTuple):
    """missing_keys: target keys the checkpoint did not fill; unexpected_keys: checkpoint keys with no
    place in the target; ignored_keys: keys of the other kind of model (a pretraining decoder loaded
    into a classifier, a head loaded into an encoder), left out on purpose; source: the format read."""

    missing_keys: List[str]
    unexpected_keys: List[str]
    ignored_keys: List[str]
    source: str = "pointmap"


class CheckpointError(UserError):
    """A checkpoint that does not fit its target: the message names the file, the format and the keys."""


def _extract_state(ckpt, path: str) -> Dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: under ``base_model`` (the peers), ``model`` or ``state_dict``
    (pointmap, other trainers), ``model_state_dict`` (Point-MAE's part segmentation,
    ``segmentation/main.py``), or the checkpoint itself."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict of tensors, got {type(ckpt).__name__}")
    for key in ("base_model", "model", "state_dict", "model_state_dict"):
        if key in ckpt and isinstance(ckpt[key], dict):
            return ckpt[key]
    return ckpt


def _strip_module(state):
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def _is_encoder(model: nn.Module) -> bool:
    """An encoder alone (its keys have no ``encoder.`` prefix): a TokenEncoder or a MAP 2D encoder."""
    return isinstance(model, TokenEncoder) or getattr(model, "token_encoder", False)


def _head(state: Dict[str, torch.Tensor]) -> Dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in state.items() if k.startswith("head.")}


def _adapt_to_target(state: Dict[str, torch.Tensor], model: nn.Module, target: Dict[str, torch.Tensor]):
    """Re-roots names onto ``model`` (an encoder-level file into a classifier, a classifier-level file into
    an encoder) and sets aside the keys of another kind of model that ``model`` has no place for. A head
    is kept only when it is the same head as the target's (same names and shapes: a part segmenter's into
    a part segmenter, a 40-class classifier's into a 40-class classifier); any other head is set aside.
    A decoder key is set aside only when ``model`` has no decoder: a decoder of another build (a Mamba
    decoder's into a Transformer decoder) surfaces as unexpected. ``target``: ``model.state_dict()``."""
    if _is_encoder(model):
        state = {(k[len("encoder."):] if k.startswith("encoder.") else k): v for k, v in state.items()}
    elif not any(k.startswith("encoder.") for k in state):
        state = {("encoder." + k if "encoder." + k in target else k): v for k, v in state.items()}
    same_head = _head(state) == _head(target)
    has_decoder = any(k.startswith("decoder.") for k in target)
    kept, ignored = {}, []
    for k, v in state.items():
        if k in target and (same_head or not k.startswith("head.")):
            kept[k] = v
        elif _KNOWN_KINDS.match(k) and not (has_decoder and k.startswith("decoder.")):
            ignored.append(k)
        else:
            kept[k] = v  # surfaces as an unexpected key
    return kept, ignored


def _encoder_keys(model: nn.Module, target: Dict[str, torch.Tensor]) -> List[str]:
    """The target's encoder tensors (BatchNorm's num_batches_tracked aside: load_state_dict fills it)."""
    prefix = "" if _is_encoder(model) else "encoder."
    return [k for k in target if k.startswith(prefix) and not k.endswith("num_batches_tracked")]


def _names(keys: List[str]) -> str:
    more = f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def _numpy_scalars() -> list:
    """What ``torch.load(weights_only=True)`` needs for numpy scalars (rebuilt from a dtype and bytes; no
    code of the file runs), under numpy 2's and numpy 1's module names."""
    import numpy as np

    scalar = np.array(0.0)[()].__reduce__()[0]  # numpy's scalar constructor, whatever its module is called
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return [np.dtype, *dtypes, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]


def _load(path: str, weights_only: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError:
        # Point-MAE's part-seg files keep numpy metrics (test_acc, ...) beside the weights, and the DeiT-style
        # main.py of the MAP 2D release and Mamba-Reg its argparse.Namespace (``args``, plain values); allow
        # those (torch >= 2.6 names globals this way; on an older torch the first error stands)
        if not weights_only or not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
            raise
        with torch.serialization.safe_globals([*_numpy_scalars(), argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: str, weights_only: bool = True):
    """``torch.load`` on the CPU (a ``.safetensors`` file: its tensors); a file that is not a readable checkpoint
    is a :class:`CheckpointError`. With ``weights_only``, numpy scalars (metrics some peers save beside the
    weights) are allowed too."""
    if str(path).endswith(".safetensors") and os.path.isfile(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint {path} is not a readable safetensors file ({one_line(e, 240)})") from e
    try:
        return _load(path, weights_only)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as e:  # torch.load's parser fails in many ways on a file that is not a checkpoint
        raise CheckpointError(f"checkpoint {path} is not a readable torch checkpoint "
                              f"({type(e).__name__}: {one_line(e, 240)})") from e


def checkpoint_state(ckpt, path: str) -> Dict[str, torch.Tensor]:
    """The weights of a read checkpoint (:func:`read_checkpoint`), DDP's ``module.`` prefix removed."""
    return _strip_module(_extract_state(ckpt, path))


def load_checkpoint(model: nn.Module, path: str, source: str = "auto", strict: bool = True,
                    weights_only: bool = True, whole: bool = False) -> LoadResult:
    """Loads weights into ``model``: an encoder, a classifier, a part segmenter or a :class:`MAPPretrainer`.

    Args:
        model: the target; its keys decide what is taken from the checkpoint.
        path: a ``.pth`` file: pointmap's (``{"model": state}`` or a bare state dict) or a peer's
            (``{"base_model": state}``, pretraining or finetuned, with or without DDP's ``module.``):
            Point-MAE, PointMamba, the released MAP 3D code or Mamba3D; or a ``.safetensors`` file.
        source: ``auto`` (from the file's keys), ``pointmap``, ``point_mae``, ``pointmamba``, ``map3d`` or ``map2d``
            (the MAP 3D release's and Mamba3D's own files, see :mod:`pointmap.models.convert`).
        strict: every encoder tensor of ``model`` must be in the file and every tensor of the file must
            fit ``model`` or be of another kind of model (decoder, head: listed as ignored). False loads
            what fits and logs what did not at WARNING.
        weights_only: passed to ``torch.load``; set False only for a file you trust.
        whole: every tensor of ``model`` must come from the file, its head too (scoring a finetuned file).

    Returns:
        :class:`LoadResult` (missing, unexpected and ignored keys, the format), also logged.

    Raises:
        CheckpointError (a ValueError): the file is not a checkpoint, its format is unknown, a tensor's
            shape differs from the target's, or (strict) encoder tensors are missing or keys are unknown,
            or (whole) any tensor of the model is missing.
    """
    return load_state(model, checkpoint_state(read_checkpoint(path, weights_only), path), path, source, strict, whole)


def load_state(model: nn.Module, state: Dict[str, torch.Tensor], path: str, source: str = "auto",
               strict: bool = True, whole: bool = False) -> LoadResult:
    """:func:`load_checkpoint` on weights already read (``path`` names them in messages)."""
    if source not in ("auto",) + FORMATS:
        raise UserError(f"source must be one of {['auto', *FORMATS]}; got {source!r}")
    fmt = detect_format(state) if source == "auto" else source
    if fmt is None:
        raise CheckpointError(f"checkpoint {path}: unknown format ({len(state)} tensors, first keys "
                              f"{_names(list(state))}); pointmap reads {', '.join(FORMATS)}")
    if fmt in CONVERTERS:
        encoder = getattr(model, "encoder", model)
        state = CONVERTERS[fmt](state, getattr(encoder, "layout", None))
    target = model.state_dict()
    state, ignored = _adapt_to_target(state, model, target)
    fit = getattr(getattr(model, "encoder", model), "fit_state", None)  # an encoder that adapts a file to itself
    if fit is not None:
        state = fit(state, "" if _is_encoder(model) else "encoder.")
    where = f"checkpoint {path} ({fmt} format) into {type(model).__name__}"
    encoder = _encoder_keys(model, target)
    missing_enc = [k for k in encoder if k not in state]
    unexpected = [k for k in state if k not in target]
    problems = []
    if missing_enc:
        problems.append(f"{len(missing_enc)} of {len(encoder)} encoder tensors are not in the file "
                        f"({_names(missing_enc)})")
    if unexpected:
        problems.append(f"{len(unexpected)} tensors of the file have no place in the model ({_names(unexpected)})")
    if problems and strict:
        raise CheckpointError(f"{where}: {'; '.join(problems)}; nothing was loaded. Load it partially with "
                              "strict=False (config: pretrained_strict: false)")
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    if whole and missing:
        raise CheckpointError(f"{where}: {len(missing)} tensors of the model are not in the file ({_names(missing)}"
                              f"{'; set aside: ' + _names(ignored) if ignored else ''}): the file holds another "
                              f"model or head; nothing was loaded")
    for k, v in state.items():
        if k in target and target[k].shape != v.shape:
            raise CheckpointError(f"checkpoint {path} ({fmt} format): {k!r} has shape {tuple(v.shape)} in the "
                                  f"checkpoint but {tuple(target[k].shape)} in the model")
    if problems:
        _logger.warning("partial load of %s: %s", where, "; ".join(problems))
    result = model.load_state_dict(state, strict=False)
    out = LoadResult(list(result.missing_keys), list(result.unexpected_keys), ignored, fmt)
    _logger.info("loaded %s: %d tensors, missing %s, ignored %s", where, len(state) - len(unexpected),
                 _names(out.missing_keys) if out.missing_keys else "none",
                 _names(ignored) if ignored else "none")
    return out
