"""Synthetic data sets, generated from a seed (no download): the embedded default of pointmap.

- ``synthetic``: 15 labelled classes (8 primitives, 7 compositions), balanced (label = index mod 15).
- ``synthetic_pretrain``: unlabelled-style pretraining set, ShapeNet-55-like: classes drawn at random
  per item, its own random stream (no overlap with ``synthetic``); labels are kept for monitoring only.
- ``synthetic_parts``: 7 composed categories with per-point part labels, like ShapeNetPart.
- ``synthetic_fewshot``: way/shot/fold folds drawn from ``synthetic``'s classes.

Item ``i`` of a split is generated from ``numpy.random.default_rng([seed, stream, split, i])``, so it is
the same in every process and worker; train, val and test are separate draws. Generated items are kept
in memory per data set object.
"""
import logging
from typing import Dict, Optional, Sequence

import numpy as np

from ..errors import UserError
from .fewshot import FewShotSubset, draw_fold, fold_classes, fold_rng
from .io import check_split
from .registry import PointDataset, register_dataset
from .synthetic_shapes import KINDS, PARTS, generate

logger = logging.getLogger(__name__)

CLASSES = list(KINDS)
PART_CATEGORIES = list(PARTS)
SPLITS = ("train", "val", "test")
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
_STREAMS = {"cls": 0, "pretrain": 1, "parts": 2}
DEFAULT_PER_CLASS = {"train": 64, "val": 16, "test": 32}


def part_label_table(categories: Sequence[str]) -> Dict[str, list]:
    """Global part ids per category, consecutive in category order (as ShapeNetPart's 50 parts)."""
    table, start = {}, 0
    for cat in categories:
        table[cat] = list(range(start, start + len(PARTS[cat])))
        start += len(PARTS[cat])
    return table


class SyntheticShapes(PointDataset):
    """Procedural shapes; see the module docstring. ``size`` overrides ``samples_per_class``."""

    def __init__(self, split: str = "train", kinds: Optional[Sequence[str]] = None,
                 samples_per_class: Optional[int] = None, size: Optional[int] = None, num_points: int = 1024,
                 seed: int = 0, noise: float = 0.005, occlusion: float = 0.0, rotation: str = "up",
                 use_normals: bool = False, with_parts: bool = False, balanced: bool = True,
                 stream: str = "cls", transform=None):
        super().__init__(transform)
        self.split = check_split(split, SPLITS, "synthetic")
        self.classes = list(kinds or CLASSES)
        unknown = [k for k in self.classes if k not in KINDS or (with_parts and k not in PARTS)]
        if unknown:
            valid = PARTS if with_parts else KINDS
            raise UserError(f"synthetic: unknown kinds {unknown}; valid: {', '.join(valid)}")
        if size is None:
            size = len(self.classes) * (samples_per_class or DEFAULT_PER_CLASS[split])
        self.size, self.num_points, self.seed, self.stream = int(size), int(num_points), int(seed), _STREAMS[stream]
        self.gen_options = dict(noise=noise, occlusion=occlusion, rotation=rotation)
        self.use_normals, self.with_parts, self.balanced = use_normals, with_parts, balanced
        self.seg_classes = part_label_table(self.classes) if with_parts else {}
        self.part_names = [f"{c}/{p}" for c in self.seg_classes for p in PARTS[c]]
        self._cache: Dict[int, dict] = {}

    def __len__(self):
        return self.size

    @property
    def num_parts(self) -> int:
        return len(self.part_names)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.stream, _SPLIT_CODE[self.split], index])

    def label_of(self, index: int) -> int:
        if self.balanced:
            return index % len(self.classes)
        return int(self._rng(index).integers(len(self.classes)))

    @property
    def labels(self) -> np.ndarray:
        """All labels, without generating any cloud."""
        return np.array([self.label_of(i) for i in range(self.size)], dtype=np.int64)

    def _generate(self, index: int) -> dict:
        rng = self._rng(index)
        label = int(rng.integers(len(self.classes))) if not self.balanced else index % len(self.classes)
        kind = self.classes[label]
        out = generate(kind, rng, self.num_points, **self.gen_options)
        item = {"points": out["points"], "label": label, "normals": out["normals"]}
        if self.with_parts:
            local = np.array([PARTS[kind].index(n) for n in out["part_names"]], dtype=np.int64)
            item["seg"] = np.asarray(self.seg_classes[kind])[local[out["part"]]]
            item["category"] = label
        return item

    def load(self, index: int) -> dict:
        item = self._cache.get(index)
        if item is None:
            item = self._cache[index] = self._generate(index)
        return item if self.use_normals else {**item, "normals": None}


@register_dataset("synthetic", forwards=(SyntheticShapes,))
def _build_synthetic(root, split, **options):
    return SyntheticShapes(split, **options)


@register_dataset("synthetic_pretrain", forwards=(SyntheticShapes,))
def _build_synthetic_pretrain(root, split, size: Optional[int] = None, **options):
    check_split(split, SPLITS, "synthetic_pretrain")
    size = size or {"train": 2048, "val": 256, "test": 256}[split]
    return SyntheticShapes(split, size=size, balanced=False, stream="pretrain", **options)


@register_dataset("synthetic_parts", forwards=(SyntheticShapes,))
def _build_synthetic_parts(root, split, kinds=None, **options):
    return SyntheticShapes(split, kinds=kinds or PART_CATEGORIES, with_parts=True, stream="parts", **options)


@register_dataset("synthetic_fewshot", forwards=(SyntheticShapes,))
def _build_synthetic_fewshot(root, split, way: int = 5, shot: int = 10, fold: int = 0, seed: int = 0,
                             num_query: int = 20, transform=None, **options):
    check_split(split, ("train", "test"), "synthetic_fewshot")
    pools = {"train": SyntheticShapes("train", samples_per_class=max(DEFAULT_PER_CLASS["train"], shot),
                                      seed=seed, **options),
             "test": SyntheticShapes("test", samples_per_class=max(DEFAULT_PER_CLASS["test"], num_query),
                                     seed=seed, **options)}
    train, test = draw_fold(pools["train"].labels, pools["test"].labels, way, shot,
                            fold_rng(seed, way, shot, fold), num_query)
    selection = train if split == "train" else test
    return FewShotSubset(pools[split], selection, fold_classes(selection, pools[split].classes), transform)
