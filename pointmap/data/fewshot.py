"""Few-shot folds: drawing them, reading Point-BERT's ModelNet40 few-shot pickles and writing new ones.

Layout: ``ModelNetFewshot/{way}way_{shot}shot/{fold}.pkl``, each a dict ``{"train": [...], "test":
[...]}`` of ``(points (N, C) float32, label in [0, way), original ModelNet40 label)``. A fold picks
``way`` classes, ``shot`` training clouds of each from the train split and ``num_query`` (20) test
clouds of each from the test split, both shuffled.
"""
import logging
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from ..errors import UserError
from .io import atomic_pickle, check_points, check_split, load_pickle, read_lines, resolve_dir
from .registry import PointDataset, register_dataset, split_points

logger = logging.getLogger(__name__)

FEWSHOT_DIR = "ModelNetFewshot"
WAYS, SHOTS, NUM_FOLDS = (5, 10), (10, 20), 10

Selection = List[Tuple[int, int, int]]  # (index into the pool, label in the fold, original label)


def fold_rng(seed: int, way: int, shot: int, fold: int) -> np.random.Generator:
    return np.random.default_rng([seed, way, shot, fold])


def draw_fold(train_labels: Sequence[int], test_labels: Sequence[int], way: int, shot: int,
              rng: np.random.Generator, num_query: int = 20) -> Tuple[Selection, Selection]:
    """Pick ``way`` classes, ``shot`` train and ``num_query`` test items of each; both lists shuffled."""
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    pool = np.unique(train_labels)
    if way > len(pool):
        raise UserError(f"few-shot: way={way} but the data has only {len(pool)} classes")
    train, test = [], []
    for new, cls in enumerate(rng.permutation(pool)[:way]):
        tr, te = np.flatnonzero(train_labels == cls), np.flatnonzero(test_labels == cls)
        if len(tr) < shot or len(te) < num_query:
            raise UserError(f"few-shot: class {cls} has {len(tr)} train / {len(te)} test items, "
                             f"needs {shot} / {num_query}")
        train += [(int(i), new, int(cls)) for i in rng.permutation(tr)[:shot]]
        test += [(int(i), new, int(cls)) for i in rng.permutation(te)[:num_query]]
    return [train[i] for i in rng.permutation(len(train))], [test[i] for i in rng.permutation(len(test))]


class FewShotSubset(PointDataset):
    """Items of ``pool`` (a PointDataset without transform) picked by a :data:`Selection`, relabelled."""

    def __init__(self, pool: PointDataset, selection: Selection, classes: List[str], transform=None):
        super().__init__(transform)
        self.pool, self.selection, self.classes = pool, selection, classes

    def __len__(self):
        return len(self.selection)

    def load(self, index):
        pool_index, label, _ = self.selection[index]
        return {**self.pool.load(pool_index), "label": label}


def fold_classes(selection: Selection, names: Sequence[str]) -> List[str]:
    """Class names in fold-label order, from the original labels."""
    by_label = {label: orig for _, label, orig in selection}
    return [names[by_label[k]] if by_label[k] < len(names) else str(by_label[k]) for k in sorted(by_label)]


class ModelNetFewShot(PointDataset):
    """One fold of Point-BERT's ModelNet40 few-shot pickles; points are as stored ((8192, 6) there)."""

    def __init__(self, root, split: str = "train", way: int = 5, shot: int = 10, fold: int = 0,
                 use_normals: bool = False, transform=None):
        from .modelnet import MODELNET40_CLASSES, text_dir

        super().__init__(transform)
        check_split(split, ("train", "test"), "modelnet40_fewshot")
        sub = f"{way}way_{shot}shot"
        base = resolve_dir(root, f"{FEWSHOT_DIR}/{sub}", f"{fold}.pkl")
        path = base / f"{fold}.pkl"
        data = load_pickle(path)
        if not isinstance(data, dict) or split not in data:
            raise UserError(f"{path}: expected a dict with keys 'train' and 'test', got {type(data).__name__}")
        self.points, selection = [], []
        for i, entry in enumerate(data[split]):
            if not isinstance(entry, (tuple, list)) or len(entry) != 3:
                raise UserError(f"{path}: {split} entry {i} is not a (points, label, orig_label) triple")
            self.points.append(check_points(entry[0], f"{path} [{split}][{i}]"))
            label, orig = (int(np.asarray(x).reshape(-1)[0]) for x in entry[1:])
            if not 0 <= label < way:
                raise UserError(f"{path}: {split} entry {i} has label {label}, expected [0, {way - 1}]")
            selection.append((i, label, orig))
        self.labels = np.array([s[1] for s in selection], dtype=np.int64)
        names_dir = text_dir(root)  # the data root's own shape names, when it has them
        names = read_lines(names_dir / "modelnet40_shape_names.txt") if names_dir else MODELNET40_CLASSES
        self.classes = fold_classes(selection, names)
        self.use_normals, self.path = use_normals, path

    def __len__(self):
        return len(self.points)

    def load(self, index):
        return {**split_points(self.points[index], self.use_normals, f"{self.path} [{index}]"),
                "label": self.labels[index]}


@register_dataset("modelnet40_fewshot", forwards=(ModelNetFewShot,), label_space=lambda way=5, **_: {"num_classes": way})
def _build_modelnet_fewshot(root, split, **options):
    return ModelNetFewShot(root, split, **options)


def write_modelnet_fewshot(root, ways=WAYS, shots=SHOTS, folds: int = NUM_FOLDS, seed: int = 0,
                           num_query: int = 20, overwrite: bool = False, source: str = "auto") -> List[Path]:
    """Write the missing fold pickles under ``root/ModelNetFewshot`` (``root`` is the ``data/`` folder)
    from the ModelNet40 train/test splits, with a fixed seed. Every fold is drawn and checked before
    anything is written. Returns the paths written."""
    from .modelnet import ModelNet40

    out_dir = Path(root) / FEWSHOT_DIR
    todo = [(w, s, f) for w in ways for s in shots for f in range(folds)
            if overwrite or not (out_dir / f"{w}way_{s}shot" / f"{f}.pkl").exists()]
    if not todo:
        return []
    pools = {sp: ModelNet40(root, sp, source=source, use_normals=True) for sp in ("train", "test")}
    drawn = {t: draw_fold(pools["train"].labels, pools["test"].labels, t[0], t[1], fold_rng(seed, *t), num_query)
             for t in todo}
    # load (and so validate) every picked cloud before the first write
    arrays = {(sp, i): None for train, test in drawn.values() for sp, sel in (("train", train), ("test", test))
              for i, _, _ in sel}
    for sp, i in arrays:
        arrays[sp, i] = pools[sp].raw(i)
    written = []
    for (way, shot, fold), (train, test) in drawn.items():
        data = {sp: [(arrays[sp, i], label, orig) for i, label, orig in sel]
                for sp, sel in (("train", train), ("test", test))}
        path = out_dir / f"{way}way_{shot}shot" / f"{fold}.pkl"
        atomic_pickle(data, path)
        written.append(path)
        logger.info("wrote %s (%d train, %d test)", path, len(train), len(test))
    return written
