"""Linear probing's model: a frozen (pretrained) encoder, its tokens pooled, a linear layer on top."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import UserError
from .classifier import POOLS, pool_tokens

__all__ = ["LinearProbe", "PROBE_POOLS"]

PROBE_POOLS = tuple(p for p in POOLS if not p.startswith("cls"))  # a frozen encoder has learned no cls token


class LinearProbe(nn.Module):
    """A frozen encoder, its tokens pooled (no new token: [max; mean] by default), then a linear layer.

    timm's shape, as :class:`~pointmap.models.classifier.Classifier`: :meth:`forward_features` gives the
    tokens, ``forward_head(tokens, pre_logits=True)`` the pooled features. The features pass a BatchNorm
    without affine parameters first (as MAE's linear probe), which at evaluation is a fixed per-channel
    affine map, so the classifier stays linear. The encoder stays in eval mode whatever ``train()`` says, so
    its norm statistics and drop paths are frozen too. Keys are ``encoder.*`` and ``head.*``: pretrained
    checkpoints load into it as into a classifier. ``global_pool``: one of :data:`PROBE_POOLS` (a ``cls*``
    pool would read a cls token the frozen encoder never learned: a one-line error).
    """

    def __init__(self, encoder: nn.Module, num_classes: int, global_pool: str = "max_mean"):
        super().__init__()
        if global_pool not in PROBE_POOLS:
            why = (" (a cls token is not part of a frozen pretrained encoder: nothing would have trained it)"
                   if global_pool in POOLS else "")
            raise UserError(f"linear probe: global_pool must be one of {', '.join(PROBE_POOLS)}; got "
                            f"{global_pool!r}{why}")
        self.encoder, self.global_pool = encoder, global_pool
        self.encoder.requires_grad_(False)
        self.num_features = POOLS[global_pool] * encoder.embed_dim
        self.num_classes = num_classes
        self.head = nn.Sequential(nn.BatchNorm1d(self.num_features, affine=False, eps=1e-6),
                                  nn.Linear(self.num_features, num_classes))

    def train(self, mode: bool = True) -> "LinearProbe":
        super().train(mode)
        self.encoder.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """inputs -> the frozen encoder's tokens (B, T, C), without gradients into the encoder."""
        with torch.no_grad():
            return self.encoder(x).tokens

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """tokens (B, T, C) → logits (B, num_classes); ``pre_logits``: the pooled features (B, num_features)."""
        feats = pool_tokens(x, None, self.global_pool)
        return feats if pre_logits else self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
