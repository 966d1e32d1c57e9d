"""Chamfer distance between point sets.

norm=2 (Point-MAE's ChamferDistanceL2): mean over a of the squared distance to the nearest point of b,
plus the same from b to a. norm=1 (ChamferDistanceL1): the same with distances instead of squared
distances, the sum halved. reduction="mean" averages over the batch too (one scalar, as Point-MAE);
"none" gives one value per set, (B,).

Precision: computed in float32 on purpose, with autocast turned off inside (a bf16 matmul picks wrong
nearest neighbours); float16 / bfloat16 inputs are upcast and the distance is returned in float32, as a
loss should be.
"""
import torch

from ._backend import Backend, register_backend, resolve
from ._check import check_points, check_same_batch
from ._precision import no_autocast, upcast


class _SafeSqrt(torch.autograd.Function):
    """sqrt whose gradient at 0 is 0 instead of inf (a point that coincides with its neighbour)."""

    @staticmethod
    def forward(ctx, x):
        y = x.sqrt()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return torch.where(y > 0, g / (2 * y).clamp_min(torch.finfo(y.dtype).tiny), torch.zeros_like(g))


def _reduce(d_ab: torch.Tensor, d_ba: torch.Tensor, norm: int, reduction: str) -> torch.Tensor:
    if norm == 1:
        d_ab, d_ba = _SafeSqrt.apply(d_ab), _SafeSqrt.apply(d_ba)
    per_set = d_ab.mean(dim=1) + d_ba.mean(dim=1)
    if norm == 1:
        per_set = per_set / 2
    return per_set.mean() if reduction == "mean" else per_set


def chamfer_ref(a: torch.Tensor, b: torch.Tensor, norm: int = 2, reduction: str = "mean") -> torch.Tensor:
    """Reference: pairwise squared distances from coordinate differences, min both ways."""
    d = ((a[:, :, None, :] - b[:, None, :, :]) ** 2).sum(-1)  # (B, P, Q)
    return _reduce(d.min(dim=2).values, d.min(dim=1).values, norm, reduction)


def chamfer_torch(a: torch.Tensor, b: torch.Tensor, norm: int = 2, reduction: str = "mean") -> torch.Tensor:
    """Fast path: nearest neighbours from one batched matmul (|a|² + |b|² - 2 a·b), then the distances
    to them recomputed from coordinate differences, which are exact (0 for coinciding points) where the
    expanded form cancels badly. The gradient is the reference's: it flows through the chosen pairs.
    """
    with torch.no_grad():
        aa = (a * a).sum(-1, keepdim=True)  # (B, P, 1)
        bb = (b * b).sum(-1).unsqueeze(1)  # (B, 1, Q)
        d = torch.baddbmm(aa + bb, a, b.transpose(1, 2), alpha=-2)
        ia, ib = d.argmin(dim=2), d.argmin(dim=1)
    d_ab = ((a - b.gather(1, ia[..., None].expand(-1, -1, 3))) ** 2).sum(-1)
    d_ba = ((b - a.gather(1, ib[..., None].expand(-1, -1, 3))) ** 2).sum(-1)
    return _reduce(d_ab, d_ba, norm, reduction)


register_backend("chamfer", Backend("torch", chamfer_torch, available=lambda: True))
register_backend("chamfer", Backend("reference", chamfer_ref, available=lambda: True))


def chamfer(a: torch.Tensor, b: torch.Tensor, norm: int = 2, reduction: str = "mean",
            backend: str = "auto") -> torch.Tensor:
    """Chamfer distance. a: (B, P, 3), b: (B, Q, 3) -> scalar (reduction="mean") or (B,) ("none"), float32
    for float16 / bfloat16 inputs."""
    check_points("a", a, check_finite=False)
    check_points("b", b, check_finite=False)
    check_same_batch("a", a, "b", b)
    if norm not in (1, 2):
        raise ValueError(f"norm must be 1 or 2, got {norm!r}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if a.shape[1] == 0 or b.shape[1] == 0:
        raise ValueError(f"chamfer needs non-empty sets, got a {tuple(a.shape)} and b {tuple(b.shape)}")
    fn = resolve("chamfer", backend, a, b)
    with no_autocast(a.device):
        return fn(upcast(a), upcast(b), norm, reduction)
