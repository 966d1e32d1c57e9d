"""Checkpoints: written atomically, restored whole (model, optimizer, scheduler, scaler, epoch, RNG).

A pointmap checkpoint is a dict::

    {"model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ..., "epoch": next epoch to run,
     "global_step": int, "best": {...}, "history": [...], "rng": {...}, "config": {...}, "meta": {...}}

``model`` holds the unwrapped module's weights (no ``module.`` / ``_orig_mod.`` prefixes), so the file
loads the same with or without DDP or torch.compile.
"""
from __future__ import annotations

import json
import os
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

from ..atomic import atomic_write
from ..errors import UserFileNotFoundError
from ..models.checkpoint import CheckpointError, read_checkpoint

__all__ = ["atomic_write", "atomic_save", "atomic_write_json", "load_file", "get_rng_state", "set_rng_state", "module_generators", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module under DDP (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_write`, fsynced."""
    atomic_write(path, lambda f: torch.save(obj, f), durable=True)


def atomic_write_json(data: Any, path: str) -> None:
    atomic_write(path, lambda f: json.dump(data, f, indent=2), binary=False)


def load_file(path: str) -> Dict[str, Any]:
    """Read a checkpoint written by :func:`atomic_save` (or any torch.save'd dict), on CPU."""
    if not os.path.isfile(path):
        raise UserFileNotFoundError(f"checkpoint not found: {path}")
    obj = read_checkpoint(path)  # a file torch.load cannot parse is a one-line CheckpointError (a ValueError)
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict, got {type(obj).__name__}")
    return obj


def module_generators(model: nn.Module) -> List[torch.Generator]:
    """``torch.Generator`` attributes held by submodules (e.g. a pretrainer's mask generator), in a fixed
    order, so their states travel with the checkpoint and a resumed run draws the same masks."""
    gens = []
    for _, module in unwrap_model(model).named_modules():
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
