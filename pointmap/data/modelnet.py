"""ModelNet40 in its three peer formats.

- ``text``: ``ModelNet/modelnet40_normal_resampled/`` with ``modelnet40_shape_names.txt``,
  ``modelnet40_{train,test}.txt`` (ids like ``airplane_0001``) and ``<class>/<id>.txt`` (10000 lines of
  comma-separated x,y,z,nx,ny,nz).
- ``cache``: ``modelnet40_{split}_8192pts_fps.dat`` in the same folder, a pickle of ``[points, labels]``:
  lists of (8192, 6) float32 arrays (farthest-point order) and of (1,) int32 arrays. Read here, written
  by :func:`write_modelnet_cache` (``tools/prepare_data.py build-cache``).
- ``h5``: ``ModelNet/modelnet40_ply_hdf5_2048/ply_data_{split}*.h5`` with keys ``data`` (M, 2048, 3),
  ``label`` (M, 1) and optionally ``normal``; class names in ``shape_names.txt``.

``source="auto"`` takes the cache if it is there, else the text files, else the h5 files. Points come
as stored (not normalized, not subsampled): add ``normalize`` / ``sample`` transforms.
"""
import logging
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import UserError
from .io import (atomic_pickle, check_labels, check_points, check_split, find_dir, load_h5, load_pickle,
                 load_text_points, missing, read_lines, require)
from .registry import PointDataset, register_dataset, split_points

logger = logging.getLogger(__name__)

TEXT_DIR = "ModelNet/modelnet40_normal_resampled"
H5_DIR = "ModelNet/modelnet40_ply_hdf5_2048"
MODELNET40_CLASSES = [
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone", "cup",
    "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp", "laptop",
    "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink", "sofa",
    "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox",
]
SOURCES = ("auto", "cache", "text", "h5")


def cache_name(split: str, num_points: int = 8192, num_category: int = 40) -> str:
    return f"modelnet{num_category}_{split}_{num_points}pts_fps.dat"


def text_dir(root, num_category: int = 40) -> Optional[Path]:
    return find_dir(root, TEXT_DIR, f"modelnet{num_category}_shape_names.txt")


def h5_dir(root) -> Optional[Path]:
    return find_dir(root, H5_DIR, "shape_names.txt") or next(
        (d for d in (Path(root) / H5_DIR, Path(root) / Path(H5_DIR).name, Path(root))
         if d.is_dir() and any(d.glob("ply_data_*.h5"))), None)


