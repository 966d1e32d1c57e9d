"""Classification head over any encoder, in timm's shape: optional cls token, global pooling, MLP with BN.

    tokens = model.forward_features(x)                  # (B, T, C): prefix (cls) tokens first, then patches
    feats = model.forward_head(tokens, pre_logits=True)  # (B, num_features): pooled
    logits = model.forward_head(tokens)                  # (B, num_classes)
    model.reset_classifier(0)                            # model(x) is now the pooled features

:data:`HEAD_DEFAULTS` and :data:`POOLS` are the head's whole vocabulary: every builder, the linear probe and
the configs read them here.
"""
from typing import Dict, Optional, Sequence

import torch
from timm.layers import trunc_normal_
from torch import nn

from ..errors import UserError

# global pool -> width of the pooled feature in channels C (``cls_*``: the cls token's, then the rest's)
POOLS: Dict[str, int] = {"cls_max": 2, "cls_maxmean": 2, "cls_maxmean_sample0": 2, "cls": 1, "max": 1, "mean": 1,
                         "maxmean": 1, "max_mean": 2}
# the head arguments every preset takes (``model.args``), and their defaults for point clouds; the image
# presets override them (mean token, one linear layer).
HEAD_DEFAULTS: Dict[str, object] = {"cls_token": False, "global_pool": "max_mean", "head_hidden": (256, 256),
                                    "head_dropout": 0.5}


def check_pool(global_pool: str, cls_token: bool) -> None:
    """A one-line :class:`~pointmap.errors.UserError` for a pool not in :data:`POOLS`, or a ``cls*`` pool
    without a cls token."""
    if global_pool not in POOLS:
        raise UserError(f"global_pool must be one of {', '.join(POOLS)}; got {global_pool!r}")
    if global_pool.startswith("cls") and not cls_token:
        raise UserError(f"global_pool={global_pool!r} needs cls_token=True")


def mlp_head(in_dim: int, num_classes: int, hidden: Sequence[int] = (256, 256), dropout: float = 0.5) -> nn.Module:
    """(Linear, BN, ReLU, Dropout) per hidden width, then Linear → classes; Point-MAE's module indices.
    ``num_classes=0``: no head at all (``nn.Identity``), timm's feature extractor."""
    if num_classes == 0:
        return nn.Identity()
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
        if prefix is None:
            raise UserError(f"global_pool={global_pool!r} pools a cls token, and these tokens have none")
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


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pooled features (B, num_features) of any timm-shaped model: ``forward_head(forward_features(x),
    pre_logits=True)``."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


class Classifier(nn.Module):
    """``encoder`` + optional cls token + global pooling + MLP head: inputs → logits (B, num_classes).

    timm's shape: :meth:`forward_features` gives the tokens, :meth:`forward_head` pools and classifies,
    ``num_classes=0`` (or :meth:`reset_classifier` with 0) leaves the head out so the model returns the
    pooled features (B, num_features).

    Args:
        encoder: a :class:`~pointmap.models.hybrid_encoder.TokenEncoder` (points or images).
        num_classes: output classes (0: none, the pooled features are the output).
        cls_token: prepend a learnable cls token with its own positional embedding.
        global_pool: see :func:`pool_tokens` (:data:`POOLS`).
        head_hidden: hidden widths of the MLP head (``()`` gives a single linear layer).
        head_dropout: dropout after each hidden layer.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, cls_token: bool = True,
                 global_pool: str = "cls_max", head_hidden: Sequence[int] = (256, 256),
                 head_dropout: float = 0.5):
        super().__init__()
        check_pool(global_pool, cls_token)
        dim = encoder.embed_dim
        self.encoder = encoder
        self.embed_dim = dim
        if cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.cls_pos = nn.Parameter(torch.zeros(1, 1, dim))
            trunc_normal_(self.cls_token, std=0.02)
            trunc_normal_(self.cls_pos, std=0.02)
        else:
            self.cls_token = self.cls_pos = None
        self.num_prefix_tokens = 1 if cls_token else 0
        self.head_hidden, self.head_dropout = tuple(head_hidden), head_dropout
        self.reset_classifier(num_classes, global_pool)

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new head for ``num_classes`` (0: none, the model returns pooled features), with the same hidden
        widths and dropout, pooling with ``global_pool`` (None keeps the current one)."""
        if global_pool is not None:
            check_pool(global_pool, self.cls_token is not None)
            self.global_pool = global_pool
        self.num_classes = int(num_classes)
        self.num_features = POOLS[self.global_pool] * self.embed_dim
        self.head = mlp_head(self.num_features, self.num_classes, self.head_hidden, self.head_dropout)

    def get_classifier(self) -> nn.Module:
        return self.head

    def _encode(self, x: torch.Tensor, return_layers=None):
        if self.cls_token is None:
            return self.encoder(x, return_layers=return_layers)
        b = x.shape[0]
        return self.encoder(x, prefix=self.cls_token.expand(b, -1, -1), prefix_pos=self.cls_pos.expand(b, -1, -1),
                            return_layers=return_layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """inputs → the encoder's final tokens (B, T, C): the ``num_prefix_tokens`` prefix (cls) tokens first,
        then the patch tokens in sequence order (T = P + S)."""
        out = self._encode(x)
        return out.tokens if out.prefix is None else torch.cat([out.prefix, out.tokens], dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """tokens (B, T, C) of :meth:`forward_features` → logits (B, num_classes); ``pre_logits``: the pooled
        features (B, num_features) the head reads."""
        p = self.num_prefix_tokens
        feats = pool_tokens(x[:, p:], x[:, :p] if p else None, self.global_pool)
        return feats if pre_logits else self.head(feats)

    def no_weight_decay(self) -> set:
        return {"cls_token", "cls_pos"} if self.cls_token is not None else set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: points (B, N, 3) (or images (B, C, H, W)) → logits (B, num_classes) (pooled features with no head)."""
        return self.forward_head(self.forward_features(x))
