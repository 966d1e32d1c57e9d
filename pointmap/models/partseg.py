"""Part segmentation head: multi-depth token features propagated back to every point."""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pointmap.ops import gather_points, knn


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
    """Inverse-distance interpolation of patch features onto points.

    points: (B, N, 3), centers: (B, G, 3), feats: (B, G, C) → (B, N, C), from the k nearest centers.
    """
    dist2, idx = knn(points, centers, min(k, centers.shape[1]))
    w = 1.0 / (dist2 + 1e-8)
    w = w / w.sum(dim=-1, keepdim=True)
    return (gather_points(feats, idx) * w.unsqueeze(-1)).sum(dim=2)


class PartSegmenter(nn.Module):
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
        super().__init__()
        self.encoder = encoder
        self.num_parts = num_parts
        self.num_categories = num_categories
        self.layers = list(layers) if layers is not None else even_depths(len(encoder.blocks))
        self.k = k
        feat_dim = len(self.layers) * encoder.embed_dim
        in_dim, mlp = 2 * feat_dim + num_categories, []
        for i, h in enumerate(hidden):
            mlp += [nn.Conv1d(in_dim, h, 1), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
            if i == 0 and dropout > 0:
                mlp.append(nn.Dropout(dropout))
            in_dim = h
        self.head = nn.Sequential(*mlp, nn.Conv1d(in_dim, num_parts, 1))

    def forward(self, points: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        """points: (B, N, 3), category: (B,) long or (B, num_categories) one-hot → (B, N, num_parts)."""
        out = self.encoder(points, return_layers=self.layers)
        feats = torch.cat([self.encoder.norm(h) for h in out.hidden], dim=-1)   # (B, S, 3C)
        g = self.encoder.num_tokens
        feats = to_patch_order(feats, out.order, g)
        centers = to_patch_order(out.centers, out.order, g)
        per_point = interpolate_idw(points, centers, feats, self.k)       # (B, N, 3C)
        if category.dim() == 1:
            category = F.one_hot(category.long(), self.num_categories)
        n = points.shape[1]
        ctx = torch.cat([feats.amax(dim=1), category.to(feats.dtype)], dim=-1)
        x = torch.cat([per_point, ctx.unsqueeze(1).expand(-1, n, -1)], dim=-1)
        return self.head(x.transpose(1, 2)).transpose(1, 2)
