"""Finetuning forms of the MAP 2D weights: Mamba-Reg's register classifier (wangf3014/Mamba-Reg
``models_mamba.py``, what MAP's README points to) and the hybrid that keeps the attention blocks.

Both put n learned registers (``cls_token`` + their own positional table ``cls_pos``) among the image tokens at
the places the release's helper (``get_cls_idx``) gives, run the encoder over the whole sequence, and read the
registers out: each through ``neck`` (C → C/r, no bias) when r > 1, concatenated, ``norm_neck`` (RMSNorm over
the n·C/r vector) when r > 1, then ``head``. Mamba-Reg's own model has no attention blocks (``attn_every=0``):
MAP weights finetuned through its code lose them. pointmap's default for finetuning MAP weights keeps them
(the hybrid); its attention blocks then see the registers too, in the pretraining form (``double_identity``).
"""
from typing import Tuple

import torch
from timm.layers import trunc_normal_
from torch import nn

from .map2d import MAP2DEncoder


def register_layout(h: int, w: int, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(token_idx, cls_positions) of the release helper ``get_cls_idx``: with L = ⌊hw/(n+1)⌋ the sequence is
    L image tokens, register 0, L image tokens, register 1, …, register n−1, then the other image tokens.
    ``token_idx`` (hw + n,) indexes [image tokens; registers]; ``cls_positions`` (n,) = k(L+1) + L."""
    hw = h * w
    seg = hw // (n + 1)
    idx = []
    for k in range(n):
        idx += list(range(k * seg, (k + 1) * seg)) + [hw + k]
    idx += list(range(n * seg, hw))
    pos = [k * (seg + 1) + seg for k in range(n)]
    return torch.tensor(idx), torch.tensor(pos)


class RegisterClassifier(nn.Module):
    """``encoder`` + registers + Mamba-Reg's readout: images → logits (B, num_classes), timm's interface
    (``forward_features`` → final-normed tokens (B, L + n, C); ``forward_head(x, pre_logits)``;
    ``reset_classifier``; ``create_model`` gives it its ``pretrained_cfg``).

    Args:
        encoder: a :class:`~pointmap.models.map2d.MAP2DEncoder` (``attn_every=0``: Mamba-Reg's classifier).
        num_classes: 0 gives no head (``forward`` returns the features).
        num_registers: n (12 for tiny/small/base, 16 for large/huge).
        reduce: r, the neck's channel reduction (1: no neck and no norm_neck).
        norm_eps: norm_neck's epsilon.
    """

    def __init__(self, encoder: MAP2DEncoder, num_classes: int, num_registers: int = 12, reduce: int = 1,
                 norm_eps: float = 1e-5):
        super().__init__()
        dim = encoder.embed_dim
        self.encoder = encoder
        self.num_classes = num_classes
        self.num_registers = num_registers
        self.reduce = reduce
        self.cls_token = nn.Parameter(torch.zeros(1, num_registers, dim))
        self.cls_pos = nn.Parameter(torch.zeros(1, num_registers, dim))
        if reduce > 1:
            self.neck = nn.Linear(dim, dim // reduce, bias=False)
            self.norm_neck = nn.RMSNorm(num_registers * (dim // reduce), eps=norm_eps)
        else:
            self.neck = self.norm_neck = None
        self.num_features = num_registers * (dim // reduce)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        idx, pos = register_layout(*encoder.grid_size, num_registers)
        self.register_buffer("token_idx", idx, persistent=False)
        self.register_buffer("cls_positions", pos, persistent=False)
        for p in (self.cls_token, self.cls_pos):
            trunc_normal_(p, std=0.02)
        for m in (self.neck, self.head):
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set:
        return {"cls_token", "cls_pos"}

    def sequence(self, images: torch.Tensor) -> torch.Tensor:
        """images → the encoder's input (B, L + n, C): image tokens + table, registers interleaved."""
        x = self.encoder.embed(images)
        regs = (self.cls_token + self.cls_pos).to(x.dtype).expand(x.shape[0], -1, -1)
        return torch.cat([x, regs], dim=1)[:, self.token_idx]

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, C, H, W) → final-normed tokens (B, L + n, C), registers at ``cls_positions``."""
        return self.encoder.forward_tokens(self.sequence(images))[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """tokens (B, L + n, C) → logits (B, num_classes), or the pooled features (B, num_features)."""
        regs = x[:, self.cls_positions]
        if self.neck is not None:
            regs = self.neck(regs)
        feats = regs.flatten(1)
        if self.norm_neck is not None:
            feats = self.norm_neck(feats)
        return feats if pre_logits else self.head(feats)

    def reset_classifier(self, num_classes: int) -> None:
        """A new head of ``num_classes`` outputs (0: none)."""
        self.num_classes = num_classes
        dev = self.cls_token.device
        self.head = nn.Linear(self.num_features, num_classes, device=dev) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

