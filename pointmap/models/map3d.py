"""``map3d_official``: the released MAP 3D encoder (Mamba3D blocks + attention blocks).

Given the release's weights, the preset computes what the release computes (every block, tested to
1e-10 in float64 on outputs of the release's own code), including pointnet2_ops' FPS (never a point within
1e-3 of the origin after the first) and the LNP's one standard deviation over the whole batch, which makes
a cloud's features depend on the rest of its batch, as in the release. One difference, on purpose: the
mean term of the pooled feature is the per-sample mean; the release adds sample 0's mean to every sample
(``x[:, 1:].mean(1)[0]``), so its logits agree with the preset's for the first cloud of a batch and for a
batch of one, not for the others.
"""
from typing import Optional

from torch import nn

from pointmap.layers import Block, linear_rates, LocalNormPool, MambaMixer, transformer_block

from .hybrid_encoder import HybridEncoder
from .presets import _build, build_point_model
from .registry import register_model


def mamba3d_block(dim: int, drop_path: float = 0.0, lnp_k: int = 4) -> Block:
    """``x + DropPath(LNP(LN(x)))``, then ``x + DropPath(BiSSM(LN(x)))`` with the channel-flipped bi-SSM."""
    return Block(dim, LocalNormPool(dim, lnp_k), MambaMixer(dim, bidirectional="channel"),
                 norm_layer=nn.LayerNorm, drop_path=drop_path)


def lnp_attention_block(dim: int, drop_path: float = 0.0, lnp_k: int = 4, num_heads: int = 6,
                        mlp_ratio: float = 4.0) -> Block:
    """``x + DropPath(LNP(LN(x)))``, then ``x + DropPath(ViTBlock(LN(x)))`` (a whole pre-norm block)."""
    vit = transformer_block(dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=False)
    return Block(dim, LocalNormPool(dim, lnp_k), vit, norm_layer=nn.LayerNorm, drop_path=drop_path)


def map3d_drop_path(layout: str, rate: float) -> list:
    """linspace(0, rate) over the Mamba blocks; the j-th attention block reuses the j-th value."""
    mamba = linear_rates(rate, max(1, layout.count("M")))
    rates, m, t = [], 0, 0
    for letter in layout:
        if letter == "M":
            rates.append(mamba[m])
            m += 1
        else:
            rates.append(mamba[min(t, len(mamba) - 1)])
            t += 1
    return rates


@register_model(forwards=(build_point_model, HybridEncoder))
def map3d_official(num_classes: Optional[int] = None, *, layout: str = "MMMT" * 4, lnp_k: int = 4,
                   num_heads: int = 6, drop_path_rate: float = 0.1, **kwargs) -> nn.Module:
    """The released MAP 3D architecture: G=128, K=32, FPS order, SiLU positional MLP, cls token,
    (MMMT)×4 of Mamba3D / LNP-attention blocks, head on [cls; max + mean]."""
    rate = drop_path_rate
    cfg = dict(embed_dim=384, layout=layout, num_group=128, group_size=32, order="none", skip_near_origin=True,
               pos_act_layer=nn.SiLU, drop_path_rates=map3d_drop_path(layout, rate),
               block_fns={"M": lambda d, drop_path: mamba3d_block(d, drop_path, lnp_k),
                          "T": lambda d, drop_path: lnp_attention_block(d, drop_path, lnp_k, num_heads)},
               cls_token=True, global_pool="cls_maxmean")
    return _build(cfg, num_classes, kwargs)
