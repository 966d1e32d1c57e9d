"""Metrics built from sums, so per-process results add up exactly under DDP (sum, then divide)."""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

import torch

__all__ = ["confusion_matrix", "classification_metrics", "mean_std", "summarize_seeds"]


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


def mean_std(values: Sequence[float]) -> Dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std}


def summarize_seeds(results: List[Dict[str, float]]) -> Dict[str, Dict[str, float]]:
    """Per-seed flat metric dicts -> {metric: {mean, std, values}} over the metrics all seeds report."""
    keys = [k for k in results[0] if all(isinstance(r.get(k), (int, float)) for r in results)]
    out = {}
    for k in keys:
        values = [float(r[k]) for r in results]
        out[k] = {**mean_std(values), "values": values}
    return out
