"""Part segmentation heads: multi-depth token features propagated back to every point.

Two heads over the same token features (the patch tokens after three evenly spaced blocks, each through
the encoder's final norm, concatenated): pointmap's own (:class:`PartSegmenter`) and Point-MAE's
(:class:`PointMAEPartSegmenter`). Both map points (B, N, 3) and a shape category to logits (B, N, parts).
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from pointmap.ops import gather_points, knn

SEG_HEADS = ("pointmap", "point_mae")


def even_depths(depth: int, n: int = 3) -> list:
    """n block indices evenly spaced over ``depth`` blocks, the last one included (12 → [3, 7, 11])."""
    return [max(0, round(depth * (i + 1) / n) - 1) for i in range(n)]


def to_patch_order(feats: torch.Tensor, order: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Averages token features back onto the patches they came from.

    feats: (B, S, C), order: (B, S) long in [0, G) → (B, G, C); S = G · (number of token orders).
    """
    b, _, c = feats.shape
    out = feats.new_zeros(b, num_patches, c).scatter_add_(1, order.unsqueeze(-1).expand(-1, -1, c), feats)
    count = feats.new_zeros(b, num_patches).scatter_add_(1, order, feats.new_ones(order.shape))
    return out / count.clamp(min=1).unsqueeze(-1)


