"""A Mamba (S6) mixer in PyTorch with mamba_ssm's ``Mamba`` parameter names and shapes.

The default (unidirectional) mixer's state_dict has exactly the keys and shapes of
``mamba_ssm.modules.mamba_simple.Mamba`` (``in_proj.weight``, ``conv1d.weight``, ``conv1d.bias``,
``x_proj.weight``, ``dt_proj.weight``, ``dt_proj.bias``, ``A_log``, ``D``, ``out_proj.weight``), so
weights move between the two with ``load_state_dict``. The scan is ``pointmap.ops.selective_scan``,
which uses mamba-ssm's kernel on CUDA where it is installed and a PyTorch scan elsewhere.

Bidirectional modes keep ``in_proj`` and ``out_proj`` shared and give the second scan its own
``conv1d_b``, ``x_proj_b``, ``dt_proj_b``, ``A_b_log``, ``D_b`` (Vim's / Mamba3D's names):

- ``"sequence"`` (or ``True``): the second scan runs over the reversed sequence (Vim); its output is
  reversed back and the two are summed (``merge="mean"``: averaged, as the MAP 2D release does).
- ``"channel"``: the second scan runs over the same sequence with the 2·d_inner channels of
  ``in_proj``'s output reversed (so x and z swap halves), its output reversed back along channels and
  summed (Mamba3D's "bimamba v4", used by the released MAP 3D code).
"""
import math
from typing import Union

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from pointmap.ops import selective_scan

from ..errors import UserError
from .block import Block

_DIRECTIONS = {False: None, None: None, "none": None, True: "sequence", "sequence": "sequence",
               "channel": "channel"}


def float32_a(a_log: torch.Tensor) -> torch.Tensor:
    """A = −exp(A_log), formed in float32 whatever the module's dtype, as mamba_ssm's ``Mamba`` does
    (``A_log.float()``). Its last bit follows the CPU's float32 ``exp`` (MKL's code paths differ by one ulp
    between CPUs), so a float64 forward agrees with one made on another CPU to about 1e-9, not 1e-15
    (``tools/fidelity.py`` measures it)."""
    return -torch.exp(a_log.float())


def _dt_bias(d_inner: int, dt_min: float, dt_max: float, dt_init_floor: float) -> torch.Tensor:
    """dt log-uniform in [dt_min, dt_max], floored, then inverse-softplus (mamba's dt_proj.bias)."""
    dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))


