"""Farthest point sampling.

``fps(xyz, n)`` starts at index 0; each next index is the point farthest (squared Euclidean distance,
computed as dx*dx + dy*dy + dz*dz) from the chosen set, ties to the lowest index. These are the indices
of pointnet2_ops' furthest_point_sampling, without its quirk of never choosing a point near the origin
(x²+y²+z² ≤ 1e-3) after the first; ``skip_near_origin=True`` reproduces that quirk (the peer presets use
it, so peer checkpoints see the centers they were trained with). With duplicate points and n close to N the
running distances reach 0 and the lowest index with distance 0 (an index already chosen) is picked again, as in pointnet2_ops.

Backends: ``cuda`` (pointmap's kernel; until a GPU run verifies it, checked against ``torch`` on first use,
see :func:`selfcheck`), ``pointnet2_ops`` (when importable; it always skips points near the origin, so it
serves ``skip_near_origin=True`` only), ``cpu`` (pointmap's C++ path with exact bounding-box pruning),
``torch`` (the reference; runs anywhere). Every backend gives the same indices for the same arguments.
"""
from typing import Callable, Optional

import torch

from . import _ext
from ._backend import Backend, module_present, register_backend, resolve
from .testing import random_cloud
from ._check import check_count, check_points


NEAR_ORIGIN = 1e-3  # pointnet2_ops' threshold on x²+y²+z²


def hide_near_origin(xyz: torch.Tensor) -> torch.Tensor:
    """pointnet2_ops' quirk as an input transform: every point after index 0 with x²+y²+z² ≤ 1e-3 is moved
    onto point 0, the first center, so its distance to the chosen set is 0 from the first step on and it
    is never the farthest point (unless every point is already covered). Distances of the other points
    do not involve it, so FPS on the result picks pointnet2_ops' indices.

    xyz: (B, N, 3) float -> (B, N, 3), a copy.
    """
    near = (xyz * xyz).sum(-1, keepdim=True) <= NEAR_ORIGIN
    near[:, 0] = False
    return torch.where(near, xyz[:, :1], xyz)


def fps_ref(xyz: torch.Tensor, n: int, skip_near_origin: bool = False) -> torch.Tensor:
    """Reference FPS: a loop over the n steps, vectorized over the batch.

    xyz: (B, N, 3) float -> idx: (B, n) long
    """
    if skip_near_origin:
        xyz = hide_near_origin(xyz)
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
    return module_present("pointnet2_ops")


_BUILD_HINT = ("pointmap compiles extensions/pointmap_ops on first use; it needs a C++ compiler and the "
               "`ninja` package (pip install ninja), and for CUDA a CUDA build of torch with nvcc "
               "(CUDA_HOME). See `python -m pointmap.env` for the reason it failed here.")

def selfcheck(kernel: Callable, reference: Callable, device: torch.device) -> Optional[str]:
    """None when ``kernel`` picks the indices ``reference`` picks on two random clouds of 512 points
    (64 picks each) on ``device``; else how many differ and the first that does."""
    xyz = random_cloud(2, 512, device=device, seed=1)
    got, want = kernel(xyz, 64).cpu(), reference(xyz, 64).cpu()
    if got.shape != want.shape:
        return f"indices of shape {tuple(got.shape)}, not {tuple(want.shape)}"
    differ = (got != want).nonzero().tolist()
    if not differ:
        return None
    b, i = differ[0]
    return (f"{len(differ)} of {want.numel()} indices differ (the first: cloud {b}, pick {i}: {got[b, i].item()} "
            f"instead of {want[b, i].item()})")


register_backend("fps", Backend(
    "cuda", _fps_cuda, available=lambda: _ext.has("fps_cuda"),
    supports=lambda xyz: xyz.is_cuda and xyz.dtype in (torch.float32, torch.float64), hint=_BUILD_HINT,
    selfcheck=selfcheck))
register_backend("fps", Backend(
    "pointnet2_ops", _fps_pointnet2, available=_has_pointnet2, supports=lambda xyz: xyz.is_cuda,
    hint="install pointnet2_ops from the Pointnet2_PyTorch repository (pointnet2_ops_lib); it needs CUDA",
    fixed={"skip_near_origin": True}))  # its kernel never picks a point near the origin
register_backend("fps", Backend(
    "cpu", _fps_cpu, available=lambda: _ext.has("fps_cpu"),
    supports=lambda xyz: xyz.device.type == "cpu" and xyz.dtype in (torch.float32, torch.float64),
    hint=_BUILD_HINT))
register_backend("fps", Backend("torch", fps_ref, available=lambda: True))


def fps(xyz: torch.Tensor, n: int, backend: str = "auto", skip_near_origin: bool = False) -> torch.Tensor:
    """Farthest point sampling.

    xyz: (B, N, 3) float -> idx: (B, n) long, idx[:, 0] == 0.
    skip_near_origin: never pick a point with x²+y²+z² ≤ 1e-3 after the first, as pointnet2_ops does
        (the pointnet2_ops backend computes this variant only: ``auto`` uses it for nothing else, and
        asking for it by name with ``skip_near_origin=False`` raises).
    """
    check_points("xyz", xyz)
    check_count("n", n, xyz.shape[1], "N (number of points)")
    fn = resolve("fps", backend, xyz, options={"skip_near_origin": skip_near_origin})
    src = xyz if xyz.dtype in (torch.float32, torch.float64) else xyz.float()
    if skip_near_origin:
        src = hide_near_origin(src)
    return fn(src, n)
