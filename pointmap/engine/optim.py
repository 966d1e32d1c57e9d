"""AdamW with no weight decay on biases, norms and tokens; timm's cosine schedule with warmup."""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn as nn
from timm.scheduler import CosineLRScheduler

from ..config import OptimConfig
from ..models import no_weight_decay

__all__ = ["param_groups", "build_optimizer", "build_scheduler"]


def param_groups(model: nn.Module, weight_decay: float) -> List[Dict]:
    """Two groups: decayed matrices/kernels, and undecayed 1-D parameters (biases, norm weights, A_log, D)
    plus whatever the model or its parts name in ``no_weight_decay()`` (cls / mask tokens, Mamba's A_log):
    :func:`pointmap.models.no_weight_decay`."""
    skip = no_weight_decay(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith(".bias") or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW, fused where torch has a fused kernel for the parameters' device (CUDA; CPU from torch 2.4):
    one kernel per step, and it can skip a step on the device (``found_inf``), so the trainer never waits
    to decide whether a loss was finite. Elsewhere plain AdamW."""
    params = list(model.parameters())
    groups = param_groups(model, cfg.weight_decay)
    kwargs = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    if params and all(p.is_floating_point() for p in params) and len({p.device for p in params}) == 1:
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except RuntimeError:  # no fused kernel for this device in this torch
            pass
    return torch.optim.AdamW(groups, **kwargs)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int) -> CosineLRScheduler:
    """Cosine from ``lr`` to ``min_lr`` over all epochs, the first ``warmup_epochs`` replaced by a linear
    ramp from ``warmup_lr`` (timm's ``warmup_prefix=False``, as the peers' recipes run it). Updated every
    step (``scheduler.step_update(global_step)``) so short runs warm up smoothly too."""
    steps = max(1, steps_per_epoch)
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, cfg.epochs * steps),
        lr_min=cfg.min_lr,
        warmup_t=cfg.warmup_epochs * steps,
        warmup_lr_init=cfg.warmup_lr,
        warmup_prefix=False,
        cycle_limit=1,
        t_in_epochs=False,
    )
