"""AdamW with one of two weight-decay rules; timm's cosine schedule with warmup, stepped per optimizer
step (pointmap) or per epoch (the peers).

``optim.weight_decay_rule``:

- ``pointmap``: no decay on 1-D parameters (biases, norms, Mamba's ``D``), names ending in ``.bias`` and
  what the model or its parts list in ``no_weight_decay()`` (Mamba's ``A_log`` / ``A_b_log``, cls / mask
  tokens and their positions, PointMamba's per-order scale and shift): :func:`pointmap.models.no_weight_decay`.
- ``peer``: the rule of Point-MAE, PointMamba and Mamba3D (their ``tools/builder.py``): no decay on a
  tensor that is 1-D *in the peer's own layout*, whose name ends in ``.bias`` or whose name says ``token``;
  everything else decayed, Mamba's ``A_log`` and the cls token's position included. Where pointmap stores
  a tensor in another shape than the peer (LNP's affine vectors, PointMamba's per-order vectors), the
  module says the peer's dimensionality in ``peer_param_ndim()``. Groups come in the peers' order
  (undecayed first).

``optim.lr_base_size`` scales ``lr`` linearly by the total batch (:func:`scaled_lr`), as DeiT's and the MAP 2D
release's ``main.py`` do.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn as nn
from timm.scheduler import CosineLRScheduler

from ..config import OptimConfig
from ..errors import ConfigError
from ..models import no_weight_decay

__all__ = ["param_groups", "peer_param_ndim", "scaled_lr", "build_optimizer", "build_scheduler", "LRSchedule",
           "lr_per_epoch"]


def peer_param_ndim(model: nn.Module) -> Dict[str, int]:
    """Parameter name -> its number of dimensions in the peers' layout, for the tensors pointmap stores
    in another shape (each module lists its own in ``peer_param_ndim()``)."""
    out: Dict[str, int] = {}
    for prefix, module in model.named_modules():
        fn = getattr(module, "peer_param_ndim", None)
        if callable(fn):
            out.update((f"{prefix}.{n}" if prefix else n, d) for n, d in fn().items())
    return out


def param_groups(model: nn.Module, weight_decay: float, rule: str = "pointmap") -> List[Dict]:
    """Two groups of the trainable parameters by ``rule`` (see the module docstring): pointmap's
    ``[decayed, undecayed]`` or the peers' ``[undecayed, decayed]``; each group also says its tensors'
    ``names``."""
    if rule == "pointmap":
        skip = no_weight_decay(model)

        def undecayed(name: str, p: torch.Tensor) -> bool:
            return name.endswith(".bias") or name in skip
    elif rule == "peer":
        ndim = peer_param_ndim(model)

        def undecayed(name: str, p: torch.Tensor) -> bool:
            return ndim.get(name, p.ndim) <= 1 or name.endswith(".bias") or "token" in name.rsplit(".", 1)[-1]
    else:
        raise ConfigError(f"optim.weight_decay_rule must be 'pointmap' or 'peer', got {rule!r}")
    decay: Dict = {"params": [], "names": [], "weight_decay": weight_decay}
    no_decay: Dict = {"params": [], "names": [], "weight_decay": 0.0}
    for name, p in model.named_parameters():
        if p.requires_grad:
            group = no_decay if undecayed(name, p) else decay
            group["params"].append(p)
            group["names"].append(name)
    return [decay, no_decay] if rule == "pointmap" else [no_decay, decay]


def scaled_lr(cfg: OptimConfig, batch_size: Optional[int]) -> float:
    """The lr a run trains at: ``cfg.lr``, or with ``cfg.lr_base_size`` set ``cfg.lr * batch_size / lr_base_size``
    (``batch_size``: the total over all processes, images per optimizer step)."""
    if cfg.lr_base_size is None:
        return cfg.lr
    if batch_size is None:
        raise ValueError("optim.lr_base_size scales the lr by the total batch size: pass batch_size")
    return cfg.lr * batch_size / cfg.lr_base_size


def build_optimizer(model: nn.Module, cfg: OptimConfig, batch_size: Optional[int] = None) -> torch.optim.Optimizer:
    """AdamW at :func:`scaled_lr` (``batch_size``: the total batch, needed when ``cfg.lr_base_size`` is set), fused
    where torch has a fused kernel for the parameters' device (CUDA; CPU from torch 2.4): one kernel per step, and it
    can skip a step on the device (``found_inf``), so the trainer never waits
    to decide whether a loss was finite. Elsewhere plain AdamW."""
    params = list(model.parameters())
    groups = param_groups(model, cfg.weight_decay, cfg.weight_decay_rule)
    kwargs = dict(lr=scaled_lr(cfg, batch_size), betas=tuple(cfg.betas), eps=cfg.eps)
    if params and all(p.is_floating_point() for p in params) and len({p.device for p in params}) == 1:
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except RuntimeError:  # no fused kernel for this device in this torch
            pass
    return torch.optim.AdamW(groups, **kwargs)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int) -> CosineLRScheduler:
    """Cosine from ``lr`` to ``min_lr`` over ``epochs``, the first ``warmup_epochs`` replaced by a linear
    ramp from ``warmup_lr`` (timm's ``warmup_prefix=False``, as the peers' recipes run it). In steps
    (``schedule_step: step``: updated every step, so short runs warm up smoothly too) or in epochs
    (``schedule_step: epoch``)."""
    if cfg.schedule_step not in ("step", "epoch"):
        raise ConfigError(f"optim.schedule_step must be 'step' or 'epoch', got {cfg.schedule_step!r}")
    steps = max(1, steps_per_epoch) if cfg.schedule_step == "step" else 1
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, cfg.epochs * steps),
        lr_min=cfg.min_lr,
        warmup_t=cfg.warmup_epochs * steps,
        warmup_lr_init=cfg.warmup_lr,
        warmup_prefix=False,
        cycle_limit=1,
        t_in_epochs=cfg.schedule_step == "epoch",
    )


class LRSchedule:
    """When the learning rate moves, the one place the loop asks: :meth:`before_step` before every
    optimizer step (``schedule_step: step``, pointmap's) and :meth:`after_epoch` after every epoch
    (``schedule_step: epoch``: ``scheduler.step(e)`` once epoch ``e`` (0-based) has trained, as the peers'
    runners call it, so epoch ``e`` trains at the cosine's value for ``e - 1`` and epochs 0 and 1 both at
    ``warmup_lr``). ``state_dict`` is the scheduler's; :meth:`load_state_dict` restores nothing (see there)."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int):
        if cfg.extra_epochs < 0:
            raise ConfigError(f"optim.extra_epochs must be >= 0, got {cfg.extra_epochs}")
        self.per_step = cfg.schedule_step == "step"
        self.steps = max(1, steps_per_epoch)
        self.scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)

    def before_step(self, global_step: int) -> None:
        if self.per_step:
            self.scheduler.step_update(global_step)

    def after_epoch(self, epoch: int) -> None:
        if not self.per_step:
            self.scheduler.step(epoch)

    def epoch_lr(self, epoch: int, last: bool = False) -> float:
        """Group 0's lr at the first step of ``epoch`` (0-based; ``last``: at its last step), from the schedule
        alone: the same in a run resumed mid-epoch as in an uninterrupted one."""
        t = (epoch + last) * self.steps - last if self.per_step else max(epoch - 1, 0)
        return float(self.scheduler._get_lr(t)[0])

    def state_dict(self) -> Dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: Dict) -> None:
        """Nothing is restored: the lr is a function of the config and the step alone, and a resumed run's config
        is the saved one's but for a longer schedule (or what ``--force`` changed), which is the one to follow
        (loading the saved state would keep the old length: the added epochs would all train at ``min_lr``)."""


def lr_per_epoch(optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int = 1) -> List[float]:
    """The lr of group 0 at the first step of each of the loop's ``cfg.loop_epochs`` epochs, driven exactly
    as the Trainer drives it (the optimizer's lr is changed: pass a throwaway one). With per-step
    scheduling the first step of epoch e sits at the fraction e / epochs of the cosine whatever the number
    of steps per epoch, so ``steps_per_epoch`` only matters to rounding."""
    schedule = LRSchedule(optimizer, cfg, steps_per_epoch)
    out = []
    for epoch in range(cfg.loop_epochs):
        schedule.before_step(epoch * max(1, steps_per_epoch))
        out.append(float(optimizer.param_groups[0]["lr"]))
        schedule.after_epoch(epoch)
    return out
