"""Experiment tracking with Weights & Biases, beside TensorBoard (which every run writes): a hook that a config
switches on, ``hooks: [{name: wandb, project: pointmap}]`` (or ``python tools/pretrain.py ... 'hooks=[{name:
wandb}]'``). It needs the ``wandb`` extra (``pip install "pointmap[wandb]"``); ``mode: offline`` (or
``WANDB_MODE=offline``) needs no account and writes under the run folder (``wandb sync`` uploads it later).

What it records: the merged config; every log (``train.log_every`` steps: the mean loss, task metrics, lr) by
optimizer step; each epoch's train / val / test metrics; the final results as the run's summary. A resumed
run continues the same W&B run (its id is derived from the run folder).
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, Optional, Sequence

from ..config import config_to_dict
from ..errors import UserError
from .hooks import Hook, register_hook
from .logging import flatten

__all__ = ["WandbHook"]

MODES = ("online", "offline", "disabled")


@register_hook("wandb")
class WandbHook(Hook):
    """See the module docstring. ``mode``: online, offline or disabled (None: ``WANDB_MODE``, else online)."""

    main_process_only = True

    def __init__(self, project: str = "pointmap", entity: Optional[str] = None, mode: Optional[str] = None,
                 tags: Sequence[str] = (), notes: Optional[str] = None):
        if mode is not None and mode not in MODES:
            raise UserError(f"hook wandb: mode must be one of {', '.join(MODES)}; got {mode!r}")
        try:
            import wandb  # noqa: F401
        except ImportError as e:
            raise UserError(f"hook wandb needs the wandb package ({e}): pip install \"pointmap[wandb]\"") from e
        self.project, self.entity, self.mode, self.tags, self.notes = project, entity, mode, list(tags), notes
        self.run = None

    def before_train(self, trainer) -> None:
        import wandb

        cfg, folder = trainer.cfg, os.path.abspath(trainer.work_dir)
        self.run = wandb.init(project=self.project, entity=self.entity, mode=self.mode, dir=folder,
                              name=f"{cfg.name}/{cfg.exp_name}", id=hashlib.sha1(folder.encode()).hexdigest()[:16],
                              resume="allow", config=config_to_dict(cfg), tags=self.tags, notes=self.notes,
                              reinit="finish_previous")

    def after_log(self, trainer, logs: Dict[str, float]) -> None:
        self.run.log({f"train/{k}": v for k, v in logs.items()}, step=trainer.state.global_step)

    def after_epoch(self, trainer, entry: Dict[str, Any]) -> None:
        values = {f"epoch/{k}_{m}": v for k in ("train", "val", "test") for m, v in entry.get(k, {}).items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.run.log({**values, "epoch": trainer.state.epoch + 1}, step=trainer.state.global_step)

    def after_train(self, trainer, results: Dict[str, Any]) -> None:
        self.run.summary.update({k: v for k, v in flatten({key: results.get(key) for key in
                                                            ("test", "test_vote", "best", "epochs_done")}).items()
                                 if isinstance(v, (int, float)) and not isinstance(v, bool)})
        self.run.finish()
        self.run = None
