"""Part segmentation (ShapeNetPart, synthetic_parts) as a task of the one Trainer: ``task: partseg``.

The model is the preset's part segmenter (``create_model(name, num_parts=..., num_categories=...)``);
the loss is cross-entropy over every point; evaluation takes, per point, the best part among the parts
of the shape's known category and reports class mIoU and instance mIoU as the ShapeNetPart papers
define them (:func:`~pointmap.engine.metrics.part_iou_sums`).
"""
from __future__ import annotations

import logging
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import ConfigError
from ..config import Config
from ..ops._precision import upcast
from .metrics import part_iou_sums, part_mask, part_seg_metrics, restricted_argmax
from .tasks import ClassificationTask, register_task

__all__ = ["SegmentationTask"]

logger = logging.getLogger(__name__)


@register_task("partseg")
class SegmentationTask(ClassificationTask):
    """Per-point part labels with the shape category known (one-hot input to the head).

    Splits are the classification task's, held out by shape category: ``clean`` keeps a stratified
    ``eval.val_fraction`` of ``data.train_split`` (``trainval`` for ShapeNetPart) apart to pick the
    checkpoint; ``peer`` trains on all of it and selects on test. The data set supplies ``classes``
    (categories in label order), ``seg_classes`` (category -> global part ids) and ``num_parts``.
    Voting (``views`` > 1) averages the logits of N scaled and translated views."""

    monitor, monitor_mode = "ins_miou", "max"
    model_fixed = ("num_classes", "num_parts", "num_categories")

    def __init__(self, cfg: Config, **kwargs):
        super().__init__(cfg, **kwargs)
        if cfg.train.probe:
            raise ConfigError(f"train.probe={cfg.train.probe!r} is for classification; part segmentation "
                             f"finetunes the encoder with its head")
        self.mask: Optional[torch.Tensor] = None

    def build_datasets(self) -> Dict[str, Dataset]:
        out = super().build_datasets()
        base = out["train"].base
        seg_classes, num_parts = getattr(base, "seg_classes", None), getattr(base, "num_parts", None)
        if not seg_classes or not num_parts:
            raise ConfigError(f"data set {self.cfg.data.name!r} has no part labels (seg_classes / num_parts); "
                             f"use shapenetpart or synthetic_parts")
        self.mask = part_mask(seg_classes, list(base.classes), int(num_parts))
        logger.info("part segmentation: %d categories, %d parts", *self.mask.shape)
        return out

    def build_model(self, datasets: Dict[str, Dataset]) -> nn.Module:
        from ..models import create_model

        if self.mask is not None:
            k, p = self.mask.shape
        elif datasets is None:
            space = self.label_space()
            k, p = space["num_categories"], space["num_parts"]
        else:
            self.build_datasets()
            k, p = self.mask.shape
        return create_model(self.cfg.model.name, num_parts=p, num_categories=k, **self.cfg.model.args)

    def train_step(self, model, batch):
        logits = model(batch["points"], batch["category"].reshape(-1))
        seg = batch["seg"]
        loss = F.cross_entropy(upcast(logits).flatten(0, 1), seg.flatten(), label_smoothing=self.label_smoothing)
        acc = (logits.argmax(-1) == seg).float().mean() * 100.0
        return loss, {"acc": acc.detach()}

    def logits(self, model: nn.Module, batch, views: int = 1) -> torch.Tensor:
        x, category = batch["points"], batch["category"].reshape(-1)
        if views <= 1:
            return upcast(model(x, category))
        aug = self.view_transform()
        return torch.stack([upcast(model(aug(x), category)) for _ in range(views)]).mean(0)

    def eval_step(self, model, batch, views=1):
        logits = self.logits(model, batch, views)
        seg, category = batch["seg"], batch["category"].reshape(-1)
        pred = restricted_argmax(logits, category, self.mask)
        loss = F.cross_entropy(logits.flatten(0, 1), seg.flatten(), reduction="sum")
        return {"loss_sum": loss, "points": torch.tensor(seg.numel()), "correct": (pred == seg).sum(),
                **part_iou_sums(pred, seg, category, self.mask)}

    def summarize(self, sums):
        out = part_seg_metrics(sums["iou_sum"], sums["shapes"])
        points = sums["points"].clamp_min(1)
        out["acc"] = (100.0 * sums["correct"] / points).item()  # point accuracy
        out["loss"] = (sums["loss_sum"] / points).item()
        out["count"] = int(sums["shapes"].sum())  # shapes scored
        return out
