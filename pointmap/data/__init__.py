"""Data sets in the peers' on-disk formats, synthetic shapes and point-cloud transforms.

    from pointmap.data import build_dataset, build_transforms
    ds = build_dataset("scanobjectnn", "data", "test", variant="hardest")
    ds = build_dataset("synthetic", None, "train", transform=[{"name": "normalize"}])

Items are dicts of tensors: ``points`` (N, 3) float32 and ``label`` (long scalar), plus ``normals``
(``use_normals=True``), ``seg`` / ``category`` (part segmentation); images are ``{"image", "label"}``.
Data sets expose ``classes`` and ``num_classes``. See data/README.md for the layout under ``data/``.
"""
from . import fewshot, image_transforms, images, mesh, modelnet, scanobjectnn, shapenet, shapenetpart, synthetic  # noqa: F401 (register)
from .check import CHECKS, Report, check_root
from .fewshot import draw_fold, write_modelnet_fewshot
from .io import read_points
from .mesh import load_mesh_points
from .modelnet import MODELNET40_CLASSES, write_modelnet_cache
from .registry import (PointDataset, build_dataset, check_data_root, check_dataset_options, label_space, list_datasets,
                       register_dataset)
from .synthetic import SyntheticShapes
from .transforms import TRANSFORMS, Compose, build_transform, build_transforms, check_transforms, create_transform

__all__ = [
    "build_dataset", "check_data_root", "label_space", "list_datasets", "register_dataset", "PointDataset", "build_transforms", "build_transform",
    "check_dataset_options", "check_transforms", "create_transform", "read_points",
    "Compose", "TRANSFORMS", "SyntheticShapes", "load_mesh_points", "write_modelnet_cache",
    "write_modelnet_fewshot", "draw_fold", "check_root", "CHECKS", "Report", "MODELNET40_CLASSES",
]
