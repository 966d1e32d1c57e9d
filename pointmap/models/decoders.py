"""The pretraining decoders (Transformer: Point-MAE's and MAP's; Mamba: PointMamba's) and their two inits."""
from functools import partial
from typing import Iterable, Optional

import torch
from torch import nn

from pointmap.layers import TokenContext, linear_rates, mamba_block, transformer_block

from ..objective import DECODER_INITS, DECODER_TYPES
from ..errors import UserError
from .hybrid_encoder import init_weights


class MAPDecoder(nn.Module):
    """Decoder blocks and a final norm: x, pos (B, L, C), attn_mask (L, L) bool or None → (B, L, C).

    ``block_type="transformer"``: pre-norm Transformer blocks (no qkv bias), ``pos`` added at every
    block's input, attention restricted by ``attn_mask`` (Point-MAE's ``TransformerDecoder``).
    ``block_type="mamba"``: one-way Mamba blocks (mixer only, mamba_ssm's ``Mamba``), ``pos`` added once
    before the first block (PointMamba's ``MambaDecoder``): causal token by token along the sequence,
    whatever ``attn_mask`` says (it is not read). ``num_heads`` and ``mlp_ratio`` are Transformer settings.
    Drop path rises linearly from 0 to ``drop_path_rate`` over the blocks in both.
    """

    def __init__(self, dim: int, depth: int = 4, num_heads: int = 6, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.1, norm_layer=nn.LayerNorm, block_type: str = "transformer"):
        super().__init__()
        if block_type not in DECODER_TYPES:
            raise UserError(f"decoder_type must be one of {list(DECODER_TYPES)}; got {block_type!r}")
        if block_type == "transformer":
            make = partial(transformer_block, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=False,
                           norm_layer=norm_layer)
        else:
            make = partial(mamba_block, norm_layer=norm_layer)
        self.block_type = block_type
        self.blocks = nn.ModuleList(make(dim, drop_path=r) for r in linear_rates(drop_path_rate, depth))
        self.norm = norm_layer(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        ctx = TokenContext(attn_mask=attn_mask)
        every = self.block_type == "transformer"
        for i, blk in enumerate(self.blocks):
            x = blk(x + pos if every or i == 0 else x, ctx)
        return self.norm(x)


def xavier_init(module: nn.Module) -> None:
    """The peers' decoder init (Point-MAE's ``TransformerDecoder._init_weights``, PointMamba's
    ``MambaDecoder._init_weights``): every Linear xavier-uniform with a zero bias, norms weight 1 and bias 0.
    As the peers' ``apply`` does, it reaches the Linear layers inside Mamba mixers too (in_proj, x_proj,
    dt_proj, out_proj; dt_proj's bias becomes 0), and leaves convolutions, A_log and D as they are."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.RMSNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


def init_decoder_side(how: str, decoder: nn.Module, others: Iterable[nn.Module]) -> None:
    """Initialises a pretrainer's decoder and the modules around it (decoder positional MLP, predictor).

    ``trunc_normal``: pointmap's :func:`~pointmap.models.hybrid_encoder.init_weights` on all of them (Mamba
    mixers keep mamba's init). ``xavier``: the peers': :func:`xavier_init` on the decoder; ``others`` keep
    PyTorch's default init, as Point-MAE's and PointMamba's ``decoder_pos_embed`` and ``increase_dim`` do.
    """
    if how not in DECODER_INITS:
        raise UserError(f"decoder_init must be one of {list(DECODER_INITS)}; got {how!r}")
    if how == "xavier":
        xavier_init(decoder)
        return
    for m in (decoder, *others):
        init_weights(m)
