"""``map3d_official`` (the released MAP 3D encoder: Mamba3D blocks + attention blocks) and ``mamba3d``
(Mamba3D's own classifier: the same Mamba3D blocks, no attention blocks), built by one builder.

Given the peer's weights, each preset computes what the peer's code computes (every block, tested to
1e-10 in float64 on outputs of the peers' own code), including pointnet2_ops' FPS (never a point within
1e-3 of the origin after the first) and the LNP's one standard deviation over the whole batch, which makes
a cloud's features depend on the rest of its batch, as in both peers. One difference by default, on
purpose: the mean term of the pooled feature is the per-sample mean; both peers add sample 0's mean to
every sample (``x[:, 1:].mean(1)[0]``), so their logits agree with the presets' for the first cloud of a
batch and for a batch of one, not for the others. ``global_pool="cls_maxmean_sample0"`` reproduces the
peers' pooling exactly (see :func:`~pointmap.models.classifier.pool_tokens`).
"""
from typing import Optional

from torch import nn

from pointmap.layers import Block, linear_rates, LocalNormPool, MambaMixer, transformer_block

from .hybrid_encoder import HybridEncoder
from .presets import _build, build_model
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


def _mamba3d_family(num_classes: Optional[int], layout: str, lnp_k: int, num_heads: int, drop_path_rate: float,
                    overrides: dict) -> nn.Module:
    """The one builder of Mamba3D's classifier and the MAP release: ``M`` a Mamba3D block, ``T`` an
    LNP-attention block; G=128, K=32, FPS order with pointnet2_ops' quirk, SiLU positional MLP at every
    block, cls token, head on [cls; max + mean]."""
    cfg = dict(embed_dim=384, layout=layout, num_group=128, group_size=32, order="none", skip_near_origin=True,
               pos_act_layer=nn.SiLU, drop_path_rates=map3d_drop_path(layout, drop_path_rate),
               block_fns={"M": lambda d, drop_path: mamba3d_block(d, drop_path, lnp_k),
                          "T": lambda d, drop_path: lnp_attention_block(d, drop_path, lnp_k, num_heads)},
               cls_token=True, global_pool="cls_maxmean")
    return _build(cfg, num_classes, overrides)


@register_model(forwards=(build_model, HybridEncoder))
def map3d_official(num_classes: Optional[int] = None, *, layout: str = "MMMT" * 4, lnp_k: int = 4,
                   num_heads: int = 6, drop_path_rate: float = 0.1, **kwargs) -> nn.Module:
    """The released MAP 3D architecture: G=128, K=32, FPS order, SiLU positional MLP, cls token,
    (MMMT)×4 of Mamba3D / LNP-attention blocks, head on [cls; max + mean]. 15 classes: 25,220,623
    parameters."""
    return _mamba3d_family(num_classes, layout, lnp_k, num_heads, drop_path_rate, kwargs)


@register_model(forwards=(build_model, HybridEncoder))
def mamba3d(num_classes: Optional[int] = None, *, layout: str = "M" * 12, lnp_k: int = 4,
            num_heads: int = 6, drop_path_rate: float = 0.1, **kwargs) -> nn.Module:
    """Mamba3D's own classifier (xhanxu/Mamba3D ``models/Mamba3D.py`` ``Mamba3D``): ``map3d_official``
    without the attention blocks, 12 Mamba3D blocks (LNP k=4 + channel-flipped bi-SSM), drop path
    linspace(0, ``drop_path_rate``, 12) (0.1, the ScanObjectNN configs'; its ModelNet40 config uses 0.2).
    15 classes: 16,927,759 parameters, 40 classes: 16,934,184, as Mamba3D's. Its checkpoints
    (``{"base_model": ...}``) load whole through ``load_checkpoint`` (format ``map3d``). Given Mamba3D's
    weights it computes Mamba3D's logits (tested to 1e-10 in float64 on outputs of Mamba3D's own code),
    with the per-sample pooling difference described in this module's docstring
    (``global_pool="cls_maxmean_sample0"`` reproduces Mamba3D's exactly)."""
    return _mamba3d_family(num_classes, layout, lnp_k, num_heads, drop_path_rate, kwargs)
