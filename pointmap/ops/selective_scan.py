"""Selective scan (Mamba's S6 recurrence), with the signature and result of mamba_ssm's selective_scan_fn.

    delta' = softplus(delta + delta_bias) (if delta_softplus) else delta + delta_bias
    h_t    = exp(delta'_t A) * h_{t-1} + delta'_t B_t u_t          (per channel d and state n)
    y_t    = <h_t, C_t> + D u_t;  out = y * silu(z) if z is given

u, delta, z: (B, D, L); A: (D, N) real; B, C: (D, N) (constant), (B, N, L) or (B, G, N, L) (G groups of
channels); D, delta_bias: (D,). Returns out (B, D, L) [, last_state (B, D, N)].

Backends: ``mamba_ssm`` (its CUDA kernel, when importable and the tensors are on CUDA), ``torch``
(a chunked scan: a short loop inside chunks of ~√L steps, every chunk at once, then a short loop over
chunks to carry states across; its backward is the same scan run in reverse, so nothing but the states
is stored), ``reference`` (step by step, the oracle).
"""
import importlib.util
import math

import torch
import torch.nn.functional as F

from ._backend import Backend, register_backend, resolve


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _expand_bc(X: torch.Tensor, dim: int, dtype) -> torch.Tensor:
    """B or C as a tensor broadcastable to (B, D, L, N)."""
    X = X.to(dtype)
    if X.dim() == 2:  # (D, N): the same at every step
        return X[None, :, None, :]
    if X.dim() == 3:  # (B, N, L)
        return X.transpose(1, 2)[:, None]
    G = X.shape[1]  # (B, G, N, L)
    return X.repeat_interleave(dim // G, dim=1).transpose(2, 3)


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


def _chunk_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + b_t along dim 2 of (B, D, L, N) tensors, h_{-1} = 0. No autograd.

    Chunks of T ~ √L steps: a loop over the T positions updates every chunk at once, then a loop over
    the chunks carries each chunk's final state into the next (scaled by the running product of a).
    """
    Bsz, Dd, L, N = a.shape
    T = math.isqrt(L - 1) + 1 if L > 1 else 1
    nc = -(-L // T)
    pad = nc * T - L
    if pad:
        a = F.pad(a, (0, 0, 0, pad), value=1.0)
        b = F.pad(b, (0, 0, 0, pad))
    a = a.reshape(Bsz, Dd, nc, T, N)
    h = b.reshape(Bsz, Dd, nc, T, N).clone()
    for t in range(1, T):  # inside every chunk at once
        h[:, :, :, t].addcmul_(a[:, :, :, t], h[:, :, :, t - 1])
    if nc > 1:
        P = torch.cumprod(a, dim=3)  # decay from each chunk's start
        carry = torch.zeros_like(h[:, :, :, 0])  # (B, D, nc, N): the state entering each chunk
        for c in range(1, nc):  # across chunks
            carry[:, :, c] = torch.addcmul(h[:, :, c - 1, T - 1], P[:, :, c - 1, T - 1], carry[:, :, c - 1])
        h.addcmul_(P, carry[:, :, :, None])
    h = h.reshape(Bsz, Dd, nc * T, N)
    return h[:, :, :L] if pad else h


def _shift_prev(x: torch.Tensor) -> torch.Tensor:
    """x_{t-1} along dim 2 (zero at t = 0)."""
    return F.pad(x[:, :, :-1], (0, 0, 1, 0))


def _block_size(Bsz: int, dim: int, L: int, N: int, device: torch.device) -> int:
    """Channels per block: on the CPU, (B, Db, L, N) blocks of ~1M elements stay in cache."""
    if device.type != "cpu":
        return dim
    return max(1, min(dim, (1 << 20) // max(1, Bsz * L * N)))


def _bc_block(X: torch.Tensor, d0: int, d1: int) -> torch.Tensor:
    """Slice the channel dim of an expanded B or C (constant-over-batch/time forms broadcast)."""
    return X if X.shape[1] == 1 else X[:, d0:d1]


class _SelectiveScanFn(torch.autograd.Function):
    """y_t = <h_t, C_t> with h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t, in channel blocks.

    Nothing of size (B, D, L, N) is kept for backward: each block's states are recomputed there, and
    the state gradient is the same scan run backwards in time.
    """

    @staticmethod
    def forward(ctx, u, delta, A, Bx, Cx):
        Bsz, dim, L = u.shape
        N = A.shape[1]
        y = u.new_empty(Bsz, dim, L)
        last = u.new_empty(Bsz, dim, N)
        step = _block_size(Bsz, dim, L, N, u.device)
        for d0 in range(0, dim, step):
            d1 = min(dim, d0 + step)
            dA = torch.exp(delta[:, d0:d1, :, None] * A[None, d0:d1, None, :])
            dBu = (delta[:, d0:d1] * u[:, d0:d1])[..., None] * _bc_block(Bx, d0, d1)
            h = _chunk_scan(dA, dBu)
            y[:, d0:d1] = (h * _bc_block(Cx, d0, d1)).sum(-1)
            last[:, d0:d1] = h[:, :, -1]
        ctx.save_for_backward(u, delta, A, Bx, Cx)
        ctx.mark_non_differentiable(last)
        return y, last

    @staticmethod
    def backward(ctx, gy, _glast):
        u, delta, A, Bx, Cx = ctx.saved_tensors
        Bsz, dim, L = u.shape
        N = A.shape[1]
        gu, gdelta, gA = torch.empty_like(u), torch.empty_like(delta), torch.empty_like(A)
        gB = torch.zeros_like(Bx) if ctx.needs_input_grad[3] else None
        gC = torch.zeros_like(Cx) if ctx.needs_input_grad[4] else None
        step = _block_size(Bsz, dim, L, N, u.device)
        for d0 in range(0, dim, step):
            d1 = min(dim, d0 + step)
            dl, uu, Ab = delta[:, d0:d1], u[:, d0:d1], A[d0:d1]
            Bb, Cb = _bc_block(Bx, d0, d1), _bc_block(Cx, d0, d1)
            dA = torch.exp(dl[..., None] * Ab[None, :, None, :])
            du = dl * uu
            h = _chunk_scan(dA, du[..., None] * Bb)
            g = gy[:, d0:d1, :, None]
            # dh_t = g_t C_t + a_{t+1} dh_{t+1}: the scan backwards in time.
            a_next = F.pad(dA[:, :, 1:], (0, 0, 0, 1)).flip(2)
            dh = _chunk_scan(a_next, (g * Cb).flip(2)).flip(2)
            if gC is not None:
                _accumulate(gC, d0, d1, g * h)
            gdA = dh * _shift_prev(h) * dA  # gradient of delta*A
            gA[d0:d1] = torch.einsum("bdln,bdl->dn", gdA, dl)
            dhB = (dh * Bb).sum(-1)  # gradient of delta*u
            gdelta[:, d0:d1] = torch.einsum("bdln,dn->bdl", gdA, Ab) + dhB * uu
            gu[:, d0:d1] = dhB * dl
            if gB is not None:
                _accumulate(gB, d0, d1, dh * du[..., None])
        return gu, gdelta, gA, gB, gC


def _accumulate(gX: torch.Tensor, d0: int, d1: int, g: torch.Tensor) -> None:
    """Add a block's (B, Db, L, N) gradient into an expanded B/C gradient of any broadcast shape."""
    red = [i for i in (0, 2) if gX.shape[i] == 1]
    if gX.shape[1] == 1:
        gX += g.sum(dim=[1] + red, keepdim=True)
    else:
        gX[:, d0:d1] += g.sum(dim=red, keepdim=True) if red else g


class _ExpandBC(torch.autograd.Function):
    """_expand_bc, contiguous, with a gradient that folds the broadcast back to B's or C's own shape."""

    @staticmethod
    def forward(ctx, X, dim, dtype):
        ctx.shape, ctx.dim, ctx.dtype_in = X.shape, dim, X.dtype
        return _expand_bc(X, dim, dtype).contiguous()

    @staticmethod
    def backward(ctx, g):
        if len(ctx.shape) == 2:  # (1, D, 1, N) -> (D, N)
            r = g[0, :, 0]
        elif len(ctx.shape) == 3:  # (B, 1, L, N) -> (B, N, L)
            r = g[:, 0].transpose(1, 2)
        else:  # (B, D, L, N) -> (B, G, N, L)
            G = ctx.shape[1]
            gg = g.transpose(2, 3)
            r = gg.reshape(gg.shape[0], G, ctx.dim // G, *gg.shape[2:]).sum(2)
        return r.to(ctx.dtype_in), None, None


def selective_scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False):
    dtype_in = u.dtype
    dtype, delta = _prepare(u, delta, A, delta_bias, delta_softplus)
    dim = u.shape[1]
    y, last = _SelectiveScanFn.apply(u.to(dtype).contiguous(), delta.contiguous(), A.to(dtype),
                                     _ExpandBC.apply(B, dim, dtype), _ExpandBC.apply(C, dim, dtype))
    out = _finish(y, u, D, z, dtype, dtype_in)
    return (out, last) if return_last_state else out


def _mamba_fn(*args, **kwargs):
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn(*args, **kwargs)


_MAMBA_STATE = {}


def _has_mamba():
    if "ok" not in _MAMBA_STATE:
        ok = False
        if importlib.util.find_spec("mamba_ssm") is not None and torch.cuda.is_available():
            try:
                from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
                ok = True
            except (ImportError, OSError, RuntimeError):  # built for another torch, or no CUDA runtime
                ok = False
        _MAMBA_STATE["ok"] = ok
    return _MAMBA_STATE["ok"]


register_backend("selective_scan", Backend(
    "mamba_ssm", _mamba_fn, available=_has_mamba, supports=lambda u: u.is_cuda,
    hint="install mamba-ssm on a CUDA machine: pip install --no-build-isolation mamba-ssm "
         "(or pip install --no-build-isolation 'pointmap[cuda]')"))
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
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
