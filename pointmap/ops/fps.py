"""Farthest point sampling.

``fps(xyz, n)`` starts at index 0; each next index is the point farthest (squared Euclidean distance,
computed as dx*dx + dy*dy + dz*dz) from the chosen set, ties to the lowest index. These are the indices
of pointnet2_ops' furthest_point_sampling, without its quirk of never choosing a point within 1e-3 of the
origin (x²+y²+z² ≤ 1e-3). With duplicate points and n close to N the running distances reach 0 and the
lowest index with distance 0 (an index already chosen) is picked again, as in pointnet2_ops.

Backends: ``cuda`` (pointmap's kernel), ``pointnet2_ops`` (when importable), ``cpu`` (pointmap's C++ path
with exact bounding-box pruning), ``torch`` (the reference; runs anywhere).
"""
import importlib.util

import torch

from . import _ext
from ._backend import Backend, register_backend, resolve
from ._check import check_count, check_points


def fps_ref(xyz: torch.Tensor, n: int) -> torch.Tensor:
    """Reference FPS: a loop over the n steps, vectorized over the batch.

    xyz: (B, N, 3) float -> idx: (B, n) long
    """
    B, N, _ = xyz.shape
    x, y, z = xyz.unbind(-1)
    dist = torch.full((B, N), float("inf"), dtype=xyz.dtype, device=xyz.device)
    idx = torch.zeros(B, n, dtype=torch.long, device=xyz.device)
    far = torch.zeros(B, dtype=torch.long, device=xyz.device)
    rows = torch.arange(B, device=xyz.device)
    for i in range(1, n):
        c = xyz[rows, far]  # (B, 3)
        dx, dy, dz = x - c[:, 0:1], y - c[:, 1:2], z - c[:, 2:3]
        d = dx * dx + dy * dy + dz * dz  # no FMA on the CPU: the kernels use the same arithmetic
        torch.minimum(dist, d, out=dist)
        far = dist.argmax(dim=1)  # first maximum: ties go to the lowest index
        idx[:, i] = far
    return idx


def _fps_cpu(xyz, n):
    return _ext.get().fps_cpu(xyz, n)


def _fps_cuda(xyz, n):
    return _ext.get().fps_cuda(xyz, n)


def _fps_pointnet2(xyz, n):
    from pointnet2_ops.pointnet2_utils import furthest_point_sample

    return furthest_point_sample(xyz.float().contiguous(), n).long()


def _has_pointnet2():
    return importlib.util.find_spec("pointnet2_ops") is not None


_BUILD_HINT = ("pointmap compiles extensions/pointmap_ops on first use; it needs a C++ compiler and the "
               "`ninja` package (pip install ninja), and for CUDA a CUDA build of torch with nvcc "
               "(CUDA_HOME). See `python -m pointmap.env` for the reason it failed here.")

register_backend("fps", Backend(
    "cuda", _fps_cuda, available=lambda: _ext.has("fps_cuda"),
    supports=lambda xyz: xyz.is_cuda and xyz.dtype in (torch.float32, torch.float64), hint=_BUILD_HINT))
register_backend("fps", Backend(
    "pointnet2_ops", _fps_pointnet2, available=_has_pointnet2, supports=lambda xyz: xyz.is_cuda,
    hint="install pointnet2_ops from the Pointnet2_PyTorch repository (pointnet2_ops_lib); it needs CUDA"))
register_backend("fps", Backend(
    "cpu", _fps_cpu, available=lambda: _ext.has("fps_cpu"),
    supports=lambda xyz: xyz.device.type == "cpu" and xyz.dtype in (torch.float32, torch.float64),
    hint=_BUILD_HINT))
register_backend("fps", Backend("torch", fps_ref, available=lambda: True))


def fps(xyz: torch.Tensor, n: int, backend: str = "auto") -> torch.Tensor:
    """Farthest point sampling.

    xyz: (B, N, 3) float -> idx: (B, n) long, idx[:, 0] == 0.
    """
    check_points("xyz", xyz)
    check_count("n", n, xyz.shape[1], "N (number of points)")
    fn = resolve("fps", backend, xyz)
    src = xyz if xyz.dtype in (torch.float32, torch.float64) else xyz.float()
    return fn(src, n)
