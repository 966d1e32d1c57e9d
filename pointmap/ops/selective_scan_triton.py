"""Selective scan in Triton: forward and backward kernels with mamba_ssm's ``selective_scan_fn`` signature.

Imported only when the ``triton`` backend of :func:`pointmap.ops.selective_scan` runs (``import pointmap``
never imports Triton). Semantics, shapes and dtypes are those of the module ``selective_scan``:
delta_bias and softplus on delta, D skip, z gating (``out = y * silu(z)``), B and C constant (D, N),
variable (B, N, L) or grouped (B, G, N, L), ``return_last_state``. The recurrence runs in float32
(float64 for float64 inputs) whatever the input dtype; the kernels write float32 and PyTorch casts the
output to u's dtype and each gradient to its input's dtype.

Kernels. One program per (batch element, block of ``BLOCK_D`` channels inside one group of B/C), a
loop over the L time steps with the (BLOCK_D, N) state in registers, so forward reads each input once
and writes the output once. Backward first reruns the forward kernel to store every state (B, D, L, N)
in float32 (transient: 400 MB for B=128 D=768 L=64 N=16), then walks time backwards with the state
gradient in registers. Gradients of A, D (and of constant B / C) are summed per batch element in the
kernel and over the batch in PyTorch; those of variable B / C per channel block in the kernel and over
the blocks of a group in PyTorch, so the result is deterministic (no atomics).

Under ``TRITON_INTERPRET=1`` (set before Triton is imported) the kernels run on CPU tensors: that is
how the tests check them without a GPU.
"""
import math

import torch
import triton
import triton.language as tl


@triton.jit
def _softplus(x):
    """log(1 + exp(x)) as torch's softplus (x itself above 20); log1p by Goldberg's trick, so that
    exp(x) below float32's epsilon is not rounded away."""
    e = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + e
    lp = tl.where(w == 1.0, e, tl.log(w) * (e / (w - 1.0)))
    return tl.where(x > 20.0, x, lp)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _program_channels(dpg, nblk, N, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's batch element, its channels (a block inside group g) and states, with masks."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_g = tl.program_id(1)
    g = pid_g // nblk
    offs = (pid_g % nblk) * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = offs < dpg
    n = tl.arange(0, BLOCK_N)
    n_mask = n < N
    return pid_b, pid_g, g, g * dpg + offs, d_mask, n, n_mask, d_mask[:, None] & n_mask[None, :]


@triton.jit
def _bc_setup(X_ptr, pid_b, g, dpg, dpg_x, d, n, dn_mask, sX_b, sX_g, sX_n, CONST: tl.constexpr,
              COMPUTE: tl.constexpr):
    """B or C: the (channels, N) tile when constant, else the pointers of its time step 0 (N,)."""
    if CONST:
        tile = tl.load(X_ptr + d[:, None] * sX_g + n[None, :] * sX_n, mask=dn_mask, other=0.0).to(COMPUTE)
        base = X_ptr
    else:
        tile = tl.zeros((1, 1), dtype=COMPUTE)
        base = X_ptr + pid_b * sX_b + ((g * dpg) // dpg_x) * sX_g + n * sX_n
    return tile, base


@triton.jit
def _bc_at(tile, base, t, sX_l, n_mask, CONST: tl.constexpr, COMPUTE: tl.constexpr):
    """B or C at time step t, broadcastable to (channels, N)."""
    if CONST:
        return tile
    else:
        return tl.load(base + t * sX_l, mask=n_mask, other=0.0).to(COMPUTE)[None, :]


@triton.jit
def _fwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, last_ptr, states_ptr,
                dim, L, N, dpg, nblk, dpg_b, dpg_c,
                sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
                B_CONST: tl.constexpr, C_CONST: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, STORE_STATES: tl.constexpr,
                COMPUTE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_b, pid_g, g, d, d_mask, n, n_mask, dn_mask = _program_channels(dpg, nblk, N, BLOCK_D, BLOCK_N)
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=dn_mask, other=0.0).to(COMPUTE)
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=d_mask, other=0.0).to(COMPUTE)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=d_mask, other=0.0).to(COMPUTE)
    B_tile, b_base = _bc_setup(B_ptr, pid_b, g, dpg, dpg_b, d, n, dn_mask, sB_b, sB_g, sB_n, B_CONST, COMPUTE)
    C_tile, c_base = _bc_setup(C_ptr, pid_b, g, dpg, dpg_c, d, n, dn_mask, sC_b, sC_g, sC_n, C_CONST, COMPUTE)
    row = pid_b * dim * L + d * L                       # (B, D, L) tensors, contiguous
    srow = (pid_b * dim + d[:, None]) * L * N + n[None, :]  # states (B, D, L, N)
    h = tl.zeros((BLOCK_D, BLOCK_N), dtype=COMPUTE)
    for t in range(L):
        uu = tl.load(u_ptr + row + t, mask=d_mask, other=0.0).to(COMPUTE)
        dl = tl.load(delta_ptr + row + t, mask=d_mask, other=0.0).to(COMPUTE)
        if HAS_BIAS:
            dl = dl + bias
        if SOFTPLUS:
            dl = _softplus(dl)
        Bt = _bc_at(B_tile, b_base, t, sB_l, n_mask, B_CONST, COMPUTE)
        Ct = _bc_at(C_tile, c_base, t, sC_l, n_mask, C_CONST, COMPUTE)
        h = tl.exp(dl[:, None] * A) * h + (dl * uu)[:, None] * Bt
        if STORE_STATES:
            tl.store(states_ptr + srow + t * N, h, mask=dn_mask)
        y = tl.sum(h * Ct, axis=1)
        if HAS_D:
            y = y + Dv * uu
        if HAS_Z:
            zz = tl.load(z_ptr + row + t, mask=d_mask, other=0.0).to(COMPUTE)
            y = y * zz * _sigmoid(zz)
        tl.store(out_ptr + row + t, y, mask=d_mask)
    tl.store(last_ptr + (pid_b * dim + d[:, None]) * N + n[None, :], h, mask=dn_mask)


