"""Dataset plumbing shared by the tasks: the clean protocol's stratified hold-out, per-split transforms."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset

from ..errors import ConfigError

__all__ = ["dataset_labels", "stratified_split", "SplitView", "to_device"]


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """(len,) long labels: the dataset's ``labels`` attribute when it has one, else read item by item."""
    labels = getattr(dataset, "labels", None)
    if labels is not None and len(labels) == len(dataset):
        return torch.as_tensor(labels).reshape(len(dataset)).long()
    return torch.stack([torch.as_tensor(dataset[i]["label"]).reshape(()) for i in range(len(dataset))]).long()


def _per_class(labels: torch.Tensor, seed: int, count) -> Tuple[List[int], List[int]]:
    """Each class's indices in a random order (generator seeded by ``seed``), cut after ``count(n)`` of its
    n: sorted (rest, first parts)."""
    gen = torch.Generator().manual_seed(seed)
    rest, first = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)].tolist()
        k = count(len(idx))
        first += idx[:k]
        rest += idx[k:]
    return sorted(rest), sorted(first)


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """Hold out ``fraction`` of every class (rounded, at least one sample of classes with two or more),
    chosen with a generator seeded by ``seed``. Returns sorted (keep, held_out) indices."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"eval.val_fraction must be in (0, 1) for the clean protocol, got {fraction}")
    return _per_class(labels, seed, lambda n: min(n - 1, max(1, round(fraction * n))) if n > 1 else 0)


def stratified_subset(labels: torch.Tensor, fraction: float, seed: int) -> List[int]:
    """``fraction`` of every class (rounded, at least one sample of each), chosen with a generator seeded
    by ``seed``; sorted indices."""
    return _per_class(labels, seed, lambda n: min(n, max(1, round(fraction * n))))[1]


class SplitView(Dataset):
    """A view of ``base`` restricted to ``indices`` (all when None) with its own ``transform`` applied to
    each sample dict; ``classes`` / ``num_classes`` / ``labels`` follow the base. One base dataset in
    memory can so serve as augmented train split and plain validation split at once."""

    def __init__(self, base: Dataset, indices: Optional[Sequence[int]] = None,
                 transform: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None):
        self.base = base
        self.indices = list(range(len(base))) if indices is None else list(indices)
        self.transform = transform
        self.classes = getattr(base, "classes", None)
        self.num_classes = getattr(base, "num_classes", None)

    @property
    def labels(self) -> torch.Tensor:
        return dataset_labels(self.base)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        sample = self.base[self.indices[i]]
        return self.transform(dict(sample)) if self.transform is not None else sample


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
