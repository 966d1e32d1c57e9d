"""k nearest neighbours by squared Euclidean distance, ascending, ties to the lowest index.

The returned distances are computed from coordinate differences (dx*dx + dy*dy + dz*dz), exact to
rounding and the same on every device. The fast path finds candidates with one batched matmul
(|q|² + |p|² - 2 q·p, cheap but inexact), recomputes the candidates' distances exactly, and proves per
row that no point outside the candidates could be closer (a bound on the matmul's rounding error); rows
it cannot prove are redone exactly. Queries are processed in chunks so that a (B, m, N) distance block
never exceeds ``max_elems`` elements.

Precision: computed in float32 on purpose for float16 / bfloat16 inputs (dist2 is returned in float32:
rounding squared distances back to 16 bits would make ties of distinct points), and with autocast
turned off inside, so the candidate matmul is never run in bf16 behind the caller's back.
"""
import torch

from ._backend import Backend, register_backend, resolve
from ._check import check_count, check_points, check_same_batch
from ._precision import no_autocast, upcast

MAX_ELEMS = 1 << 25  # elements of one chunk's (B, m, N) distance block: 128 MiB in float32


def _sq_dist(query: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(B, M, 3), (B, N, 3) -> (B, M, N) squared distances, dx*dx + dy*dy + dz*dz."""
    d = query[:, :, None, 0] - points[:, None, :, 0]
    out = d * d
    for a in (1, 2):
        d = query[:, :, None, a] - points[:, None, :, a]
        out = out + d * d
    return out


def knn_ref(query: torch.Tensor, points: torch.Tensor, k: int):
    """Reference: all distances at once, stable sort (ties to the lowest index).

    query: (B, M, 3), points: (B, N, 3) -> dist2: (B, M, k), idx: (B, M, k) long
    """
    d = _sq_dist(query, points)
    dist, idx = torch.sort(d, dim=-1, stable=True)
    return dist[..., :k], idx[..., :k]


def _topk_lowest_index(d: torch.Tensor, k: int):
    """k smallest of the last dim, ascending, ties to the lowest index, via topk (cheaper than a sort)."""
    N = d.shape[-1]
    kk = min(k + 1, N)
    val, idx = torch.topk(d, kk, dim=-1, largest=False, sorted=True)
    # topk does not promise an order among equal values: order by (value, index) inside the k + 1.
    o = idx.argsort(dim=-1)
    val, idx = val.gather(-1, o), idx.gather(-1, o)
    o = val.argsort(dim=-1, stable=True)
    val, idx = val.gather(-1, o), idx.gather(-1, o)
    if kk > k:
        # A tie across the k-th place may leave a lower index outside the k + 1 kept: redo those rows.
        tied = val[..., k - 1] == val[..., k]
        if bool(tied.any()):
            rows = tied.nonzero(as_tuple=True)
            full_val, full_idx = torch.sort(d[rows], dim=-1, stable=True)
            val, idx = val.clone(), idx.clone()
            val[rows] = full_val[..., :kk]
            idx[rows] = full_idx[..., :kk]
    return val[..., :k], idx[..., :k]


MARGIN = 8  # extra candidates beyond k taken from the matmul distances


def _knn_block(query: torch.Tensor, points: torch.Tensor, k: int, pp: torch.Tensor):
    N = points.shape[1]
    kk = min(N, k + MARGIN)
    qq = (query * query).sum(-1, keepdim=True)
    approx = torch.baddbmm(qq + pp[:, None, :], query, points.transpose(1, 2), alpha=-2)
    av, cand = torch.topk(approx, kk, dim=-1, largest=False, sorted=True)
    pts = points.gather(1, cand.reshape(cand.shape[0], -1, 1).expand(-1, -1, 3)).reshape(*cand.shape, 3)
    diff = query[:, :, None, :] - pts
    exact = diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1] + diff[..., 2] * diff[..., 2]
    # order the candidates by (exact distance, index)
    o = cand.argsort(dim=-1)
    exact, cand = exact.gather(-1, o), cand.gather(-1, o)
    o = exact.argsort(dim=-1, stable=True)
    exact, cand = exact.gather(-1, o), cand.gather(-1, o)
    if kk < N:
        # Points outside the candidates have matmul distance >= av[..., -1]; their exact distance is at
        # least that minus the rounding error of the expansion. Strictly beyond the k-th exact distance
        # they cannot belong in the answer (not even by a tie).
        eps = torch.finfo(query.dtype).eps
        err = 16 * eps * (qq[..., 0] + pp.amax(dim=1, keepdim=True) + 1)
        unsure = av[..., -1] - err <= exact[..., k - 1]
        if bool(unsure.any()):
            rows = unsure.nonzero(as_tuple=True)
            d_full = _sq_dist(query[rows[0], rows[1]][:, None], points[rows[0]])[:, 0]
            fv, fi = _topk_lowest_index(d_full, k)
            exact, cand = exact[..., :k].clone(), cand[..., :k].clone()
            exact[rows], cand[rows] = fv, fi
    return exact[..., :k], cand[..., :k]


def knn_torch(query: torch.Tensor, points: torch.Tensor, k: int, max_elems: int = MAX_ELEMS):
    if torch.compiler.is_compiling():
        # the fast path decides on the host which rows to redo (a graph break); the reference's stable
        # sort gives the same answer with no data-dependent branch, and inductor fuses its distances
        return knn_ref(query, points, k)
    B, M, _ = query.shape
    N = points.shape[1]
    pp = (points * points).sum(-1)
    step = max(1, max_elems // max(1, B * N))
    if step >= M:
        return _knn_block(query, points, k, pp)
    dists, idxs = [], []
    for m0 in range(0, M, step):
        d, i = _knn_block(query[:, m0:m0 + step], points, k, pp)
        dists.append(d)
        idxs.append(i)
    return torch.cat(dists, dim=1), torch.cat(idxs, dim=1)


register_backend("knn", Backend("torch", knn_torch, available=lambda: True))


def knn(query: torch.Tensor, points: torch.Tensor, k: int, backend: str = "auto"):
    """The k nearest ``points`` of every query point.

    query: (B, M, 3) float, points: (B, N, 3) float -> dist2: (B, M, k), idx: (B, M, k) long, ascending.
    Differentiable in dist2 with respect to both inputs. float16 / bfloat16 inputs are computed in
    float32 and give float32 dist2 (see the module docstring).
    """
    check_points("query", query)
    check_points("points", points)
    check_same_batch("query", query, "points", points)
    check_count("k", k, points.shape[1], "N (number of points)")
    fn = resolve("knn", backend, query, points)
    with no_autocast(query.device):
        return fn(upcast(query), upcast(points), k)
