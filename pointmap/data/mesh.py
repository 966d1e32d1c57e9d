"""Your own meshes (.obj, .ply, .off, .stl, .glb): surface-sampled with trimesh.

``load_mesh_points(path, num_points)`` samples one file. The ``meshes`` data set reads a folder:
``root/<split>/`` when that exists, else ``root/`` for every split; a file in a subfolder takes the
subfolder's name as its class (``root/chair/a.obj`` → ``chair``), a file directly in the folder is its
own class (its stem), so a flat folder such as ``pybullet_data`` works as is. Sampling is seeded per
file and kept in memory.
"""
import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import UserError, UserFileNotFoundError
from .readers import MESH_FILE_EXTENSIONS, read_cloud
from .validate import missing
from .registry import PointDataset, register_dataset

logger = logging.getLogger(__name__)

MESH_EXTENSIONS = (".obj", ".ply", ".off", ".stl", ".glb")


def load_mesh_points(path, num_points: int = 1024, seed: int = 0) -> Dict[str, np.ndarray]:
    """``{"points", "normals"}`` (num_points, 3) float32 sampled uniformly on the mesh surface (read by
    :func:`pointmap.data.readers.read_cloud`, the one reader of a user's files)."""
    path = Path(path)
    if not path.exists():
        raise missing(path, "mesh file")
    if path.suffix.lower() not in MESH_EXTENSIONS + MESH_FILE_EXTENSIONS:
        raise UserError(f"{path}: not a mesh file ({', '.join(MESH_EXTENSIONS)})")
    cloud = read_cloud(path, mesh_points=num_points, seed=seed)
    if cloud.shape != (num_points, 6):  # a .ply of vertices alone: nothing to sample
        raise UserError(f"mesh file {path} has no surface to sample (no faces)")
    return {"points": cloud[:, :3].copy(), "normals": cloud[:, 3:].copy()}


def mesh_base(root, split: str) -> Path:
    """The folder a split reads: ``root/<split>/`` when it exists, else ``root/``."""
    return Path(root) / split if (Path(root) / split).is_dir() else Path(root)


def find_meshes(base, extensions=MESH_EXTENSIONS) -> Tuple[List[Path], List[str]]:
    """Mesh files under ``base`` (sorted) and each one's class name: its first subfolder, or its stem for a
    file directly in ``base``."""
    exts = tuple(e.lower() for e in extensions)
    files = sorted(p for p in Path(base).rglob("*") if p.is_file() and p.suffix.lower() in exts)
    names = [p.relative_to(base).parts[0] if len(p.relative_to(base).parts) > 1 else p.stem for p in files]
    return files, names


class MeshFolder(PointDataset):
    def __init__(self, root, split: str = "train", num_points: int = 1024, seed: int = 0,
                 use_normals: bool = False, extensions=MESH_EXTENSIONS, transform=None):
        super().__init__(transform)
        if root is None or not Path(root).is_dir():
            raise missing(root if root is not None else "<None>", "mesh folder")
        base = mesh_base(root, split)
        self.files, names = find_meshes(base, extensions)
        if not self.files:
            raise UserFileNotFoundError(f"no mesh files ({', '.join(extensions)}) under {base.absolute()}")
        self.classes = sorted(set(names))
        self.labels = np.array([self.classes.index(n) for n in names], dtype=np.int64)
        self.num_points, self.seed, self.use_normals = num_points, seed, use_normals
        self._cache: Dict[int, dict] = {}

    def __len__(self):
        return len(self.files)

    def load(self, index):
        item: Optional[dict] = self._cache.get(index)
        if item is None:
            item = self._cache[index] = load_mesh_points(self.files[index], self.num_points, self.seed + index)
        return {"points": item["points"], "normals": item["normals"] if self.use_normals else None,
                "label": self.labels[index]}


@register_dataset("meshes", forwards=(MeshFolder,), on_disk=True)
def _build_meshes(root, split, **options):
    return MeshFolder(root, split, **options)
