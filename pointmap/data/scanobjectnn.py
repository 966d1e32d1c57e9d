"""ScanObjectNN's h5 files (15 classes): ``data`` (M, 2048, 3) float32 and ``label`` (M,).

| variant | file under ``ScanObjectNN/`` |
| --- | --- |
| ``objbg`` (OBJ-BG) | ``main_split/{training,test}_objectdataset.h5`` |
| ``objonly`` (OBJ-ONLY) | ``main_split_nobg/{training,test}_objectdataset.h5`` |
| ``hardest`` (PB-T50-RS) | ``main_split/{training,test}_objectdataset_augmentedrot_scale75.h5`` |
"""
from ..errors import UserError
from .io import check_labels, check_points, check_split, load_h5, resolve_dir
from .registry import PointDataset, register_dataset

BASE_DIR = "ScanObjectNN"
CLASSES = ["bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table", "bed",
           "pillow", "sink", "sofa", "toilet"]
VARIANTS = {
    "objbg": ("main_split", "objectdataset.h5"),
    "objonly": ("main_split_nobg", "objectdataset.h5"),
    "hardest": ("main_split", "objectdataset_augmentedrot_scale75.h5"),
}
ALIASES = {"obj_bg": "objbg", "obj_only": "objonly", "pb_t50_rs": "hardest"}


def variant_file(variant: str, split: str) -> str:
    """Path of a variant's split file relative to the ScanObjectNN folder."""
    sub, name = VARIANTS[variant]
    return f"{sub}/{'training' if split == 'train' else 'test'}_{name}"


class ScanObjectNN(PointDataset):
    classes = CLASSES

    def __init__(self, root, split: str = "train", variant: str = "hardest", transform=None):
        super().__init__(transform)
        check_split(split, ("train", "test"), "scanobjectnn")
        variant = ALIASES.get(variant.lower(), variant.lower())
        if variant not in VARIANTS:
            raise UserError(f"scanobjectnn: unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
        rel = variant_file(variant, split)
        self.path = resolve_dir(root, BASE_DIR, rel) / rel
        d = load_h5(self.path, ("data", "label"))
        self.points = check_points(d["data"], f"{self.path} [data]", ndim=3)
        self.labels = check_labels(d["label"], f"{self.path} [label]", len(self.points), len(CLASSES))
        self.variant = variant

    def __len__(self):
        return len(self.labels)

    def load(self, index):
        return {"points": self.points[index, :, :3], "label": self.labels[index]}


@register_dataset("scanobjectnn", forwards=(ScanObjectNN,), label_space=lambda **_: {"num_classes": len(CLASSES)})
def _build_scanobjectnn(root, split, **options):
    return ScanObjectNN(root, split, **options)
