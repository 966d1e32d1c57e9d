"""The one builder of every preset (points and images) and the 3D presets."""
import numbers
from typing import Optional, Sequence

from torch import nn

from ..errors import UserError
from .classifier import HEAD_DEFAULTS, Classifier, check_pool
from .hybrid_encoder import HybridEncoder
from .partseg import SEG_HEADS, PartSegmenter, PointMAEPartSegmenter
from .registry import register_model


def build_model(num_classes: Optional[int] = None, *, encoder_cls=HybridEncoder, num_parts: Optional[int] = None,
                num_categories: int = 16, seg_head: str = "pointmap",
                cls_token: bool = HEAD_DEFAULTS["cls_token"], global_pool: str = HEAD_DEFAULTS["global_pool"],
                head_hidden: Sequence[int] = HEAD_DEFAULTS["head_hidden"],
                head_dropout: float = HEAD_DEFAULTS["head_dropout"], **encoder_kwargs) -> nn.Module:
    """The one builder of every preset, points and images: ``encoder_cls(**encoder_kwargs)`` alone
    (``num_classes=None``), in a :class:`~pointmap.models.classifier.Classifier` (``num_classes``; 0: no head,
    the pooled features), or, for points, with a part-segmentation head (``num_parts``, ``num_categories``):
    ``seg_head="pointmap"`` (:class:`~pointmap.models.partseg.PartSegmenter`) or ``"point_mae"``
    (Point-MAE's, :class:`~pointmap.models.partseg.PointMAEPartSegmenter`). The head arguments and their
    defaults are :data:`~pointmap.models.classifier.HEAD_DEFAULTS`."""
    if num_classes is not None and num_parts is not None:
        raise UserError(f"give num_classes ({num_classes}) or num_parts ({num_parts}), not both")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral)
                                    or num_classes < 0):
        raise UserError(f"num_classes must be an integer >= 0 (0: no head, the pooled features); got {num_classes!r}")
    if seg_head not in SEG_HEADS:
        raise UserError(f"seg_head must be one of {', '.join(SEG_HEADS)}; got {seg_head!r}")
    if seg_head != "pointmap" and num_parts is None:
        raise UserError(f"seg_head={seg_head!r} is a part-segmentation head: give num_parts")
    if num_parts is not None and encoder_cls.modality != "points":
        raise UserError(f"num_parts={num_parts}: part segmentation needs a point-cloud model, not "
                        f"{encoder_cls.modality}")
    if num_classes is not None:
        check_pool(global_pool, cls_token)
    encoder = encoder_cls(**encoder_kwargs)
    if num_parts is not None:
        seg_cls = PointMAEPartSegmenter if seg_head == "point_mae" else PartSegmenter
        return seg_cls(encoder, num_parts=num_parts, num_categories=num_categories)
    if num_classes is None:
        return encoder
    return Classifier(encoder, int(num_classes), cls_token=cls_token, global_pool=global_pool,
                      head_hidden=head_hidden, head_dropout=head_dropout)


def _build(defaults: dict, num_classes: Optional[int], overrides: dict) -> nn.Module:
    return build_model(num_classes, **{**defaults, **overrides})


@register_model(forwards=(build_model, HybridEncoder))
def hybridnet_s(num_classes: Optional[int] = None, **kwargs) -> nn.Module:
    """HybridNet-S: C=384, layout MMMTMMMTMMMT, hilbert order; head on [cls; max + mean].

    Its Mamba mixers scan both ways, as both MAP releases do, in the 2D release's form
    (``bidirectional="sequence"``, Vim's biscan: a second scan over the reversed token sequence with its
    own conv1d_b / x_proj_b / dt_proj_b / A_b_log / D_b, outputs summed), so every token sees every other
    one. The 3D release's form (Mamba3D's channel flip, ``"channel"``) runs its second scan in the same
    direction along the sequence, so a Mamba-only stack stays causal; ``bidirectional=False`` gives the
    one-way mixer."""
    cfg = dict(embed_dim=384, layout="MMMTMMMTMMMT", num_heads=6, num_group=64, group_size=32,
               order="hilbert", bidirectional="sequence", drop_path_rate=0.1, cls_token=True,
               global_pool="cls_maxmean")
    return _build(cfg, num_classes, kwargs)


@register_model(forwards=(build_model, HybridEncoder))
def pointmae(num_classes: Optional[int] = None, **kwargs) -> nn.Module:
    """Point-MAE's encoder and finetuning model (``PointTransformer``): 12 Transformer blocks (6 heads, no
    qkv bias), FPS order with pointnet2_ops' FPS (never a point within 1e-3 of the origin after the first),
    positions added at every block, head on [cls; max]. ``num_classes=40``: 22,099,752 parameters, as
    Point-MAE's. Given Point-MAE's weights it computes Point-MAE's logits (tested to 1e-10 in float64 on
    outputs of Point-MAE's own code)."""
    cfg = dict(embed_dim=384, layout="T" * 12, num_heads=6, qkv_bias=False, num_group=64, group_size=32,
               order="none", skip_near_origin=True, drop_path_rate=0.1, cls_token=True, global_pool="cls_max")
    return _build(cfg, num_classes, kwargs)


@register_model(forwards=(build_model, HybridEncoder))
def pointmamba(num_classes: Optional[int] = None, **kwargs) -> nn.Module:
    """PointMamba (``PointMambaScan``): 12 Mamba blocks over the hilbert then the hilbert-trans token
    sequence (2G tokens, no cls token) with per-order scale and shift, the positional embedding added once
    before the first block, head on the mean token. As PointMamba: pointnet2_ops' FPS, and centers
    quantized on a 0.02 grid with the curve depth taken over the whole batch (``grid_depth="batch"``), so a
    cloud's token order, and so its logits, can change with the other clouds in its batch; pass
    ``grid_depth="cloud"`` for batch-independent outputs (then a batch of one matches PointMamba). Given
    PointMamba's weights it computes PointMamba's logits (tested to 1e-10 in float64 on outputs of
    PointMamba's own code). Ties of two centers in one grid cell keep FPS order here (PointMamba's
    unstable argsort leaves them arbitrary)."""
    cfg = dict(embed_dim=384, layout="M" * 12, num_group=64, group_size=32,
               order=("hilbert", "hilbert-trans"), order_indicator=True, grid_size=0.02, grid_depth="batch",
               skip_near_origin=True, pos_mode="once", drop_path_rate=0.1, cls_token=False, global_pool="mean")
    return _build(cfg, num_classes, kwargs)
