"""What to show: a point file or a mesh from disk, or one item of a data set.

Files are read by :func:`pointmap.data.io.read_points`, the one reader of a user's files (.ply .pcd .xyz .pts
.txt .npy .npz .h5, meshes surface-sampled with trimesh, ...). Every error is one line naming the file.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import torch

from pointmap.data.io import READ_EXTENSIONS, read_points

from ..errors import UserError

__all__ = ["INPUT_EXTENSIONS", "read_points_file", "prepare_points", "load_input", "dataset_item", "dataset_images"]

INPUT_EXTENSIONS = READ_EXTENSIONS


def read_points_file(path, num_points: int = 1024, seed: int = 0) -> np.ndarray:
    """The (N, 3) float32 points of ``path``; a mesh is sampled with ``num_points`` points."""
    return read_points(path, mesh_points=num_points, seed=seed)


def prepare_points(points, num_points: int, seed: int = 0) -> torch.Tensor:
    """(N, 3) → (num_points, 3) float32 in the unit sphere: farthest point sampling from a larger cloud,
    repeats (seeded) to pad a smaller one, then centred and scaled like the ``normalize`` transform."""
    from pointmap.data.transforms import Normalize
    from pointmap.ops import fps

    pts = torch.as_tensor(np.asarray(points, dtype=np.float32)).reshape(-1, 3)
    n = pts.shape[0]
    if n > num_points:
        pts = pts[fps(pts.unsqueeze(0), num_points)[0]]
    elif n < num_points:
        gen = torch.Generator().manual_seed(int(seed))
        pts = torch.cat([pts, pts[torch.randint(n, (num_points - n,), generator=gen)]])
    return Normalize()(pts)


def load_input(path, num_points: int, seed: int = 0) -> torch.Tensor:
    """A file ready for the model: (num_points, 3) float32, normalized."""
    return prepare_points(read_points_file(path, num_points, seed), num_points, seed)


def dataset_item(name: str, root: Optional[str], split: str, index: int, options: Optional[Dict[str, Any]] = None,
                 transforms: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    """Item ``index`` of a data set, through ``transforms`` (config entries; point clouds default to
    ``normalize``, images to none). An index out of range is a ValueError naming the valid range."""
    from pointmap.data import build_dataset, build_transforms

    ds = build_dataset(name, root, split, **(options or {}))
    if not -len(ds) <= index < len(ds):
        raise UserError(f"--index {index} is out of range for {name}/{split} ({len(ds)} items: 0..{len(ds) - 1})")
    item = dict(ds[index])
    if "points" in item:
        item = build_transforms(transforms or [{"name": "normalize"}])(item)
    elif transforms:
        item = build_transforms(transforms)(item)
    return item


def dataset_images(name: str, root: Optional[str], split: str, index: int, count: int,
                   options: Optional[Dict[str, Any]] = None, transforms: Optional[List[Dict[str, Any]]] = None,
                   size: int = 224):
    """Items ``index`` … ``index + count − 1`` of an image data set as one (B, C, H, W) batch, through
    ``transforms`` (config entries). Pictures read from files (PIL images) with no transform given are resized
    and centre-cropped to ``size`` and normalized as ImageNet's (timm's evaluation transform). Returns the batch
    and the per-channel ``{"mean", "std"}`` an ``image`` transform normalized it with (None: not normalized), for
    :func:`~pointmap.vis.image_grid` to undo."""
    entries = list(transforms or [])
    if not entries and not torch.is_tensor(dataset_item(name, root, split, index, options)["image"]):
        entries = [{"name": "image", "input_size": int(size)}]
    images = torch.stack([dataset_item(name, root, split, index + i, options, entries)["image"] for i in range(count)])
    norm = next((e for e in entries if e.get("name") == "image"), None)
    if norm is None:
        return images, None
    from pointmap.data.image_transforms import IMAGENET_MEAN, IMAGENET_STD

    return images, {"mean": tuple(norm.get("mean", IMAGENET_MEAN)), "std": tuple(norm.get("std", IMAGENET_STD))}