@triton.jit
def _bwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, gout_ptr, states_ptr,
                gu_ptr, gdelta_ptr, gz_ptr, gA_ptr, gD_ptr, gB_ptr, gC_ptr,
                dim, L, N, dpg, nblk, dpg_b, dpg_c,
                sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
                B_CONST: tl.constexpr, C_CONST: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                COMPUTE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_b, pid_g, g, d, d_mask, n, n_mask, dn_mask = _program_channels(dpg, nblk, N, BLOCK_D, BLOCK_N)
    n_prog = tl.num_programs(1)
    dn_off = (pid_b * dim + d[:, None]) * N + n[None, :]  # (B, D, N) partial sums
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=dn_mask, other=0.0).to(COMPUTE)
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=d_mask, other=0.0).to(COMPUTE)
        gD_acc = tl.zeros((BLOCK_D,), dtype=COMPUTE)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=d_mask, other=0.0).to(COMPUTE)
    B_tile, b_base = _bc_setup(B_ptr, pid_b, g, dpg, dpg_b, d, n, dn_mask, sB_b, sB_g, sB_n, B_CONST, COMPUTE)
    C_tile, c_base = _bc_setup(C_ptr, pid_b, g, dpg, dpg_c, d, n, dn_mask, sC_b, sC_g, sC_n, C_CONST, COMPUTE)
    if B_CONST:
        gB_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=COMPUTE)
    if C_CONST:
        gC_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=COMPUTE)
    part = ((pid_b * n_prog + pid_g) * N + n) * L        # (B, programs, N, L) partial sums
    row = pid_b * dim * L + d * L
    srow = (pid_b * dim + d[:, None]) * L * N + n[None, :]
    gA_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=COMPUTE)
    carry = tl.zeros((BLOCK_D, BLOCK_N), dtype=COMPUTE)   # exp(delta_{t+1} A) * dh_{t+1}
    for i in range(L):
        t = L - 1 - i
        uu = tl.load(u_ptr + row + t, mask=d_mask, other=0.0).to(COMPUTE)
        dl_in = tl.load(delta_ptr + row + t, mask=d_mask, other=0.0).to(COMPUTE)
        if HAS_BIAS:
            dl_in = dl_in + bias
        dl = dl_in
        if SOFTPLUS:
            dl = _softplus(dl_in)
        Bt = _bc_at(B_tile, b_base, t, sB_l, n_mask, B_CONST, COMPUTE)
        Ct = _bc_at(C_tile, c_base, t, sC_l, n_mask, C_CONST, COMPUTE)
        dA = tl.exp(dl[:, None] * A)
        h = tl.load(states_ptr + srow + t * N, mask=dn_mask, other=0.0)
        h_prev = tl.load(states_ptr + srow + (t - 1) * N, mask=dn_mask & (t > 0), other=0.0)
        gy = tl.load(gout_ptr + row + t, mask=d_mask, other=0.0).to(COMPUTE)
        if HAS_Z:
            zz = tl.load(z_ptr + row + t, mask=d_mask, other=0.0).to(COMPUTE)
            sz = _sigmoid(zz)
            y = tl.sum(h * Ct, axis=1)
            if HAS_D:
                y = y + Dv * uu
            tl.store(gz_ptr + row + t, gy * y * sz * (1.0 + zz * (1.0 - sz)), mask=d_mask)
            gy = gy * zz * sz
        dh = gy[:, None] * Ct + carry
        if C_CONST:
            gC_acc += gy[:, None] * h
        else:
            tl.store(gC_ptr + part + t, tl.sum(gy[:, None] * h, axis=0), mask=n_mask)
        s = tl.sum(dh * Bt, axis=1)                      # gradient of delta * u
        gu = s * dl
        if HAS_D:
            gu += gy * Dv
            gD_acc += gy * uu
        x = dh * h_prev * dA                             # gradient of delta * A
        gdl = tl.sum(x * A, axis=1) + s * uu
        gA_acc += x * dl[:, None]
        if B_CONST:
            gB_acc += dh * (dl * uu)[:, None]
        else:
            tl.store(gB_ptr + part + t, tl.sum(dh * (dl * uu)[:, None], axis=0), mask=n_mask)
        if SOFTPLUS:
            gdl = gdl * _sigmoid(dl_in)
        tl.store(gu_ptr + row + t, gu, mask=d_mask)
        tl.store(gdelta_ptr + row + t, gdl, mask=d_mask)
        carry = dA * dh
    tl.store(gA_ptr + dn_off, gA_acc, mask=dn_mask)
    if HAS_D:
        tl.store(gD_ptr + pid_b * dim + d, gD_acc, mask=d_mask)
    if B_CONST:
        tl.store(gB_ptr + dn_off, gB_acc, mask=dn_mask)
    if C_CONST:
        tl.store(gC_ptr + dn_off, gC_acc, mask=dn_mask)


