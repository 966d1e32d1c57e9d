"""Data set registry and the base class every point data set derives from.

``build_dataset(name, root, split, **options)`` looks the name up and calls the registered builder;
``transform=`` may be a callable or a list of transform config entries (see :mod:`.transforms`).
"""
import logging
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError, accepted_kwargs, check_kwargs
from ..registry import Registry

logger = logging.getLogger(__name__)

DATASETS = Registry("data set")


def register_dataset(name: str, forwards: Sequence[Callable] = (),
                     label_space: Optional[Callable[..., Dict[str, int]]] = None, on_disk: Optional[bool] = None):
    """Decorator: register a builder ``fn(root, split, **options) -> Dataset`` under ``name``; ``forwards``:
    where its ``**options`` go (the data set class), which decides the names ``data.options`` may hold;
    ``label_space(**options)``: the label counts of a data set on disk (``num_classes``, and for part
    segmentation ``num_categories`` / ``num_parts``), so a model can be built without reading its files;
    ``on_disk``: its files live under ``data.root`` (default: when it declares a label space)."""
    def add(fn):
        fn.forwards_kwargs = tuple(forwards)
        fn.label_space = label_space
        fn.on_disk = label_space is not None if on_disk is None else on_disk
        return DATASETS.register(name, fn)

    return add


def check_data_root(name: str, root: Any) -> None:
    """A one-line error when data set ``name`` reads files and ``root`` (``data.root``) is no folder: checked
    before a run folder is made."""
    from .io import missing

    if getattr(DATASETS.get(name), "on_disk", False) and (root is None or not os.path.isdir(str(root))):
        raise missing(root if root is not None else "<data.root not set>", "data root")


def label_space(name: str, options: Mapping[str, Any]) -> Optional[Dict[str, int]]:
    """What the data set ``name`` declares of its labels for ``options`` (None: it declares nothing; build
    it and ask it)."""
    fn = getattr(DATASETS.get(name), "label_space", None)
    return dict(fn(**options)) if fn is not None else None


def check_dataset_options(name: str, options: Mapping[str, Any], section: str = "data.options") -> None:
    """A :class:`~pointmap.errors.ConfigError` naming ``section``, the data set and the first option its
    builder does not take (``root`` and ``split`` come from their own config keys)."""
    fn = DATASETS.get(name)
    accepted = accepted_kwargs(fn, *getattr(fn, "forwards_kwargs", ()))
    check_kwargs(section, f"data set {name!r}", options, accepted,
                 fixed={"root": "data.root", "split": "data.train_split / data.test_split"})


def list_datasets() -> List[str]:
    return DATASETS.names()


def build_dataset(name: str, root=None, split: str = "train", **options) -> Dataset:
    """Build a registered data set, e.g. ``build_dataset("scanobjectnn", "data", "test", variant="hardest")``.

    ``root`` is the ``data/`` folder (or the data set's own folder); generated data sets ignore it.
    """
    builder = DATASETS.get(name)
    transform = options.pop("transform", None)
    if isinstance(transform, (list, tuple)):
        from .transforms import build_transforms
        transform = build_transforms(transform)
    ds = builder(root, split, transform=transform, **options)
    logger.info("built data set %s/%s: %d items", name, split, len(ds))
    return ds


def _tensor(x, dtype):
    return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype)


class PointDataset(Dataset):
    """Base class: subclasses implement ``__len__`` and ``load(index)`` returning numpy arrays under
    the keys ``points`` (N, 3), ``label`` (int) and optionally ``normals`` (N, 3), ``seg`` (N,),
    ``category`` (int). Items come out as tensors (float32 / long), then through ``transform``."""

    classes: List[str] = []

    def __init__(self, transform: Optional[Callable] = None):
        self.transform = transform

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def load(self, index: int) -> dict:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {len(self)}")
        raw = self.load(int(index) % len(self))
        item = {"points": _tensor(raw["points"], torch.float32), "label": torch.tensor(int(raw["label"]))}
        if raw.get("normals") is not None:
            item["normals"] = _tensor(raw["normals"], torch.float32)
        if raw.get("seg") is not None:
            item["seg"] = _tensor(raw["seg"], torch.long)
        if raw.get("category") is not None:
            item["category"] = torch.tensor(int(raw["category"]))
        if self.transform is not None:
            item = self.transform(item)
        return item


def split_points(arr: np.ndarray, use_normals: bool, source: str) -> dict:
    """``{"points": arr[:, :3], "normals": arr[:, 3:6] or None}``; asking for normals a source does not
    have is an error naming it."""
    normals = None
    if use_normals:
        if arr.shape[-1] < 6:
            raise UserError(f"{source}: normals asked for but the points have shape {arr.shape} (no normal columns)")
        normals = arr[..., 3:6]
    return {"points": arr[..., :3], "normals": normals}
