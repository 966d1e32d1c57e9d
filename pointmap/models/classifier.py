"""Classification head over any encoder: optional cls token, global pooling, MLP with BN."""
from typing import Optional, Sequence

import torch
from timm.layers import trunc_normal_
from torch import nn

from ..errors import UserError

_POOLS = {"cls_max": 2, "cls_maxmean": 2, "cls_maxmean_sample0": 2, "cls": 1, "max": 1, "mean": 1, "maxmean": 1,
          "max_mean": 2}


def mlp_head(in_dim: int, num_classes: int, hidden: Sequence[int] = (256, 256), dropout: float = 0.5) -> nn.Sequential:
    """(Linear, BN, ReLU, Dropout) per hidden width, then Linear → classes; Point-MAE's module indices."""
    layers = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        in_dim = h
    return nn.Sequential(*layers, nn.Linear(in_dim, num_classes))


def pool_tokens(tokens: torch.Tensor, prefix: Optional[torch.Tensor], global_pool: str) -> torch.Tensor:
    """tokens: (B, S, C), prefix: (B, P, C) or None → (B, F).

    ``cls_max`` = [cls; max] (Point-MAE), ``cls_maxmean`` = [cls; max + mean] (Mamba3D / MAP release,
    each sample's own mean), ``mean`` (PointMamba), ``max``, ``maxmean`` (max + mean), ``max_mean``
    ([max; mean]), ``cls``.

    ``cls_maxmean_sample0`` = [cls; max + mean of sample 0]: Mamba3D's and the MAP release's pooling as
    their code computes it (``x[:, 1:].mean(1)[0]``, an indexing slip), the mean token of the *first*
    sample of the batch added to every sample's max. For reproducing their batched outputs only: it
    makes a cloud's logits depend on which cloud comes first in its batch, so the presets default to
    ``cls_maxmean``; the two agree for sample 0 and for a batch of one.
    """
    parts = []
    if global_pool.startswith("cls"):
        parts.append(prefix[:, 0])
    kind = global_pool[4:] if global_pool.startswith("cls_") else ("" if global_pool == "cls" else global_pool)
    if kind == "max":
        parts.append(tokens.amax(dim=1))
    elif kind == "mean":
        parts.append(tokens.mean(dim=1))
    elif kind == "maxmean":
        parts.append(tokens.amax(dim=1) + tokens.mean(dim=1))
    elif kind == "maxmean_sample0":
        parts.append(tokens.amax(dim=1) + tokens.mean(dim=1)[:1])  # sample 0's mean, broadcast over the batch
    elif kind == "max_mean":
        parts += [tokens.amax(dim=1), tokens.mean(dim=1)]
    return torch.cat(parts, dim=-1)


class Classifier(nn.Module):
    """``encoder`` + optional cls token + global pooling + MLP head: inputs → logits (B, num_classes).

    Args:
        encoder: a :class:`~pointmap.models.hybrid_encoder.TokenEncoder` (points or images).
        num_classes: output classes.
        cls_token: prepend a learnable cls token with its own positional embedding.
        global_pool: see :func:`pool_tokens`.
        head_hidden: hidden widths of the MLP head (``()`` gives a single linear layer).
        head_dropout: dropout after each hidden layer.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, cls_token: bool = True,
                 global_pool: str = "cls_max", head_hidden: Sequence[int] = (256, 256),
                 head_dropout: float = 0.5):
        super().__init__()
        if global_pool not in _POOLS:
            raise UserError(f"global_pool must be one of {', '.join(_POOLS)}; got {global_pool!r}")
        if global_pool.startswith("cls") and not cls_token:
            raise UserError(f"global_pool={global_pool!r} needs cls_token=True")
        dim = encoder.embed_dim
        self.encoder = encoder
        self.num_classes = num_classes
        self.global_pool = global_pool
        if cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.cls_pos = nn.Parameter(torch.zeros(1, 1, dim))
            trunc_normal_(self.cls_token, std=0.02)
            trunc_normal_(self.cls_pos, std=0.02)
        else:
            self.cls_token = self.cls_pos = None
        self.num_features = _POOLS[global_pool] * dim
        self.head = mlp_head(self.num_features, num_classes, head_hidden, head_dropout)

    def _encode(self, x: torch.Tensor, return_layers=None):
        if self.cls_token is None:
            return self.encoder(x, return_layers=return_layers)
        b = x.shape[0]
        return self.encoder(x, prefix=self.cls_token.expand(b, -1, -1), prefix_pos=self.cls_pos.expand(b, -1, -1),
                            return_layers=return_layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features for linear probing / SVM: inputs → (B, num_features)."""
        out = self._encode(x)
        return pool_tokens(out.tokens, out.prefix, self.global_pool)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """(B, num_features) → logits (B, num_classes)."""
        return self.head(features)

    def no_weight_decay(self) -> set:
        return {"cls_token", "cls_pos"} if self.cls_token is not None else set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: points (B, N, 3) (or images (B, C, H, W)) → logits (B, num_classes)."""
        return self.forward_head(self.forward_features(x))
