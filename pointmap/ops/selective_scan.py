"""Selective scan (Mamba's S6 recurrence), with the signature and result of mamba_ssm's selective_scan_fn.

    delta' = softplus(delta + delta_bias) (if delta_softplus) else delta + delta_bias
    h_t    = exp(delta'_t A) * h_{t-1} + delta'_t B_t u_t          (per channel d and state n)
    y_t    = <h_t, C_t> + D u_t;  out = y * silu(z) if z is given

u, delta, z: (B, D, L); A: (D, N) real; B, C: (D, N) (constant), (B, N, L) or (B, G, N, L) (G groups of
channels); D, delta_bias: (D,). Returns out (B, D, L) [, last_state (B, D, N)].

Backends: ``mamba_ssm`` (its CUDA kernel, when importable and the tensors are on CUDA), ``triton``
(pointmap's Triton kernels, ``selective_scan_triton.py``: on CUDA when mamba_ssm does not import; until a GPU
run verifies them, checked against ``torch`` on first use, see :func:`selfcheck`), ``torch``
(a chunked scan in time-major layout: short loops inside chunks of ~√L steps, all chunks at once, and
across chunks; its backward recomputes the states and runs the same scan in reverse, so nothing of size
(B, D, L, N) is stored), ``reference`` (step by step, the oracle).

Precision: the recurrence runs in float32 on purpose (float64 for float64 inputs), whatever the input
dtype, with autocast turned off inside (forward and backward): a bf16 state would lose the small
``delta B u`` increments against a decaying state over L steps. The output has u's dtype, as
mamba_ssm's; gradients have their inputs' dtypes.
"""
import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ._backend import Backend, exporting, module_present, register_backend, resolve
from ._precision import no_autocast
from .testing import scan_inputs


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _expand_bc(X: torch.Tensor, dim: int, dtype) -> torch.Tensor:
    """B or C as a tensor broadcastable to (B, D, L, N): the time-major form, batch-major."""
    return _time_major_bc(X, dim, dtype).permute(1, 2, 0, 3)


def _prepare(u, delta, A, delta_bias, delta_softplus):
    dtype = _compute_dtype(u)
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    return dtype, delta


def _finish(y, u, D, z, dtype, dtype_in):
    out = y if D is None else y + u.to(dtype) * D.to(dtype)[:, None]
    if z is not None:
        out = out * F.silu(z.to(dtype))
    return out.to(dtype_in)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    """The recurrence step by step, as mamba_ssm's selective_scan_ref writes it: the test oracle.

    exp(delta A) and delta B u are formed for all steps first, then a loop over L updates the state.
    Slow (above all its backward), obviously correct.
    """
    dtype_in = u.dtype
    dtype, delta = _prepare(u, delta, A, delta_bias, delta_softplus)
    dim = u.shape[1]
    Bx, Cx = _expand_bc(B, dim, dtype), _expand_bc(C, dim, dtype)
    deltaA = torch.exp(delta[..., None] * A.to(dtype)[:, None, :])  # (B, D, L, N)
    deltaB_u = (delta * u.to(dtype))[..., None] * Bx
    h = u.new_zeros((u.shape[0], dim, A.shape[1]), dtype=dtype)
    ys = []
    for t in range(u.shape[2]):
        h = deltaA[:, :, t] * h + deltaB_u[:, :, t]
        Ct = Cx[:, :, t] if Cx.shape[2] > 1 else Cx[:, :, 0]
        ys.append((h * Ct).sum(-1))
    out = _finish(torch.stack(ys, dim=2), u, D, z, dtype, dtype_in)
    return (out, h) if return_last_state else out


