"""Linear probing's model: a frozen (pretrained) encoder, its tokens pooled, a linear layer on top."""
from __future__ import annotations

import torch
import torch.nn as nn

from .classifier import pool_tokens

__all__ = ["LinearProbe"]


class LinearProbe(nn.Module):
    """A frozen encoder, its tokens pooled (no new token: [max; mean] by default), then a linear layer.

    The features pass a BatchNorm without affine parameters first (as MAE's linear probe), which at
    evaluation is a fixed per-channel affine map, so the classifier stays linear. The encoder stays in
    eval mode whatever ``train()`` says, so its norm statistics and drop paths are frozen too.
    Keys are ``encoder.*`` and ``head.*``: pretrained checkpoints load into it as into a classifier.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, global_pool: str = "max_mean"):
        super().__init__()
        self.encoder, self.global_pool = encoder, global_pool
        self.encoder.requires_grad_(False)
        self.num_features = (2 if global_pool == "max_mean" else 1) * encoder.embed_dim
        self.num_classes = num_classes
        self.head = nn.Sequential(nn.BatchNorm1d(self.num_features, affine=False, eps=1e-6),
                                  nn.Linear(self.num_features, num_classes))

    def train(self, mode: bool = True) -> "LinearProbe":
        super().train(mode)
        self.encoder.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """inputs -> (B, num_features), without gradients into the encoder."""
        with torch.no_grad():
            out = self.encoder(x)
            return pool_tokens(out.tokens, None, self.global_pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
