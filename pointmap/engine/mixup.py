"""Mixup / CutMix on an image batch (``task_args.mixup``): timm's ``Mixup``, as DeiT's ``main.py`` (and the MAP 2D
release's, which keeps DeiT's defaults) builds it, e.g.
``{mixup_alpha: 0.8, cutmix_alpha: 1.0, prob: 1.0, switch_prob: 0.5, mode: batch}``. Classification trains on
the mixed, smoothed soft targets with timm's ``SoftTargetCrossEntropy``; pretraining mixes the images alone.

timm draws its mixing parameters from numpy's global generator, which pointmap seeds and checkpoints.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from ..errors import ConfigError, accepted_kwargs, check_kwargs

__all__ = ["build_mixup", "check_mixup"]


def check_mixup(spec: Optional[Dict[str, Any]], batch_size: int) -> None:
    """A ConfigError naming ``task_args.mixup`` for a key timm's Mixup does not take (``num_classes`` and
    ``label_smoothing`` come from the task), or an odd batch (each sample is mixed with its mirror)."""
    if not spec:
        return
    from timm.data import Mixup

    fixed = {"num_classes": "the data set", "label_smoothing": "task_args.label_smoothing"}
    check_kwargs("task_args.mixup", "timm's Mixup", spec, accepted_kwargs(Mixup), fixed=fixed)
    if batch_size % 2:
        raise ConfigError(f"task_args.mixup mixes each sample with its mirror in the batch: data.batch_size "
                          f"{batch_size} must be even")


def build_mixup(spec: Optional[Dict[str, Any]], num_classes: int, label_smoothing: float = 0.0):
    """timm's ``Mixup`` from ``spec`` (None or empty: no mixing, None returned)."""
    if not spec:
        return None
    from timm.data import Mixup

    return Mixup(**spec, num_classes=num_classes, label_smoothing=label_smoothing)