def interpolate_idw(points: torch.Tensor, centers: torch.Tensor, feats: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Inverse-distance interpolation of patch features onto points: weights 1 / (d² + 1e-8) over the k
    nearest centers (d² the squared distance, computed exactly), normalised to sum to 1.

    points: (B, N, 3), centers: (B, G, 3), feats: (B, G, C) → (B, N, C), from the k nearest centers.
    """
    dist2, idx = knn(points, centers, min(k, centers.shape[1]))
    w = 1.0 / (dist2 + 1e-8)
    w = w / w.sum(dim=-1, keepdim=True)
    return (gather_points(feats, idx) * w.unsqueeze(-1)).sum(dim=2)


def point_mlp(in_dim: int, hidden: Sequence[int], out_dim: Optional[int] = None, dropout: float = 0.0) -> nn.Sequential:
    """Per-point layers on (B, C, N): (Conv1d k=1, BN, ReLU) per hidden width, Dropout after the first when
    ``dropout`` > 0, then a Conv1d to ``out_dim`` (none when None)."""
    layers = []
    for i, h in enumerate(hidden):
        layers += [nn.Conv1d(in_dim, h, 1), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
        if i == 0 and dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_dim = h
    if out_dim is not None:
        layers.append(nn.Conv1d(in_dim, out_dim, 1))
    return nn.Sequential(*layers)


class _TokenSegmenter(nn.Module):
    """The encoder side both heads share: which blocks' features, how they reach patch order."""

    def __init__(self, encoder: nn.Module, num_parts: int, num_categories: int,
                 layers: Optional[Sequence[int]], k: int):
        super().__init__()
        self.encoder = encoder
        self.num_parts = num_parts
        self.num_categories = num_categories
        self.layers = list(layers) if layers is not None else even_depths(len(encoder.blocks))
        self.k = k
        self.feat_dim = len(self.layers) * encoder.embed_dim

    def token_features(self, points: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """points: (B, N, 3) → features (B, G, L·C) of the blocks in ``layers`` (each final-normed,
        averaged over token orders onto the G patches) and the patch centers (B, G, 3)."""
        out = self.encoder(points, return_layers=self.layers)
        feats = torch.cat([self.encoder.norm(h) for h in out.hidden], dim=-1)   # (B, S, L·C)
        g = self.encoder.num_tokens
        return to_patch_order(feats, out.order, g), to_patch_order(out.centers, out.order, g)

    def one_hot(self, category: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B,) long or (B, num_categories) one-hot → (B, num_categories) of ``dtype``."""
        if category.dim() == 1:
            category = F.one_hot(category.long(), self.num_categories)
        return category.to(dtype)


class PartSegmenter(_TokenSegmenter):
    """Encoder + part-segmentation head: points (B, N, 3), category (B,) → logits (B, N, num_parts).

    The patch-token features after three evenly spaced blocks (``layers``), each through the encoder's
    final norm, are concatenated (3C), averaged over token orders back onto their patches, and interpolated to all N points
    from the 3 nearest patch centers (inverse squared distance). Each point's feature is that, the
    cloud's max-pooled patch feature (3C) and the one-hot shape category, through a per-point MLP.

    Args:
        encoder: a :class:`~pointmap.models.hybrid_encoder.HybridEncoder`.
        num_parts: output classes per point (50 for ShapeNetPart).
        num_categories: shape categories (16 for ShapeNetPart).
        layers: block indices whose outputs are used (default: three evenly spaced, last included).
        hidden: widths of the per-point MLP; dropout after the first.
    """

    def __init__(self, encoder: nn.Module, num_parts: int = 50, num_categories: int = 16,
                 layers: Optional[Sequence[int]] = None, k: int = 3, hidden: Sequence[int] = (512, 256, 128),
                 dropout: float = 0.5):
        super().__init__(encoder, num_parts, num_categories, layers, k)
        self.head = point_mlp(2 * self.feat_dim + num_categories, hidden, num_parts, dropout)

    def forward(self, points: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        """points: (B, N, 3), category: (B,) long or (B, num_categories) one-hot → (B, N, num_parts)."""
        feats, centers = self.token_features(points)
        per_point = interpolate_idw(points, centers, feats, self.k)       # (B, N, 3C)
        ctx = torch.cat([feats.amax(dim=1), self.one_hot(category, feats.dtype)], dim=-1)
        x = torch.cat([per_point, ctx.unsqueeze(1).expand(-1, points.shape[1], -1)], dim=-1)
        return self.head(x.transpose(1, 2)).transpose(1, 2)


class PointMAESegHead(nn.Module):
    """Point-MAE's part-segmentation head (``segmentation/models/pt.py`` ``get_model``), on (B, C, N) maps.

    ``label_conv``: the one-hot category through Conv1d(categories → 64, no bias), BN, LeakyReLU(0.2).
    ``propagation``: [xyz; the token features interpolated from the 3 nearest centers] (3 + F) through
    (Conv1d, BN, ReLU) to 4C, then to 1024. ``mlp``: [propagated 1024; max F; mean F; label 64] through
    Conv1d 512, BN, ReLU, Dropout 0.5, Conv1d 256, BN, ReLU, Conv1d → parts. F = 3C.
    """

    def __init__(self, feat_dim: int, embed_dim: int, num_parts: int, num_categories: int, label_dim: int = 64,
                 propagation: Optional[Sequence[int]] = None, hidden: Sequence[int] = (512, 256),
                 dropout: float = 0.5):
        super().__init__()
        propagation = list(propagation) if propagation is not None else [4 * embed_dim, 1024]
        self.label_conv = nn.Sequential(nn.Conv1d(num_categories, label_dim, 1, bias=False),
                                        nn.BatchNorm1d(label_dim), nn.LeakyReLU(0.2))
        self.propagation = point_mlp(3 + feat_dim, propagation)
        self.mlp = point_mlp(propagation[-1] + 2 * feat_dim + label_dim, hidden, num_parts, dropout)

    def forward(self, per_point: torch.Tensor, feats: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        """per_point: (B, 3 + F, N) xyz and interpolated features, feats: (B, G, F) token features,
        one_hot: (B, categories) → logits (B, parts, N)."""
        n = per_point.shape[-1]
        glob = torch.cat([feats.amax(dim=1), feats.mean(dim=1)], dim=-1).unsqueeze(-1)      # (B, 2F, 1)
        label = self.label_conv(one_hot.unsqueeze(-1))                                         # (B, 64, 1)
        x = torch.cat([self.propagation(per_point), torch.cat([glob, label], dim=1).expand(-1, -1, n)], dim=1)
        return self.mlp(x)


class PointMAEPartSegmenter(_TokenSegmenter):
    """Point-MAE's part-segmentation model over any encoder: points (B, N, 3), category → (B, N, num_parts).

    With the ``pointmae`` encoder at G=128 (``create_model("pointmae", num_parts=50, num_group=128,
    seg_head="point_mae")``) it is Point-MAE's ``get_model(50)``: 27,063,730 parameters, features of blocks
    3, 7, 11, no cls token. Point-MAE's part-seg checkpoints (``model_state_dict``) and its pretraining
    files load into it (format ``point_mae``). It returns logits; Point-MAE returns their log_softmax and
    trains with NLL, which is the same loss as cross-entropy on the logits. Squared distances for the
    interpolation are computed exactly (Point-MAE expands |a|² + |b|² − 2a·b, whose rounding matters only
    for points within about 1e-4 of a center, where the weight goes to that center either way).

    Args:
        encoder: a :class:`~pointmap.models.hybrid_encoder.HybridEncoder`.
        num_parts, num_categories, layers, k: as :class:`PartSegmenter`.
        label_dim, propagation, hidden, dropout: see :class:`PointMAESegHead` (propagation default (4C, 1024)).
    """

    def __init__(self, encoder: nn.Module, num_parts: int = 50, num_categories: int = 16,
                 layers: Optional[Sequence[int]] = None, k: int = 3, label_dim: int = 64,
                 propagation: Optional[Sequence[int]] = None, hidden: Sequence[int] = (512, 256),
                 dropout: float = 0.5):
        super().__init__(encoder, num_parts, num_categories, layers, k)
        self.head = PointMAESegHead(self.feat_dim, encoder.embed_dim, num_parts, num_categories, label_dim,
                                    propagation, hidden, dropout)

    def forward(self, points: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        """points: (B, N, 3), category: (B,) long or (B, num_categories) one-hot → (B, N, num_parts)."""
        feats, centers = self.token_features(points)
        per_point = torch.cat([points.to(feats.dtype), interpolate_idw(points, centers, feats, self.k)], dim=-1)
        logits = self.head(per_point.transpose(1, 2), feats, self.one_hot(category, feats.dtype))
        return logits.transpose(1, 2)
