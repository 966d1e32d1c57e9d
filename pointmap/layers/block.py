"""The generic pre-norm residual block and the context every mixer may read."""
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch
from timm.layers import DropPath
from torch import nn


@dataclass
class TokenContext:
    """What a mixer may need besides the tokens, shared by all blocks of one forward pass.

    Attributes:
        centers: (B, L - num_prefix, 3) coordinates of the non-prefix tokens, in sequence order.
        num_prefix: how many prefix tokens (a cls token) come first in the sequence.
        attn_mask: (L, L) bool, True where token i may attend to token j; None for full attention.
        cache: per-forward scratch space (e.g. neighbour indices computed once for all blocks).
    """

    centers: Optional[torch.Tensor] = None
    num_prefix: int = 0
    attn_mask: Optional[torch.Tensor] = None
    cache: dict = field(default_factory=dict)


def linear_rates(rate: float, n: int) -> List[float]:
    """``n`` stochastic-depth rates rising linearly from 0 to ``rate`` (plain floats, so building a model
    on the meta device works)."""
    return [rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]


class Block(nn.Module):
    """Pre-norm residual block: ``x + DropPath(mixer(norm1(x)))``, then ``x + DropPath(mlp(norm2(x)))``.

    One class serves Transformer blocks (mixer = attention, mlp = MLP), Mamba blocks (mixer = Mamba,
    no mlp) and the Mamba3D-style blocks of ``map3d_official`` (mixer = local norm pooling, second
    sub-layer = a bidirectional SSM or a whole Transformer block).

    Args:
        dim: channels C.
        mixer: module called as ``mixer(x, ctx)``, (B, L, C) → (B, L, C).
        mlp: optional second sub-layer called as ``mlp(x)``, (B, L, C) → (B, L, C).
        norm_layer: callable ``norm_layer(dim)``.
        drop_path: stochastic depth rate of both residual branches.
    """

    def __init__(self, dim: int, mixer: nn.Module, mlp: Optional[nn.Module] = None,
                 norm_layer: Callable[[int], nn.Module] = nn.LayerNorm, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.mixer = mixer
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if mlp is not None:
            self.norm2 = norm_layer(dim)
            self.mlp = mlp
            self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        else:
            self.mlp = None

    def forward(self, x: torch.Tensor, ctx: Optional[TokenContext] = None) -> torch.Tensor:
        """x: (B, L, C) → (B, L, C)."""
        x = x + self.drop_path1(self.mixer(self.norm1(x), ctx))
        if self.mlp is not None:
            x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x
