"""Checkpoints: written atomically, restored whole (model, optimizer, scheduler, scaler, run state, RNG).

A pointmap training checkpoint is a dict::

    {"model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ..., "model_ema": (train.ema_decay) ...,
     "epoch": the epoch to continue (0-based), "step_in_epoch": its steps already done (0: its start),
     "global_step": int, "best": {"epoch", "value", "metrics"}, "best_saved": the epoch ckpt-best.pth holds,
     "history": [one record per epoch], "selection": {"split", "metric", "mode"},
     "epoch_sums": the epoch's running sums (mid-epoch) or None, "rng": [one RNG state per process],
     "rng_after_iter": whether those states follow the epoch's loader draw, "config": {...},
     "meta": {"task", "model", "protocol", "pointmap_version", "world_size", "backends", ...}}

``model`` holds the unwrapped module's weights (no ``module.`` / ``_orig_mod.`` prefixes), so the file
loads the same with or without DDP or torch.compile. :class:`Checkpointer` writes and restores it;
``meta.backends`` says which backend ran each op (:func:`pointmap.ops.backends_used`).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from ..atomic import atomic_write
from ..errors import UserError, UserFileNotFoundError
from ..models.checkpoint import CheckpointError, read_checkpoint
from ..ops import backends_used, kernel_checks
from . import distributed as du
from .rng import get_rng_state, module_generators, set_rng_state
from .state import TrainState

__all__ = ["atomic_write", "atomic_save", "atomic_write_json", "load_file", "get_rng_state", "set_rng_state",
           "module_generators", "unwrap_model", "Checkpointer", "load_best_weights", "load_weights", "backend_record"]

logger = logging.getLogger(__name__)


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


def backend_record() -> Dict[str, Any]:
    """Which backend ran each op in this run (and, where one was checked, what the kernel check said):
    what meta.json and a checkpoint's ``meta`` keep, so two machines' runs can be told apart."""
    checks = kernel_checks()
    return {"backends": backends_used(), **({"kernel_checks": checks} if checks else {})}


class Checkpointer:
    """Writes the checkpoints of one training run and restores the run from its ``ckpt-last.pth``.

    ``run``: the :class:`~pointmap.engine.RunDir` (its files, rank 0 writing); ``module``: the model itself
    (not a DDP or compiled wrapper); ``config`` / ``meta``: what every file carries. Every process calls
    :meth:`save` (their RNG states are gathered into the file); :meth:`resume` on every process."""

    def __init__(self, run: Any, module: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 scaler: torch.amp.GradScaler, *, config: Dict[str, Any], meta: Dict[str, Any], rank: int = 0,
                 world_size: int = 1, ema: Any = None):
        self.ema = ema  # a WeightEma (train.ema_decay) or None
        self.run, self.module, self.optimizer, self.scheduler, self.scaler = run, module, optimizer, scheduler, scaler
        self.config, self.meta, self.rank, self.world_size = config, meta, rank, world_size

    def save(self, state: TrainState, epoch: int, step: int = 0, last: bool = True, best: bool = False,
             rng_after_iter: bool = False) -> None:
        """The run at step ``step`` of epoch ``epoch`` to ckpt-last.pth (``last``) and ckpt-best.pth (``best``);
        ``rng_after_iter``: saved inside the epoch, after its loader iterator drew its seed."""
        rngs = [get_rng_state(self.module)]
        if self.world_size > 1:
            rngs = [None] * self.world_size
            dist.all_gather_object(rngs, get_rng_state(self.module))
        if best:
            state.best_saved = state.best["epoch"]
        ckpt = {"model": unwrap_model(self.module).state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                **state.state_dict(epoch, step), "rng_after_iter": rng_after_iter, "rng": rngs, "config": self.config,
                "meta": {**self.meta, **backend_record()}}
        if self.ema is not None:
            ckpt["model_ema"] = self.ema.state_dict()
        self.run.save_checkpoint(ckpt, last=last, best=best)
        if last:
            state.last_saved = (epoch, step)

    def resume(self, state: TrainState, ckpt: Optional[Dict[str, Any]] = None) -> None:
        """Weights, optimizer, scheduler, scaler, ``state`` and this process's RNG from ckpt-last.pth (``ckpt``:
        that file, read already). A process the checkpoint kept no RNG state of (it was trained with fewer
        processes) keeps its own seed's: no process takes another's state."""
        ckpt = load_file(self.run.ckpt_last) if ckpt is None else ckpt
        self.module.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            if "model_ema" not in ckpt:
                raise UserError(f"{self.run.ckpt_last} holds no model_ema: the run was started without "
                                f"train.ema_decay; resume it with the config it started with")
            self.ema.load_state_dict(ckpt["model_ema"])
        state.load_state_dict(ckpt)
        rngs = ckpt["rng"]
        rng = rngs[self.rank] if self.rank < len(rngs) else None
        if rng is None:
            logger.warning("rank %d: the checkpoint holds the RNG states of %d processes; this one keeps its seed's",
                           self.rank, len(rngs))
        else:
            set_rng_state(rng, self.module)
        if ckpt.get("rng_after_iter") and rng is not None:
            state.rng_after_iter = rng  # the epoch's loader iterator draws once more before it applies
        logger.info("resumed %s at epoch %d step %d (global step %d)", self.run.ckpt_last, state.epoch + 1,
                    state.step_in_epoch, state.global_step)


def load_best_weights(module: nn.Module, path: str) -> None:
    """Rank 0 reads the weights of ``path`` (ckpt-best.pth) and hands them to every rank (no shared disk needed)."""
    weights = [load_file(path)["model"] if du.is_main_process() else None]
    if du.is_distributed():
        dist.broadcast_object_list(weights, src=0)
    module.load_state_dict(weights[0])


def load_weights(module: nn.Module, spec: str) -> Dict[str, Any]:
    """Every tensor of ``module`` (the head too) from ``spec``: a training checkpoint, a folder written by
    ``tools/export.py`` or a published entry; returns the file as read (its ``epoch``: the epochs behind them)."""
    from ..models import checkpoint_state, load_state, read_checkpoint, resolve_pretrained

    card, path = resolve_pretrained(spec)
    raw = read_checkpoint(path)
    load_state(module, checkpoint_state(raw, path), path, card.format if card else "auto", whole=True)
    return raw
