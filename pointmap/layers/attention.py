"""Multi-head self-attention on ``F.scaled_dot_product_attention`` and the Transformer block."""
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from ..errors import UserError
from .block import Block, TokenContext


class Attention(nn.Module):
    """Multi-head self-attention, timm's parameter names (``qkv``, ``proj``).

    The mask comes from ``ctx.attn_mask``: (L, L) bool, True = may attend. ``fused_attn`` picks
    ``F.scaled_dot_product_attention``; set it to False to run the explicit softmax path (same result).
    """

    def __init__(self, dim: int, num_heads: int = 6, qkv_bias: bool = False, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise UserError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fused_attn = True
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, ctx: Optional[TokenContext] = None) -> torch.Tensor:
        """x: (B, L, C) → (B, L, C)."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        mask = ctx.attn_mask if ctx is not None else None
        drop = self.attn_drop if self.training else 0.0
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if mask is not None:
                attn = attn.masked_fill(~mask, float("-inf"))
            attn = F.dropout(attn.softmax(dim=-1), p=drop)
            x = attn @ v
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


def transformer_block(dim: int, num_heads: int = 6, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                      drop_path: float = 0.0, norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
                      proj_drop: float = 0.0, attn_drop: float = 0.0) -> Block:
    """A pre-norm Transformer block: ``Block(dim, Attention, Mlp)`` (GELU MLP, hidden ``mlp_ratio·dim``)."""
    return Block(dim,
                 Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop),
                 Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop),
                 norm_layer=norm_layer, drop_path=drop_path)