BLOCK_D = 32  # channels per program on the GPU (unmeasured choice: 32 x N=16 states in 4 warps' registers)


def _bc_layout(X: torch.Tensor):
    """(constant?, groups, strides (batch, group or channel, n, l)) of B or C as the kernels index it."""
    if X.dim() == 2:  # (D, N): indexed by channel
        return True, 1, (0, X.stride(0), X.stride(1), 0)
    if X.dim() == 3:  # (B, N, L): one group
        return False, 1, (X.stride(0), 0, X.stride(1), X.stride(2))
    return False, X.shape[1], tuple(X.stride())


class _Plan:
    """Launch geometry shared by forward and backward."""

    def __init__(self, u, A, B, C, block_d):
        self.Bsz, self.dim, self.L = u.shape
        self.N = A.shape[1]
        self.b_const, gb, self.sB = _bc_layout(B)
        self.c_const, gc, self.sC = _bc_layout(C)
        self.gb, self.gc = gb, gc
        self.groups = gb * gc // math.gcd(gb, gc)  # every program's channels lie in one group of B and of C
        self.dpg = self.dim // self.groups
        self.block_d = block_d or min(BLOCK_D, triton.next_power_of_2(self.dpg))
        self.nblk = triton.cdiv(self.dpg, self.block_d)
        self.grid = (self.Bsz, self.groups * self.nblk)
        self.compute = tl.float64 if u.dtype == torch.float64 else tl.float32
        self.acc_dtype = torch.float64 if u.dtype == torch.float64 else torch.float32

    def common(self):
        return (self.dim, self.L, self.N, self.dpg, self.nblk, self.dim // self.gb, self.dim // self.gc,
                *self.sB, *self.sC)

    def meta(self, has_d, has_z, has_bias, softplus):
        return dict(B_CONST=self.b_const, C_CONST=self.c_const, HAS_D=has_d, HAS_Z=has_z, HAS_BIAS=has_bias,
                    SOFTPLUS=bool(softplus), COMPUTE=self.compute, BLOCK_D=self.block_d,
                    BLOCK_N=max(2, triton.next_power_of_2(self.N)), num_warps=4)


