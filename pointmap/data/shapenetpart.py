"""ShapeNetPart (``shapenetcore_partanno_segmentation_benchmark_v0_normal``): 16 categories, 50 parts.

``synsetoffset2category.txt`` (``Airplane<TAB>02691156`` per line, category order = label order),
``train_test_split/shuffled_{train,val,test}_file_list.json`` (entries ``shape_data/<synset>/<id>``) and
``<synset>/<id>.txt`` (space-separated x y z nx ny nz part, part a global id in [0, 50)).
Splits ``train``, ``val``, ``trainval`` (what the peers train on) and ``test``. Shapes have ~2-3k
points (some fewer) and items hold them all: a recipe lists its ``sample`` transform after ``normalize``, so
batches collate (pointmap's draws the test and validation points with a fixed seed: the same every evaluation).
"""
import numpy as np

from ..errors import ConfigError, UserError
from .io import check_points, check_split, load_text_points, read_json, read_lines, resolve_dir
from .registry import PointDataset, register_dataset, split_points

BASE_DIR = "shapenetcore_partanno_segmentation_benchmark_v0_normal"
CATEGORY_FILE = "synsetoffset2category.txt"
SPLIT_FILES = {s: f"train_test_split/shuffled_{s}_file_list.json" for s in ("train", "val", "test")}
_PART_COUNTS = {"Airplane": 4, "Bag": 2, "Cap": 2, "Car": 4, "Chair": 4, "Earphone": 3, "Guitar": 3, "Knife": 2,
                "Lamp": 4, "Laptop": 2, "Motorbike": 6, "Mug": 2, "Pistol": 3, "Rocket": 3, "Skateboard": 3,
                "Table": 3}
SEG_CLASSES = {}
for _cat, _n in _PART_COUNTS.items():
    _start = sum(len(v) for v in SEG_CLASSES.values())
    SEG_CLASSES[_cat] = list(range(_start, _start + _n))
NUM_PARTS = 50


class ShapeNetPart(PointDataset):
    seg_classes = SEG_CLASSES
    num_parts = NUM_PARTS

    def __init__(self, root, split: str = "trainval", num_points=None, use_normals: bool = False,
                 transform=None):
        check_split(split, ("train", "val", "trainval", "test"), "shapenetpart")
        if num_points is not None:  # sampling inside the data set would come before the split's normalize
            raise ConfigError(f"shapenetpart: num_points={num_points} is not an option; list "
                              f"{{name: sample, num_points: {num_points}}} after {{name: normalize}} in the transforms")
        super().__init__(transform)
        self.base = resolve_dir(root, BASE_DIR, CATEGORY_FILE)
        rows = [ln.split() for ln in read_lines(self.base / CATEGORY_FILE)]
        if any(len(r) != 2 for r in rows):
            raise UserError(f"{self.base / CATEGORY_FILE}: expected '<Category> <synset>' on every line")
        self.classes = [r[0] for r in rows]
        index = {r[1]: i for i, r in enumerate(rows)}
        self.files, labels = [], []
        for sp in (("train", "val") if split == "trainval" else (split,)):
            path = self.base / SPLIT_FILES[sp]
            for entry in read_json(path):
                parts = str(entry).split("/")
                if len(parts) < 3 or parts[-2] not in index:
                    raise UserError(f"{path}: entry {entry!r} is not shape_data/<synset>/<id> of a known synset")
                self.files.append(self.base / parts[-2] / f"{parts[-1]}.txt")
                labels.append(index[parts[-2]])
        self.labels = np.array(labels, dtype=np.int64)
        self.use_normals = use_normals

    def __len__(self):
        return len(self.files)

    def load(self, index):
        path = self.files[index]
        arr = check_points(load_text_points(path), path, min_cols=7)
        seg = arr[:, 6].astype(np.int64)
        if seg.min() < 0 or seg.max() >= NUM_PARTS or not np.array_equal(seg, arr[:, 6]):
            raise UserError(f"{path}: part labels must be integers in [0, {NUM_PARTS - 1}]")
        label = self.labels[index]
        return {**split_points(arr, self.use_normals, path), "label": label, "category": label, "seg": seg}


@register_dataset("shapenetpart", forwards=(ShapeNetPart,), label_space=lambda **_: {
    "num_classes": len(SEG_CLASSES), "num_categories": len(SEG_CLASSES), "num_parts": NUM_PARTS})
def _build_shapenetpart(root, split, **options):
    return ShapeNetPart(root, split, **options)
