"""Metrics built from sums, so per-process results add up exactly under DDP (sum, then divide)."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Sequence

import torch

from ..errors import UserError

__all__ = ["confusion_matrix", "classification_metrics", "mean_std", "best_round", "summarize_seeds", "part_mask",
           "restricted_argmax", "part_iou_sums", "part_seg_metrics", "protocol_note"]


def protocol_note(protocol: str, chosen: str, metric: str) -> str:
    """What every result says of its protocol: how ``chosen`` (the checkpoint, the SVM's C) was picked on ``metric``."""
    return {"clean": f"{chosen} chosen on {metric} of a validation split held out of train",
            "peer": f"{chosen} chosen on test {metric} (the peers' habit)"}[protocol]


def confusion_matrix(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """pred, label: (B,) long -> (num_classes, num_classes) long, rows = true class, columns = prediction."""
    idx = label.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_metrics(confusion: torch.Tensor) -> Dict[str, float]:
    """Overall accuracy ``acc`` and mean per-class accuracy ``macc`` (classes present only), in percent."""
    confusion = confusion.double()
    total = confusion.sum().item()
    correct = confusion.diagonal().sum().item()
    per_class = confusion.sum(1)
    present = per_class > 0
    macc = (confusion.diagonal()[present] / per_class[present]).mean().item() if present.any() else 0.0
    return {"acc": 100.0 * correct / max(total, 1.0), "macc": 100.0 * macc}


def mean_std(values: Sequence[float], ddof: int = 1) -> Dict[str, float]:
    """Mean and standard deviation with ``ddof`` (1: the sample std, pointmap's; 0: numpy's default, which
    the peers report); 0 for a single value."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - ddof)) if n > ddof and n > 1 else 0.0
    return {"mean": mean, "std": std}


def best_round(rounds: List[Dict[str, Any]], metric: str, mode: str = "max") -> Dict[str, Any]:
    """The best of several voting passes over one test set by ``metric`` (the peers' ``--test``: the maximum
    of 299 rounds, a selection on the test set), with how many there were, which one won and the mean and
    std (ddof 0) of ``metric`` over them; a single pass as it is."""
    if len(rounds) == 1:
        return dict(rounds[0])
    values = [float(r[metric]) for r in rounds]
    i = values.index(max(values) if mode == "max" else min(values))
    spread = mean_std(values, ddof=0)
    return {**rounds[i], "rounds": len(rounds), "best_round": i + 1, f"{metric}_rounds_mean": spread["mean"],
            f"{metric}_rounds_std": spread["std"]}


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Dict[str, Any]:
    """Paired differences a[i] - b[i] (the same seed, fold, ... in both): their mean, sample std, count,
    the two-sided ``confidence`` interval of the mean from Student's t (None for fewer than two pairs),
    and how many pairs are positive / negative."""
    from scipy import stats

    if len(a) != len(b) or not a:
        raise ValueError(f"paired_difference needs two equally long, non-empty lists; got {len(a)} and {len(b)}")
    d = [float(x) - float(y) for x, y in zip(a, b)]
    ms = mean_std(d)
    n = len(d)
    ci = None
    if n > 1:
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * ms["std"] / math.sqrt(n)
        ci = [ms["mean"] - half, ms["mean"] + half]
    return {**ms, "n": n, "ci": ci, "confidence": confidence, "positive": sum(x > 0 for x in d),
            "negative": sum(x < 0 for x in d), "values": d}


def summarize_seeds(results: List[Dict[str, float]], ddof: int = 1) -> Dict[str, Dict[str, float]]:
    """Per-seed (per-fold) flat metric dicts -> {metric: {mean, std, ddof, values}} over the metrics all
    report; ``ddof`` as :func:`mean_std`."""
    keys = [k for k in results[0] if all(isinstance(r.get(k), (int, float)) for r in results)]
    out = {}
    for k in keys:
        values = [float(r[k]) for r in results]
        out[k] = {**mean_std(values, ddof), "ddof": ddof, "values": values}
    return out


# ----------------------------------------------------------------------------- part segmentation

def part_mask(seg_classes: Mapping[str, Sequence[int]], categories: Sequence[str], num_parts: int) -> torch.Tensor:
    """(len(categories), num_parts) bool: which global part ids belong to each category, in label order."""
    mask = torch.zeros(len(categories), num_parts, dtype=torch.bool)
    for i, cat in enumerate(categories):
        if cat not in seg_classes:
            raise UserError(f"category {cat!r} has no part table; known: {', '.join(seg_classes)}")
        mask[i, list(seg_classes[cat])] = True
    return mask


def restricted_argmax(logits: torch.Tensor, category: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """logits (B, N, P), category (B,) long, mask (K, P) bool -> (B, N) long: the best part among the
    parts of each shape's known category (the evaluation of every ShapeNetPart paper)."""
    allowed = mask.to(logits.device)[category.reshape(-1)].unsqueeze(1)
    return logits.masked_fill(~allowed, float("-inf")).argmax(-1)


def part_iou_sums(pred: torch.Tensor, seg: torch.Tensor, category: torch.Tensor,
                  mask: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Per-category sums of shape IoUs, so batches and processes add up.

    pred, seg: (B, N) long part ids; category: (B,) long; mask: (K, P) bool from :func:`part_mask`.
    A shape's IoU is the mean, over the parts of its category, of |pred ∩ seg| / |pred ∪ seg|, where a
    part absent from both counts 1. Returns ``iou_sum`` (K,) float64 and ``shapes`` (K,) long.
    """
    k, p = mask.shape
    mask = mask.to(pred.device)
    category = category.reshape(-1).long()
    pred_1h = torch.nn.functional.one_hot(pred.long(), p).bool()
    seg_1h = torch.nn.functional.one_hot(seg.long(), p).bool()
    inter = (pred_1h & seg_1h).sum(1).double()  # (B, P)
    union = (pred_1h | seg_1h).sum(1).double()
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    parts = mask[category]  # (B, P)
    shape_iou = (iou * parts).sum(1) / parts.sum(1).clamp_min(1)
    iou_sum = torch.zeros(k, dtype=torch.float64, device=pred.device).index_add_(0, category, shape_iou)
    return {"iou_sum": iou_sum, "shapes": torch.bincount(category, minlength=k)}


def part_seg_metrics(iou_sum: torch.Tensor, shapes: torch.Tensor) -> Dict[str, float]:
    """Class mIoU ``cls_miou`` (mean over the categories present of their mean shape IoU) and instance
    mIoU ``ins_miou`` (mean over all shapes), in percent."""
    iou_sum, shapes = iou_sum.double(), shapes.double()
    present = shapes > 0
    cls = (iou_sum[present] / shapes[present]).mean().item() if present.any() else 0.0
    ins = (iou_sum.sum() / shapes.sum()).item() if present.any() else 0.0
    return {"cls_miou": 100.0 * cls, "ins_miou": 100.0 * ins}