def _forward(plan, u, delta, A, B, C, D, z, delta_bias, softplus, store_states):
    # written in the compute dtype and cast by PyTorch (round to nearest even): Triton's interpreter
    # truncates float32 -> bfloat16 where compiled Triton rounds, and the tests must see what the GPU does
    out = torch.empty_like(u, dtype=plan.acc_dtype)
    last = u.new_empty((plan.Bsz, plan.dim, plan.N), dtype=plan.acc_dtype)
    states = (u.new_empty((plan.Bsz, plan.dim, plan.L, plan.N), dtype=plan.acc_dtype) if store_states
              else last)
    _fwd_kernel[plan.grid](u, delta, A, B, C, D if D is not None else u, z if z is not None else u,
                           delta_bias if delta_bias is not None else u, out, last, states, *plan.common(),
                           STORE_STATES=store_states,
                           **plan.meta(D is not None, z is not None, delta_bias is not None, softplus))
    return out, last, states


def _fold_bc(part: torch.Tensor, X: torch.Tensor, const: bool, groups: int, plan) -> torch.Tensor:
    """The kernel's partial sums of B's or C's gradient, summed to X's shape and dtype."""
    if const:  # (B, D, N) -> (D, N)
        return part.sum(0).to(X.dtype)
    per = part.reshape(plan.Bsz, groups, -1, plan.N, plan.L).sum(2)  # (B, G, N, L)
    return (per[:, 0] if X.dim() == 3 else per).to(X.dtype)


class _TritonScanFn(torch.autograd.Function):

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, block_d):
        u, delta, A = u.contiguous(), delta.contiguous(), A.contiguous()
        z = z.contiguous() if z is not None else None
        C_ = C.contiguous() if C.dim() == 2 else C
        B_ = B.contiguous() if B.dim() == 2 else B
        plan = _Plan(u, A, B_, C_, block_d)
        out, last, _ = _forward(plan, u, delta, A, B_, C_, D, z, delta_bias, softplus, store_states=False)
        out = out.to(u.dtype)
        ctx.save_for_backward(u, delta, A, B_, C_, D, z, delta_bias)
        ctx.plan, ctx.softplus = plan, softplus
        ctx.mark_non_differentiable(last)
        return out, last

    @staticmethod
    def backward(ctx, gout, _glast):
        u, delta, A, B, C, D, z, delta_bias = ctx.saved_tensors
        plan = ctx.plan
        _, _, states = _forward(plan, u, delta, A, B, C, D, z, delta_bias, ctx.softplus, store_states=True)
        acc = plan.acc_dtype
        gu = torch.empty_like(u, dtype=acc)
        gdelta = torch.empty_like(u, dtype=acc)
        gz = torch.empty_like(u, dtype=acc) if z is not None else u
        per_channel = (plan.Bsz, plan.dim, plan.N)
        per_time = (plan.Bsz, plan.grid[1], plan.N, plan.L)
        gA = u.new_empty(per_channel, dtype=acc)
        gD = u.new_empty((plan.Bsz, plan.dim), dtype=acc) if D is not None else u
        gB = u.new_empty(per_channel if plan.b_const else per_time, dtype=acc)
        gC = u.new_empty(per_channel if plan.c_const else per_time, dtype=acc)
        _bwd_kernel[plan.grid](u, delta, A, B, C, D if D is not None else u, z if z is not None else u,
                               delta_bias if delta_bias is not None else u, gout.contiguous(), states,
                               gu, gdelta, gz, gA, gD, gB, gC, *plan.common(),
                               **plan.meta(D is not None, z is not None, delta_bias is not None, ctx.softplus))
        return (gu.to(u.dtype), gdelta.to(delta.dtype), gA.sum(0).to(A.dtype),
                _fold_bc(gB, B, plan.b_const, plan.gb, plan), _fold_bc(gC, C, plan.c_const, plan.gc, plan),
                gD.sum(0).to(D.dtype) if D is not None else None,
                gz.to(z.dtype) if z is not None else None,
                gdelta.sum((0, 2)).to(delta_bias.dtype) if delta_bias is not None else None,
                None, None)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False, block_d=None):
    """The Triton backend of :func:`pointmap.ops.selective_scan` (same arguments and result).

    block_d: channels per program (default: up to 32, the next power of two of the channels per group);
        tests lower it to make several programs share a group.
    """
    out, last = _TritonScanFn.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, block_d)
    return (out, last) if return_last_state else out