def _chunk_len(L: int) -> int:
    """Chunk length near √L, a divisor of L when one is close (no padding needed)."""
    root = max(1, math.isqrt(L))
    for T in sorted(range(max(1, root // 2), 2 * root + 1), key=lambda t: abs(t - root)):
        if L % T == 0:
            return T
    return root


def _chunk_scan(a: torch.Tensor, b: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + b_t along dim 0 (time-major tensors (L, ...)), h_{-1} = 0; with ``reverse``,
    h_t = a_t * h_{t+1} + b_t, h_L = 0. Overwrites and returns ``b``. No autograd.

    Chunks of T ~ √L steps: a loop over the T positions updates every chunk at once (each slice is
    contiguous), a loop over the chunks carries the state across chunk borders, and a last loop over the
    T positions adds the carried state, decayed, inside every chunk.
    """
    L = a.shape[0]
    T = _chunk_len(L)
    nc = -(-L // T)
    pad = nc * T - L
    if pad:
        a = torch.cat([a, a.new_ones((pad,) + a.shape[1:])]) if not reverse else torch.cat([a.new_ones((pad,) + a.shape[1:]), a])
        zeros = b.new_zeros((pad,) + b.shape[1:])
        b = torch.cat([b, zeros]) if not reverse else torch.cat([zeros, b])
    rest = a.shape[1:]
    a = a.reshape(nc, T, *rest)
    h = b.reshape(nc, T, *rest)
    steps = range(1, T) if not reverse else range(T - 2, -1, -1)
    prev = -1 if not reverse else 1
    for t in steps:  # inside every chunk at once
        h[:, t].addcmul_(a[:, t], h[:, t + prev])
    if nc > 1:
        decay = a[:, 0].clone()  # product of a over each chunk
        for t in range(1, T):
            decay.mul_(a[:, t])
        last = T - 1 if not reverse else 0
        carry = torch.zeros_like(h[:, 0])  # the state entering each chunk
        chunks = range(1, nc) if not reverse else range(nc - 2, -1, -1)
        for c in chunks:
            p = c - 1 if not reverse else c + 1
            carry[c] = torch.addcmul(h[p, last], decay[p], carry[p])  # no out= into a slice: torch.compile breaks there
        x = carry
        for t in (range(T) if not reverse else range(T - 1, -1, -1)):
            x = a[:, t] * x
            h[:, t].add_(x)
    h = h.reshape(nc * T, *rest)
    if pad:
        h = h[:L] if not reverse else h[pad:]
    return h


def _block_size(Bsz: int, dim: int, L: int, N: int, device: torch.device) -> int:
    """Channels per block: on the CPU, (L, B, Db, N) blocks of ~1M elements stay in cache. One block when
    exported: the batch size is symbolic there, and a block count derived from it would fix it."""
    if device.type != "cpu" or exporting():
        return dim
    return max(1, min(dim, (1 << 20) // max(1, Bsz * L * N)))


def _bc_block(X: torch.Tensor, d0: int, d1: int) -> torch.Tensor:
    """The channel block of a time-major B or C (forms constant over channels broadcast)."""
    return X if X.shape[2] == 1 else X[:, :, d0:d1]


def _states(dl, uu, Ab, Bb):
    """exp(delta A) and the states h, both (L, B, Db, N), for one channel block."""
    dA = torch.exp(dl[..., None] * Ab)
    h = _chunk_scan(dA, (dl * uu)[..., None] * Bb)
    return dA, h


class _SelectiveScanFn(torch.autograd.Function):
    """y_t = <h_t, C_t> with h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t, time-major, in channel blocks.

    u, delta: (L, B, D); A: (D, N); B, C: (L or 1, B or 1, D or 1, N). Nothing of size (L, B, D, N) is
    kept for backward: each block's states are recomputed there, and the state gradient is the same
    scan run backwards in time.
    """

    @staticmethod
    def forward(ctx, u, delta, A, Bx, Cx):
        L, Bsz, dim = u.shape
        N = A.shape[1]
        y = u.new_empty(L, Bsz, dim)
        last = u.new_empty(Bsz, dim, N)
        step = _block_size(Bsz, dim, L, N, u.device)
        for d0 in range(0, dim, step):
            d1 = min(dim, d0 + step)
            _, h = _states(delta[:, :, d0:d1], u[:, :, d0:d1], A[d0:d1], _bc_block(Bx, d0, d1))
            y[:, :, d0:d1] = (h * _bc_block(Cx, d0, d1)).sum(-1)
            last[:, d0:d1] = h[-1]
        ctx.save_for_backward(u, delta, A, Bx, Cx)
        ctx.mark_non_differentiable(last)
        return y, last

    @staticmethod
    def backward(ctx, gy, _glast):
        with no_autocast(gy.device):
            return _SelectiveScanFn._backward(ctx, gy)

    @staticmethod
    def _backward(ctx, gy):
        u, delta, A, Bx, Cx = ctx.saved_tensors
        L, Bsz, dim = u.shape
        N = A.shape[1]
        gu, gdelta, gA = torch.empty_like(u), torch.empty_like(delta), torch.empty_like(A)
        gB = torch.zeros_like(Bx) if ctx.needs_input_grad[3] else None
        gC = torch.zeros_like(Cx) if ctx.needs_input_grad[4] else None
        step = _block_size(Bsz, dim, L, N, u.device)
        for d0 in range(0, dim, step):
            d1 = min(dim, d0 + step)
            dl, uu, Ab = delta[:, :, d0:d1], u[:, :, d0:d1], A[d0:d1]
            Bb, Cb = _bc_block(Bx, d0, d1), _bc_block(Cx, d0, d1)
            dA, h = _states(dl, uu, Ab, Bb)
            g = gy[:, :, d0:d1, None]
            if gC is not None:
                _accumulate(gC, d0, d1, g * h)
            # dh_t = g_t C_t + a_{t+1} dh_{t+1}: the scan backwards in time with a shifted by one.
            a_next = torch.empty_like(dA)
            a_next[:-1] = dA[1:]
            a_next[-1] = 0
            dh = _chunk_scan(a_next, g * Cb, reverse=True)
            gdA = torch.empty_like(dh)  # gradient of delta*A: dh_t h_{t-1} exp(delta_t A)
            gdA[0] = 0
            torch.mul(dh[1:], h[:-1], out=gdA[1:])
            gdA.mul_(dA)
            gA[d0:d1] = torch.einsum("lbdn,lbd->dn", gdA, dl)
            dhB = (dh * Bb).sum(-1)  # gradient of delta*u
            gdelta[:, :, d0:d1] = torch.einsum("lbdn,dn->lbd", gdA, Ab) + dhB * uu
            gu[:, :, d0:d1] = dhB * dl
            if gB is not None:
                dh.mul_((dl * uu)[..., None])
                _accumulate(gB, d0, d1, dh)
        return gu, gdelta, gA, gB, gC


def _accumulate(gX: torch.Tensor, d0: int, d1: int, g: torch.Tensor) -> None:
    """Add a block's (L, B, Db, N) gradient into a time-major B/C gradient of any broadcast shape."""
    red = [i for i in (0, 1) if gX.shape[i] == 1]
    if gX.shape[2] == 1:
        gX += g.sum(dim=red + [2], keepdim=True)
    else:
        gX[:, :, d0:d1] += g.sum(dim=red, keepdim=True) if red else g


def _time_major_bc(X: torch.Tensor, dim: int, dtype) -> torch.Tensor:
    """B or C as a time-major tensor broadcastable to (L, B, D, N)."""
    X = X.to(dtype)
    if X.dim() == 2:  # (D, N)
        return X[None, None]
    if X.dim() == 3:  # (B, N, L)
        return X.permute(2, 0, 1)[:, :, None, :]
    G = X.shape[1]  # (B, G, N, L)
    return X.repeat_interleave(dim // G, dim=1).permute(3, 0, 1, 2)


class _TimeMajorBC(torch.autograd.Function):
    """_time_major_bc, contiguous, with a gradient folded back to B's or C's own shape and dtype."""

    @staticmethod
    def forward(ctx, X, dim, dtype):
        ctx.shape, ctx.dim, ctx.dtype_in = X.shape, dim, X.dtype
        return _time_major_bc(X, dim, dtype).contiguous()

    @staticmethod
    def backward(ctx, g):
        if len(ctx.shape) == 2:  # (1, 1, D, N) -> (D, N)
            r = g[0, 0]
        elif len(ctx.shape) == 3:  # (L, B, 1, N) -> (B, N, L)
            r = g[:, :, 0].permute(1, 2, 0)
        else:  # (L, B, D, N) -> (B, G, N, L)
            G = ctx.shape[1]
            gg = g.permute(1, 2, 3, 0)
            r = gg.reshape(gg.shape[0], G, ctx.dim // G, *gg.shape[2:]).sum(2)
        return r.to(ctx.dtype_in), None, None


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False):
    dtype_in = u.dtype
    dtype, delta = _prepare(u, delta, A, delta_bias, delta_softplus)
    dim = u.shape[1]
    y, last = _SelectiveScanFn.apply(u.to(dtype).permute(2, 0, 1), delta.permute(2, 0, 1), A.to(dtype),
                                     _TimeMajorBC.apply(B, dim, dtype), _TimeMajorBC.apply(C, dim, dtype))
    out = _finish(y.permute(1, 2, 0), u, D, z, dtype, dtype_in)
    return (out, last) if return_last_state else out


def _mamba_fn(*args, **kwargs):
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn(*args, **kwargs)


def _triton_fn(*args, **kwargs):
    from .selective_scan_triton import selective_scan_triton

    return selective_scan_triton(*args, **kwargs)


_IMPORTS_ON_CUDA = {}


def _imports_on_cuda(package: str, probe) -> bool:
    """CUDA is available and ``probe()`` (an import) succeeds; decided once per process."""
    if package not in _IMPORTS_ON_CUDA:
        ok = False
        if module_present(package) and torch.cuda.is_available():
            try:
                probe()
                ok = True
            except (ImportError, OSError, RuntimeError):  # built for another torch, or no CUDA runtime
                ok = False
        _IMPORTS_ON_CUDA[package] = ok
    return _IMPORTS_ON_CUDA[package]


def _has_mamba():
    return _imports_on_cuda("mamba_ssm", lambda: __import__("mamba_ssm.ops.selective_scan_interface"))


def _has_triton():
    return _imports_on_cuda("triton", lambda: __import__("pointmap.ops.selective_scan_triton"))


register_backend("selective_scan", Backend(
    "mamba_ssm", _mamba_fn, available=_has_mamba, supports=lambda u: u.is_cuda,
    hint="install mamba-ssm on a CUDA machine: pip install --no-build-isolation mamba-ssm "
         "(or pip install --no-build-isolation 'pointmap[cuda]')"))
_SCAN_ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def selfcheck(kernel: Callable, reference: Callable, device: torch.device, tol: float = 1e-3) -> Optional[str]:
    """None when ``kernel`` gives ``reference``'s output and gradients (every input's) on a Mamba layer's
    arguments (B=2, D=8, L=64, N=4, float32, softplus deltas) on ``device``, within ``tol`` of each tensor's
    largest magnitude; else the worst relative differences."""
    results = []
    with torch.inference_mode(False), torch.enable_grad(), no_autocast(device):
        for fn in (kernel, reference):
            args = scan_inputs(2, 8, 64, 4, device=device, seed=1)  # fresh leaves for each
            out = fn(*(args[k] for k in _SCAN_ARGS), True, False)
            weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(device)
            (out * weight).sum().backward()
            results.append({"out": out.detach(), **{f"grad {k}": args[k].grad for k in _SCAN_ARGS}})
    bad = []
    for name, want in results[1].items():
        got = results[0][name]
        if got is None or got.shape != want.shape:
            bad.append(f"{name}: {'none' if got is None else tuple(got.shape)} instead of {tuple(want.shape)}")
            continue
        err = ((got.float() - want.float()).abs().max() / want.float().abs().max().clamp_min(1e-6)).item()
        if not err <= tol:  # NaN too
            bad.append(f"{name} off by {err:.3g} of its largest value")
    return "; ".join(bad) or None


register_backend("selective_scan", Backend(
    "triton", _triton_fn, available=_has_triton, supports=lambda u: u.is_cuda, selfcheck=selfcheck,
    hint="the Triton kernel needs a CUDA device and triton (shipped with CUDA builds of torch: pip install "
         "triton); on a CPU, TRITON_INTERPRET=1 runs it through pointmap.ops.selective_scan_triton directly"))
register_backend("selective_scan", Backend("torch", selective_scan_torch, available=lambda: True))
register_backend("selective_scan", Backend("reference", selective_scan_ref, available=lambda: True))


def _check(u, delta, A, B, C, D, z, delta_bias):
    if not isinstance(u, torch.Tensor) or u.dim() != 3:
        raise ValueError(f"u must be a (B, D, L) tensor, got {getattr(u, 'shape', type(u))}")
    if not u.is_floating_point():
        raise ValueError(f"u must be a floating-point tensor, got dtype {u.dtype}")
    Bsz, dim, L = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta must have the shape of u {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.is_complex():
        raise ValueError("complex A is not supported; pass a real A of shape (D, N)")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must have shape (D={dim}, N), got {tuple(A.shape)}")
    N = A.shape[1]
    for name, X in (("B", B), ("C", C)):
        ok = (X.dim() == 2 and tuple(X.shape) == (dim, N)) or \
             (X.dim() == 3 and tuple(X.shape) == (Bsz, N, L)) or \
             (X.dim() == 4 and X.shape[0] == Bsz and tuple(X.shape[2:]) == (N, L) and dim % X.shape[1] == 0)
        if not ok:
            raise ValueError(f"{name} must have shape ({dim}, {N}), ({Bsz}, {N}, {L}) or ({Bsz}, G, {N}, {L}) "
                             f"with G dividing {dim}; got {tuple(X.shape)}")
    for name, X in (("D", D), ("delta_bias", delta_bias)):
        if X is not None and tuple(X.shape) != (dim,):
            raise ValueError(f"{name} must have shape ({dim},), got {tuple(X.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must have the shape of u {tuple(u.shape)}, got {tuple(z.shape)}")


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto"):
    """Mamba's selective scan; see the module docstring for shapes. Differentiable in every input."""
    _check(u, delta, A, B, C, D, z, delta_bias)
    fn = resolve("selective_scan", backend, u)
    with no_autocast(u.device):
        return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
