"""Who draws the random numbers of a run, and from what.

Training owns the process's RNGs (Python's, numpy's, torch's on the CPU and each CUDA device, and the
``torch.Generator`` attributes of the model's submodules): seeded with ``train.seed + rank`` at setup, they
draw the sampler's loader seed, augmentations, masks and drop path, and a checkpoint keeps their state
(:func:`get_rng_state`), so a resumed run draws what the uninterrupted one would. Evaluation draws from
none of them: each pass runs in :func:`fixed_rng` with a seed of its own (:func:`evaluation_seed`), which
restores them on exit, so evaluating more often, less often or not at all leaves every training step
as it was, and the same weights always score the same. Whatever else a hook draws at an epoch's end
(:func:`kept_rng`) is given back as well.
"""
from __future__ import annotations

import contextlib
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

__all__ = ["seed_everything", "get_rng_state", "set_rng_state", "module_generators", "kept_rng", "fixed_rng",
           "evaluation_seed"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def kept_rng(model: Optional[nn.Module] = None):
    """What runs inside may draw from any RNG :func:`get_rng_state` covers (``model``'s generators too); on exit
    each is back in the state it had on entry."""
    saved = get_rng_state(model)
    try:
        yield
    finally:
        set_rng_state(saved, model)


@contextlib.contextmanager
def fixed_rng(seed: int, model: Optional[nn.Module] = None):
    """Inside: every RNG a run draws from (Python's, numpy's, torch's on the CPU and every CUDA device, and the
    ``torch.Generator`` attributes of ``model``'s submodules) seeded from ``seed``; on exit each is back in the
    state it had on entry (:func:`kept_rng`). What runs inside draws the same numbers every time and leaves the
    draws of what runs around it (training) as if it had never run."""
    with kept_rng(model):
        seed_everything(seed)
        if model is not None:
            for gen in module_generators(model):
                gen.manual_seed(seed)
        yield


_EVAL_STREAM = 0x65766C  # "evl": keeps evaluation's seeds apart from train.seed + rank


def evaluation_seed(seed: int, rank: int = 0, index: int = 0) -> int:
    """The seed of evaluation pass ``index`` on process ``rank`` of a run seeded ``seed``: a stream of its own
    (not one training draws from), the same for every epoch's pass; the voting rounds of a final test
    (``index`` 0, 1, ...) each have theirs."""
    return int(np.random.SeedSequence([seed, rank, index, _EVAL_STREAM]).generate_state(1)[0])


def module_generators(model: nn.Module) -> List[torch.Generator]:
    """``torch.Generator`` attributes held by submodules (e.g. a pretrainer's mask generator), in a fixed
    order, so their states travel with the checkpoint and a resumed run draws the same masks."""
    gens = []
    for module in model.modules():  # a DDP / compiled wrapper's submodules are the model's
        for name in sorted(vars(module)):
            if isinstance(vars(module)[name], torch.Generator):
                gens.append(vars(module)[name])
    return gens


def _numpy_state_to_safe(state: tuple) -> tuple:
    """numpy's legacy RNG state with its key array as a tensor: loadable with ``weights_only=True``."""
    name, keys, pos, has_gauss, cached = state
    return (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))


def _numpy_state_from_safe(state: tuple) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)


def get_rng_state(model: Optional[nn.Module] = None) -> Dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": _numpy_state_to_safe(np.random.get_state()),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if model is not None:
        state["generators"] = [g.get_state() for g in module_generators(model)]
    return state


def set_rng_state(state: Dict[str, Any], model: Optional[nn.Module] = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(_numpy_state_from_safe(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if model is not None:
        for gen, gen_state in zip(module_generators(model), state.get("generators", [])):
            gen.set_state(gen_state)
