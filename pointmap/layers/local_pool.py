"""Local norm pooling (LNP), Mamba3D's local-feature mixer over the nearest patch centers."""
from typing import Optional

import torch
from torch import nn

from pointmap.ops import gather_points, knn

from .block import TokenContext


class LocalNormPool(nn.Module):
    """Pools each token's k nearest neighbours (by center) into a new token feature.

    For every patch token: neighbour features minus the token's own, divided by one scalar standard
    deviation over the whole batch (+1e-5); each normalized neighbour concatenated with the token's own
    feature (2C); a per-channel affine (α = 1, β = 0 at init); softmax-weighted pooling over the k
    neighbours (Σ x·eˣ / Σ eˣ per channel); LayerNorm(2C); a 2C → C projection; SiLU.
    The neighbours include the token itself (its own center is its nearest).

    Prefix tokens (``ctx.num_prefix``, a cls token) are returned unchanged. Neighbour indices are
    computed once per forward pass from ``ctx.centers`` and kept in ``ctx.cache``.

    Args:
        dim: channels C.
        k: number of neighbours (``center_local_k`` in Mamba3D's configs, 4).
    """

    def __init__(self, dim: int, k: int = 4):
        super().__init__()
        self.k = k
        self.alpha = nn.Parameter(torch.ones(2 * dim))
        self.beta = nn.Parameter(torch.zeros(2 * dim))
        self.norm = nn.LayerNorm(2 * dim)
        self.proj = nn.Linear(2 * dim, dim)
        self.act = nn.SiLU()

    def peer_param_ndim(self) -> dict:
        """The release stores α and β as (1, 1, 1, 2C): 4-D tensors, which its weight-decay rule decays."""
        return {"alpha": 4, "beta": 4}

    def forward(self, x: torch.Tensor, ctx: Optional[TokenContext] = None) -> torch.Tensor:
        """x: (B, P + G, C), ctx.centers: (B, G, 3) → (B, P + G, C)."""
        if ctx is None or ctx.centers is None:
            raise ValueError("LocalNormPool needs ctx.centers, the (B, G, 3) centers of the tokens")
        p = ctx.num_prefix
        prefix, x = x[:, :p], x[:, p:]
        key = ("knn", self.k)
        if key not in ctx.cache:
            ctx.cache[key] = knn(ctx.centers, ctx.centers, min(self.k, ctx.centers.shape[1]))[1]
        idx = ctx.cache[key]                                               # (B, G, k)
        own = x.unsqueeze(2).expand(-1, -1, idx.shape[-1], -1)             # (B, G, k, C)
        diff = gather_points(x, idx) - own
        diff = diff / (diff.std() + 1e-5)
        feat = torch.cat([diff, own], dim=-1) * self.alpha + self.beta     # (B, G, k, 2C)
        feat = (feat * feat.softmax(dim=2)).sum(dim=2)                     # (B, G, 2C)
        out = self.act(self.proj(self.norm(feat)))
        return torch.cat([prefix, out], dim=1)
