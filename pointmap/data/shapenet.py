"""ShapeNet-55 as Point-BERT / Point-MAE ship it (the pretraining corpus).

``ShapeNet55-34/ShapeNet-55/{train,test}.txt`` list files like ``02691156-1a04e3eab45ca15dd86060f189eb133.npy``
that lie in ``ShapeNet55-34/shapenet_pc/`` as (8192, 3) arrays. The label is the index of the synset
(the part before the dash) among the sorted synsets of both lists. Points come as stored; the peers'
recipe is ``[{"name": "normalize"}, {"name": "sample", "num_points": 1024}]``.
"""
import numpy as np

from .io import check_points, check_split, load_npy, read_lines, resolve_dir
from .registry import PointDataset, register_dataset

BASE_DIR = "ShapeNet55-34"
SPLIT_DIR = "ShapeNet-55"
PC_DIR = "shapenet_pc"


class ShapeNet55(PointDataset):
    def __init__(self, root, split: str = "train", split_dir: str = SPLIT_DIR, transform=None):
        super().__init__(transform)
        check_split(split, ("train", "test"), "shapenet55")
        self.base = resolve_dir(root, BASE_DIR, f"{split_dir}/{split}.txt")
        self.names = read_lines(self.base / split_dir / f"{split}.txt")
        synsets = set(n.split("-")[0] for n in self.names)
        for other in ("train", "test"):
            if (self.base / split_dir / f"{other}.txt").exists():
                synsets.update(n.split("-")[0] for n in read_lines(self.base / split_dir / f"{other}.txt"))
        self.classes = sorted(synsets)
        index = {s: i for i, s in enumerate(self.classes)}
        self.labels = np.array([index[n.split("-")[0]] for n in self.names], dtype=np.int64)

    def __len__(self):
        return len(self.names)

    def load(self, index):
        path = self.base / PC_DIR / self.names[index]
        return {"points": check_points(load_npy(path), path)[:, :3], "label": self.labels[index]}


@register_dataset("shapenet55", forwards=(ShapeNet55,), label_space=lambda **_: {"num_classes": 55})
def _build_shapenet55(root, split, **options):
    return ShapeNet55(root, split, **options)
