"""Tiny on-disk fixtures in every peer format, written under a ``data/`` root (DESIGN.md §5 layout)."""
import json
import pickle
from pathlib import Path

import h5py
import numpy as np

SYNSETS = ("02691156", "03001627")  # two ShapeNet-55 synsets
MN_CLASSES = ("airplane", "bed", "chair", "desk")  # a 4-class ModelNet stand-in
MN_COUNTS = {"train": 4, "test": 3}  # shapes per class
MN_POINTS = 40
SOO_COUNTS = {"train": 6, "test": 4}
SOO_POINTS = 32
SNP_CATEGORIES = (("Airplane", "02691156", [0, 1, 2, 3]), ("Bag", "02773838", [4, 5]))
SNP_COUNTS = {"train": 3, "val": 1, "test": 2}  # shapes per category


def _cloud(rng, n, cols=3):
    return rng.normal(size=(n, cols)).astype(np.float32)


def write_shapenet55(root: Path, per_split=None) -> Path:
    per_split = per_split or {"train": 3, "test": 2}
    base = root / "ShapeNet55-34"
    (base / "ShapeNet-55").mkdir(parents=True)
    (base / "shapenet_pc").mkdir()
    rng = np.random.default_rng(0)
    for split, n in per_split.items():
        names = [f"{s}-{split}{i:04d}.npy" for s in SYNSETS for i in range(n)]
        for name in names:
            np.save(base / "shapenet_pc" / name, _cloud(rng, 64))
        (base / "ShapeNet-55" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return base


def write_modelnet_text(root: Path) -> Path:
    """``modelnet40_normal_resampled`` with comma-separated x,y,z,nx,ny,nz files (4 classes)."""
    base = root / "ModelNet" / "modelnet40_normal_resampled"
    base.mkdir(parents=True)
    (base / "modelnet40_shape_names.txt").write_text("\n".join(MN_CLASSES) + "\n")
    rng = np.random.default_rng(1)
    for split, n in MN_COUNTS.items():
        ids = []
        for c in MN_CLASSES:
            (base / c).mkdir(exist_ok=True)
            for i in range(n):
                sid = f"{c}_{split}{i:03d}"
                arr = _cloud(rng, MN_POINTS, 6)
                arr[:, 3:] /= np.linalg.norm(arr[:, 3:], axis=1, keepdims=True)
                np.savetxt(base / c / f"{sid}.txt", arr, delimiter=",", fmt="%.6f")
                ids.append(sid)
        (base / f"modelnet40_{split}.txt").write_text("\n".join(ids) + "\n")
    return base


def write_modelnet_h5(root: Path, with_normals: bool = True) -> Path:
    base = root / "ModelNet" / "modelnet40_ply_hdf5_2048"
    base.mkdir(parents=True)
    (base / "shape_names.txt").write_text("\n".join(MN_CLASSES) + "\n")
    rng = np.random.default_rng(2)
    for name, m in (("ply_data_train0.h5", 5), ("ply_data_train1.h5", 3), ("ply_data_test0.h5", 4)):
        with h5py.File(base / name, "w") as f:
            f["data"] = rng.normal(size=(m, 32, 3)).astype(np.float32)
            f["label"] = (np.arange(m) % len(MN_CLASSES)).astype(np.uint8)[:, None]
            if with_normals:
                f["normal"] = rng.normal(size=(m, 32, 3)).astype(np.float32)
    return base


def write_fewshot_pickle(root: Path, way=2, shot=3, fold=0, num_query=2) -> Path:
    """A Point-BERT-style fold: dict train/test of (points (N, 6), label, orig_label)."""
    rng = np.random.default_rng(3)
    orig = [7, 33][:way]
    data = {"train": [(_cloud(rng, 50, 6), k, np.int32(orig[k])) for k in range(way) for _ in range(shot)],
            "test": [(_cloud(rng, 50, 6), k, np.int32(orig[k])) for k in range(way) for _ in range(num_query)]}
    path = root / "ModelNetFewshot" / f"{way}way_{shot}shot" / f"{fold}.pkl"
    path.parent.mkdir(parents=True)
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


def write_scanobjectnn(root: Path) -> Path:
    base = root / "ScanObjectNN"
    rng = np.random.default_rng(4)
    for sub, suffix in (("main_split", ""), ("main_split_nobg", ""), ("main_split", "_augmentedrot_scale75")):
        (base / sub).mkdir(parents=True, exist_ok=True)
        for split, m in SOO_COUNTS.items():
            name = f"{'training' if split == 'train' else 'test'}_objectdataset{suffix}.h5"
            with h5py.File(base / sub / name, "w") as f:
                f["data"] = rng.normal(size=(m, SOO_POINTS, 3)).astype(np.float32)
                f["label"] = (np.arange(m) * 4 % 15).astype(np.int64)
    return base


def write_shapenetpart(root: Path) -> Path:
    base = root / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    (base / "train_test_split").mkdir(parents=True)
    (base / "synsetoffset2category.txt").write_text("".join(f"{c}\t{s}\n" for c, s, _ in SNP_CATEGORIES))
    rng = np.random.default_rng(5)
    for split, n in SNP_COUNTS.items():
        entries = []
        for _, synset, parts in SNP_CATEGORIES:
            (base / synset).mkdir(exist_ok=True)
            for i in range(n):
                sid = f"{split}{i:03d}"
                arr = np.concatenate([_cloud(rng, 30, 6), rng.choice(parts, (30, 1)).astype(np.float32)], axis=1)
                np.savetxt(base / synset / f"{sid}.txt", arr, fmt="%.6f")
                entries.append(f"shape_data/{synset}/{sid}")
        (base / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(json.dumps(entries))
    return base


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
