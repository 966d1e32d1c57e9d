"""Token orders along space-filling curves (PointMamba / Point Transformer V3 style serialization).

The centers of each cloud are quantized on a grid, encoded along the curve, and sorted (stable, so equal
codes keep FPS order). Two quantizations:

- ``grid_size=None`` (default): a 2^bits grid spanning each cloud's bounding box (the same scale on every
  axis), so the order does not depend on the cloud's scale.
- ``grid_size=s`` (PointMamba's, from Point Transformer V3): cells of side ``s`` in the cloud's own units,
  ``floor(p / s)`` minus the cloud's minimum, and a curve of depth = the bit length of the largest grid
  coordinate. ``grid_depth="batch"`` takes that depth over the whole batch, as PointMamba does, so one
  cloud's order can depend on the others in its batch; ``"cloud"`` takes it per cloud.

orders: ``hilbert``, ``hilbert-trans`` (axes permuted to y, x, z), ``z`` (Morton), ``z-trans``,
``xyz`` (lexicographic sort by x, then y, then z), ``none`` (the FPS order, identity).
"""
from typing import Optional

import torch

from ..errors import UserError
from ._backend import exporting
from ._check import check_points

ORDERS = ("hilbert", "hilbert-trans", "z", "z-trans", "xyz", "none")
_TRANS = (1, 0, 2)


def quantize(center: torch.Tensor, bits: int) -> torch.Tensor:
    """(B, G, 3) float -> (B, G, 3) long grid coordinates in [0, 2^bits)."""
    lo = center.amin(dim=1, keepdim=True)
    extent = (center.amax(dim=1, keepdim=True) - lo).amax(dim=-1, keepdim=True).clamp_min(1e-12)
    cells = (1 << bits)
    q = ((center - lo) / extent * cells).floor().long()
    return q.clamp_(0, cells - 1)


GRID_DEPTHS = ("cloud", "batch")
_MAX_DEPTH = 20


def quantize_grid(center: torch.Tensor, grid_size: float) -> torch.Tensor:
    """(B, G, 3) float -> (B, G, 3) long cells of side ``grid_size``, relative to each cloud's minimum."""
    q = torch.floor(center / grid_size).long()
    return q - q.amin(dim=1, keepdim=True)


def grid_depths(q: torch.Tensor, grid_depth: str = "cloud") -> torch.Tensor:
    """(B, G, 3) long grid coordinates -> (B,) long curve depth: the bit length of the largest coordinate
    of each cloud (``cloud``) or of the whole batch (``batch``), at least 1."""
    top = q.flatten(1).amax(dim=1)
    if grid_depth == "batch":
        top = top.amax(dim=0, keepdim=True).expand_as(top)
    depth = torch.zeros_like(top)
    for _ in range(_MAX_DEPTH + 1):  # bit length without a float log2: count the shifts to reach 0
        depth += (top > 0).long()
        top = top >> 1
    return depth.clamp_min(1)


def _interleave(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, bits: int) -> torch.Tensor:
    """Morton code with x the most significant of each bit triple."""
    code = torch.zeros_like(x)
    for b in range(bits - 1, -1, -1):
        code = (code << 3) | (((x >> b) & 1) << 2) | (((y >> b) & 1) << 1) | ((z >> b) & 1)
    return code