class ModelNet40(PointDataset):
    def __init__(self, root, split: str = "train", source: str = "auto", use_normals: bool = False,
                 num_category: int = 40, cache_points: int = 8192, transform=None):
        super().__init__(transform)
        check_split(split, ("train", "test"), "modelnet40")
        if source not in SOURCES:
            raise UserError(f"modelnet40: unknown source {source!r}; valid: {', '.join(SOURCES)}")
        if root is None or not Path(root).is_dir():
            raise missing(root if root is not None else "<None>", "data root")
        self.split, self.use_normals, self.num_category = split, use_normals, num_category
        self.cache_name = cache_name(split, cache_points, num_category)
        tdir = text_dir(root, num_category)
        if source == "auto":
            source = self._pick_source(root, tdir)
        self.source = source
        if source == "h5":
            self._init_h5(root)
            return
        if tdir is None:
            raise missing(Path(root) / TEXT_DIR / f"modelnet{num_category}_shape_names.txt")
        self.dir = tdir
        self.classes = read_lines(tdir / f"modelnet{num_category}_shape_names.txt")
        if source == "cache":
            self._init_cache(tdir / self.cache_name)
        else:
            self._init_text(tdir)

    def _pick_source(self, root, tdir):
        if tdir is not None and (tdir / self.cache_name).exists():
            return "cache"
        if tdir is not None and (tdir / f"modelnet{self.num_category}_{self.split}.txt").exists():
            return "text"
        if h5_dir(root) is not None:
            return "h5"
        base = tdir or Path(root) / TEXT_DIR
        raise missing(base / f"modelnet{self.num_category}_{self.split}.txt",
                      f"ModelNet40 (no cache {self.cache_name}, no split list, no {H5_DIR}/*.h5)")

    def _init_text(self, tdir: Path):
        ids = read_lines(tdir / f"modelnet{self.num_category}_{self.split}.txt")
        index = {c: i for i, c in enumerate(self.classes)}
        self.files, labels = [], []
        for shape_id in ids:
            cls = shape_id.rsplit("_", 1)[0]
            if cls not in index:
                raise UserError(f"{tdir}/modelnet{self.num_category}_{self.split}.txt: id {shape_id!r} "
                                 f"names class {cls!r}, not in the shape names file")
            self.files.append(require(tdir / cls / f"{shape_id}.txt"))
            labels.append(index[cls])
        self.labels = np.array(labels, dtype=np.int64)

    def _init_cache(self, path: Path):
        data = load_pickle(path)
        if not isinstance(data, (list, tuple)) or len(data) != 2 or len(data[0]) != len(data[1]):
            raise UserError(f"{path}: expected a pickle of [points list, labels list] of equal length")
        self.arrays = [check_points(p, f"{path} [item {i}]") for i, p in enumerate(data[0])]
        labels = [np.asarray(lb).reshape(-1)[:1] for lb in data[1]]
        if any(lb.size != 1 for lb in labels):
            raise UserError(f"{path}: every label must hold one class index")
        self.labels = check_labels(np.concatenate(labels), path, len(self.arrays), len(self.classes))

    def _init_h5(self, root):
        hdir = h5_dir(root)
        if hdir is None:
            raise missing(Path(root) / H5_DIR / f"ply_data_{self.split}0.h5")
        files = sorted(hdir.glob(f"ply_data_{self.split}*.h5"))
        if not files:
            raise missing(hdir / f"ply_data_{self.split}0.h5")
        names = hdir / "shape_names.txt"
        self.classes = read_lines(names) if names.exists() else list(MODELNET40_CLASSES)
        points, normals, labels = [], [], []
        for f in files:
            d = load_h5(f, ("data", "label"), optional=("normal",))
            points.append(check_points(d["data"], f"{f} [data]", ndim=3))
            labels.append(check_labels(d["label"], f"{f} [label]", len(points[-1]), len(self.classes)))
            if "normal" in d:
                normals.append(check_points(d["normal"], f"{f} [normal]", ndim=3, num_points=points[-1].shape[1]))
        arrays = np.concatenate(points)
        if self.use_normals:
            if len(normals) != len(files):
                raise UserError(f"{hdir}: normals asked for but some h5 files have no 'normal' key")
            arrays = np.concatenate([arrays, np.concatenate(normals)], axis=-1)
        self.arrays, self.labels = arrays, np.concatenate(labels)

    def __len__(self):
        return len(self.labels)

    def raw(self, index: int) -> np.ndarray:
        """The stored (N, C) array of one shape, validated."""
        if self.source == "text":
            path = self.files[index]
            return check_points(load_text_points(path, delimiter=","), path, min_cols=6 if self.use_normals else 3)
        return self.arrays[index]

    def load(self, index):
        src = self.files[index] if self.source == "text" else f"{self.source} item {index}"
        return {**split_points(self.raw(index), self.use_normals, src), "label": self.labels[index]}


@register_dataset("modelnet40", forwards=(ModelNet40,),
                  label_space=lambda num_category=40, **_: {"num_classes": num_category})
def _build_modelnet40(root, split, **options):
    return ModelNet40(root, split, **options)


def write_modelnet_cache(root, split: str, num_points: int = 8192, num_category: int = 40,
                         overwrite: bool = False, progress=None) -> Optional[Path]:
    """Build ``modelnet40_{split}_{num_points}pts_fps.dat`` from the text files: each shape's
    ``num_points`` farthest points (all six columns, FPS order), pickled as ``[points, labels]`` like
    Point-BERT's cache. Every file is read and checked before the cache is written (atomically).
    Returns the path, or None when it exists and ``overwrite`` is False."""
    from pointmap.ops import fps

    ds = ModelNet40(root, split, source="text", use_normals=True, num_category=num_category)
    path = ds.dir / cache_name(split, num_points, num_category)
    if path.exists() and not overwrite:
        logger.info("%s exists; skipped", path)
        return None
    points, labels = [], []
    for i in range(len(ds)):
        arr = ds.raw(i)
        if len(arr) < num_points:
            raise UserError(f"{ds.files[i]}: {len(arr)} points, fewer than {num_points}")
        idx = fps(torch.from_numpy(np.ascontiguousarray(arr[None, :, :3])), num_points)[0].numpy()
        points.append(np.ascontiguousarray(arr[idx, :6], dtype=np.float32))
        labels.append(np.array([ds.labels[i]], dtype=np.int32))
        if progress is not None:
            progress(i + 1, len(ds))
    atomic_pickle([points, labels], path)
    logger.info("wrote %s (%d shapes)", path, len(points))
    return path