class MambaMixer(nn.Module):
    """Selective-state-space mixer, (B, L, C) → (B, L, C).

    Args:
        d_model: channels C.
        d_state: SSM state size N (16).
        d_conv: causal depthwise convolution width (4).
        expand: d_inner = expand · C (2).
        dt_rank: rank of the Δ projection; ``"auto"`` = ceil(C / 16).
        dt_min, dt_max, dt_init_floor, dt_scale: Δ initialisation (mamba's defaults).
        bidirectional: ``False``, ``True``/``"sequence"`` or ``"channel"`` (see the module docstring).
        scan_backend: passed to ``selective_scan`` as ``backend``.
        merge: how the two scans' gated outputs are combined before ``out_proj``: ``"sum"`` (Vim's, Mamba3D's)
            or ``"mean"`` (the MAP 2D release's ``(fwd + bwd) / 2``).

    ``a_float32`` (an attribute, True): A = −exp(A_log) is formed in float32 whatever the module's dtype, as
    mamba_ssm does; a float64 fidelity test turns it off to use A exactly as a peer's run recorded it.
    """

    MERGES = ("sum", "mean")

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: Union[int, str] = "auto", dt_min: float = 1e-3, dt_max: float = 1e-1,
                 dt_init_floor: float = 1e-4, dt_scale: float = 1.0, conv_bias: bool = True,
                 bias: bool = False, bidirectional: Union[bool, str] = False, scan_backend: str = "auto",
                 merge: str = "sum"):
        super().__init__()
        if bidirectional not in _DIRECTIONS:
            raise UserError(f"bidirectional must be one of False, True, 'sequence', 'channel'; got {bidirectional!r}")
        if merge not in self.MERGES:
            raise UserError(f"merge must be one of {list(self.MERGES)}; got {merge!r}")
        self.merge = merge
        self.a_float32 = True
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.bidirectional = _DIRECTIONS[bidirectional]
        self.scan_backend = scan_backend
        self._init = dict(dt_min=dt_min, dt_max=dt_max, dt_init_floor=dt_init_floor, dt_scale=dt_scale)

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self._make_ssm("", conv_bias)
        if self.bidirectional:
            self._make_ssm("_b", conv_bias)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def _make_ssm(self, suffix: str, conv_bias: bool) -> None:
        """Creates conv1d, x_proj, dt_proj, A_log, D (with ``suffix``) and initialises them like mamba."""
        di, n, r = self.d_inner, self.d_state, self.dt_rank
        conv = nn.Conv1d(di, di, self.d_conv, groups=di, padding=self.d_conv - 1, bias=conv_bias)
        x_proj = nn.Linear(di, r + 2 * n, bias=False)
        dt_proj = nn.Linear(r, di, bias=True)
        std = r ** -0.5 * self._init["dt_scale"]
        with torch.no_grad():
            nn.init.uniform_(dt_proj.weight, -std, std)
            dt_proj.bias.copy_(_dt_bias(di, self._init["dt_min"], self._init["dt_max"],
                                        self._init["dt_init_floor"]))
        dt_proj.bias._no_reinit = True
        a_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(di, 1))
        a_log._no_weight_decay = True
        d = nn.Parameter(torch.ones(di))
        d._no_weight_decay = True
        setattr(self, "conv1d" + suffix, conv)
        setattr(self, "x_proj" + suffix, x_proj)
        setattr(self, "dt_proj" + suffix, dt_proj)
        setattr(self, "A_b_log" if suffix else "A_log", a_log)
        setattr(self, "D" + suffix, d)

    def _ssm(self, xz: torch.Tensor, suffix: str) -> torch.Tensor:
        """xz: (B, 2·d_inner, L) → y: (B, d_inner, L), one direction."""
        conv = getattr(self, "conv1d" + suffix)
        x_proj = getattr(self, "x_proj" + suffix)
        dt_proj = getattr(self, "dt_proj" + suffix)
        a_log = getattr(self, "A_b_log" if suffix else "A_log")
        d = getattr(self, "D" + suffix)
        length = xz.shape[-1]
        x, z = xz.chunk(2, dim=1)
        x = F.silu(conv(x)[..., :length])                                 # causal: keep the first L
        dt, b, c = x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, dt_proj.weight).transpose(1, 2)              # (B, d_inner, L); bias in scan
        a = float32_a(a_log) if self.a_float32 else -torch.exp(a_log)
        return selective_scan(x, delta, a, b.transpose(1, 2).contiguous(), c.transpose(1, 2).contiguous(),
                              d.float(), z=z, delta_bias=dt_proj.bias.float(), delta_softplus=True,
                              backend=self.scan_backend)

    def no_weight_decay(self) -> set:
        """A_log, D (and the backward scan's A_b_log, D_b): kept out of weight decay, as in mamba-ssm."""
        return {name for name, p in self.named_parameters(recurse=False) if getattr(p, "_no_weight_decay", False)}

    def forward(self, x: torch.Tensor, ctx=None) -> torch.Tensor:
        """x: (B, L, C) → (B, L, C). ``ctx`` is accepted for the ``Block`` interface and unused."""
        xz = self.in_proj(x).transpose(1, 2)                              # (B, 2·d_inner, L)
        y = self._ssm(xz, "")
        if self.bidirectional == "sequence":
            y = y + self._ssm(xz.flip(-1), "_b").flip(-1)
        elif self.bidirectional == "channel":
            y = y + self._ssm(xz.flip(1), "_b").flip(1)
        if self.bidirectional and self.merge == "mean":
            y = y / 2
        return self.out_proj(y.transpose(1, 2).to(x.dtype))

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, "
                f"d_inner={self.d_inner}, dt_rank={self.dt_rank}, bidirectional={self.bidirectional}"
                + (f", merge={self.merge}" if self.bidirectional else ""))


def mamba_block(dim: int, drop_path: float = 0.0, norm_layer=nn.LayerNorm, mlp_ratio: float = 0.0,
                **mixer_kwargs) -> Block:
    """A pre-norm Mamba block: ``Block(dim, MambaMixer(dim, **mixer_kwargs))``; an MLP if mlp_ratio > 0."""
    mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU) if mlp_ratio > 0 else None
    return Block(dim, MambaMixer(dim, **mixer_kwargs), mlp, norm_layer=norm_layer, drop_path=drop_path)
