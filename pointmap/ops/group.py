"""Patch grouping: FPS centers, KNN neighbourhoods, coordinates relative to the center (Point-MAE's Group)."""
import torch

from ._check import check_count, check_points
from .fps import fps, fps_ref
from .knn import knn, knn_ref


def gather_points(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` picked per batch element.

    x: (B, N, C), idx: (B, ...) long -> (B, ..., C)
    """
    B = x.shape[0]
    flat = idx.reshape(B, -1)
    out = x.gather(1, flat.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return out.reshape(*idx.shape, x.shape[-1])


def _check(xyz, num_group, group_size):
    check_points("xyz", xyz)
    check_count("num_group", num_group, xyz.shape[1], "N (number of points)")
    check_count("group_size", group_size, xyz.shape[1], "N (number of points)")


def group_ref(xyz: torch.Tensor, num_group: int, group_size: int, skip_near_origin: bool = False):
    """Reference grouping from the reference ops. Same result as :func:`group`."""
    _check(xyz, num_group, group_size)
    center = gather_points(xyz, fps_ref(xyz, num_group, skip_near_origin))
    _, idx = knn_ref(center, xyz, group_size)
    return gather_points(xyz, idx) - center.unsqueeze(2), center


def group(xyz: torch.Tensor, num_group: int, group_size: int, fps_backend: str = "auto",
          knn_backend: str = "auto", return_idx: bool = False, skip_near_origin: bool = False):
    """Cut a cloud into ``num_group`` patches of ``group_size`` points.

    xyz: (B, N, 3) float -> neighborhood: (B, G, K, 3) relative to its center, center: (B, G, 3)
    (and idx: (B, G, K) long into xyz when ``return_idx``). Patch g is centered on the g-th FPS point;
    its points are the K nearest, ascending in distance (the center itself first).
    ``skip_near_origin``: pointnet2_ops' FPS quirk (see :func:`pointmap.ops.fps`).
    float16 / bfloat16 xyz: FPS and KNN choose on its float32 values (the same patches as for
    ``xyz.float()``); the returned coordinates keep xyz's dtype.
    """
    _check(xyz, num_group, group_size)
    center = gather_points(xyz, fps(xyz, num_group, backend=fps_backend, skip_near_origin=skip_near_origin))
    _, idx = knn(center, xyz, group_size, backend=knn_backend)
    neighborhood = gather_points(xyz, idx) - center.unsqueeze(2)
    return (neighborhood, center, idx) if return_idx else (neighborhood, center)