def hilbert_encode(q: torch.Tensor, bits: int, depth: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Hilbert index of integer coordinates (..., 3) in [0, 2^bits) (Skilling's transpose algorithm).

    Consecutive indices are neighbouring grid cells (one step along one axis). ``depth``: a long tensor
    broadcastable to q[..., 0], each coordinate's own curve depth (its coordinates < 2^depth ≤ 2^bits): the
    levels above it are skipped, which gives the index the curve of that depth gives (with 3·(bits - depth)
    leading zero bits), in one pass over the deepest depth.
    """
    x = [q[..., 0].clone(), q[..., 1].clone(), q[..., 2].clone()]
    m = 1 << (bits - 1)
    # Inverse undo: turn the coordinates into the transposed Hilbert index.
    qbit = m
    while qbit > 1:
        p = qbit - 1
        before = list(x)
        for i in range(3):
            hit = (x[i] & qbit) != 0
            t = (x[0] ^ x[i]) & p
            x0_hit = x[0] ^ p
            new_x0 = torch.where(hit, x0_hit, x[0] ^ t)
            if i != 0:
                x[i] = torch.where(hit, x[i], x[i] ^ t)
            x[0] = new_x0
        if depth is not None:  # level log2(qbit) is above a shallower curve: it leaves its coordinates alone
            on = depth > qbit.bit_length() - 1
            x = [torch.where(on, new, old) for new, old in zip(x, before)]
        qbit >>= 1
    # Gray encode (a no-op on levels above a coordinate's depth: its bits there are 0).
    x[1] = x[1] ^ x[0]
    x[2] = x[2] ^ x[1]
    t = torch.zeros_like(x[0])
    qbit = m
    while qbit > 1:
        t = torch.where((x[2] & qbit) != 0, t ^ (qbit - 1), t)
        qbit >>= 1
    x = [xi ^ t for xi in x]
    return _interleave(x[0], x[1], x[2], bits)


def _curve(q: torch.Tensor, order: str, bits: int, depth: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Curve codes of grid coordinates (..., 3) < 2^bits; ``depth``: see :func:`hilbert_encode` (the other
    curves need none: their codes at a larger ``bits`` sort the same)."""
    if order == "xyz":
        return (q[..., 0] << 2 * bits) | (q[..., 1] << bits) | q[..., 2]
    if order.endswith("-trans"):
        q = q[..., list(_TRANS)]
    if order.startswith("hilbert"):
        return hilbert_encode(q, bits, depth)
    return _interleave(q[..., 0], q[..., 1], q[..., 2], bits)


def encode(center: torch.Tensor, order: str, bits: int = 10, grid_size: Optional[float] = None,
           grid_depth: str = "cloud") -> torch.Tensor:
    """(B, G, 3) -> (B, G) long curve codes for ``order`` (not for ``none``); see the module docstring."""
    if grid_size is None:
        bits = 20 if order == "xyz" else bits
        return _curve(quantize(center, bits), order, bits)
    q = quantize_grid(center, grid_size)
    depths = grid_depths(q, grid_depth)
    if exporting():
        # the depths are data: one curve of the largest depth allowed, the levels above each cloud's own
        # depth skipped, orders the tokens as the curve of its own depth does (a cloud deeper than that, which the eager
        # path refuses, is ordered by its coordinates' low _MAX_DEPTH bits)
        return _curve(q, order, _MAX_DEPTH, depths[:, None])
    top = int(depths.max())
    if top > _MAX_DEPTH:
        raise UserError(f"grid_size={grid_size} puts {1 << top} cells along one axis of a cloud "
                         f"(depth {top} > {_MAX_DEPTH}); use a coarser grid")
    codes = torch.empty(q.shape[:2], dtype=torch.long, device=q.device)
    for d in depths.unique().tolist():  # one curve depth at a time (one value with grid_depth="batch")
        rows = depths == d
        codes[rows] = _curve(q[rows], order, d)
    return codes


def _check(center, order, bits, grid_size, grid_depth):
    check_points("center", center)
    if order not in ORDERS:
        raise UserError(f"unknown serialization order {order!r}; choose one of {list(ORDERS)}")
    if not 1 <= bits <= 20:
        raise UserError(f"bits must be in [1, 20], got {bits}")
    if grid_size is not None and not grid_size > 0:
        raise UserError(f"grid_size must be > 0 (or None), got {grid_size}")
    if grid_depth not in GRID_DEPTHS:
        raise UserError(f"grid_depth must be one of {list(GRID_DEPTHS)}, got {grid_depth!r}")


def serialize(center: torch.Tensor, order: str = "hilbert", bits: int = 10, grid_size: Optional[float] = None,
              grid_depth: str = "cloud") -> torch.Tensor:
    """A permutation of the G tokens along a space-filling curve.

    center: (B, G, 3) float -> perm: (B, G) long; ``center.gather(1, perm[..., None].expand(-1, -1, 3))``
    lists the centers in curve order. ``bits``: depth of the bounding-box grid; ``grid_size``,
    ``grid_depth``: PointMamba's fixed-size grid instead (module docstring).
    """
    _check(center, order, bits, grid_size, grid_depth)
    B, G, _ = center.shape
    if order == "none":
        return torch.arange(G, device=center.device).expand(B, G).clone()
    return torch.sort(encode(center, order, bits, grid_size, grid_depth), dim=1, stable=True).indices


def serialize_ref(center: torch.Tensor, order: str = "hilbert", bits: int = 10, grid_size: Optional[float] = None,
                  grid_depth: str = "cloud") -> torch.Tensor:
    """Reference: sort each cloud's tokens in Python by their curve code, then by index."""
    _check(center, order, bits, grid_size, grid_depth)
    B, G, _ = center.shape
    if order == "none":
        return torch.arange(G, device=center.device).expand(B, G).clone()
    codes = encode(center, order, bits, grid_size, grid_depth).tolist()
    perm = [sorted(range(G), key=lambda g: (row[g], g)) for row in codes]
    return torch.tensor(perm, dtype=torch.long, device=center.device)
