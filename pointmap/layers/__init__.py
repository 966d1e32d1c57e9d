"""Reusable layers: tokenizer, positional MLP, Mamba mixer, attention, local pooling, generic block.

Nothing here imports ``pointmap.models``.
"""
from timm.layers import DropPath, Mlp

from .attention import Attention, transformer_block
from .block import Block, TokenContext, linear_rates
from .local_pool import LocalNormPool
from .mamba import MambaMixer, mamba_block
from .pos_embed import PosMLP
from .tokenizer import MiniPointNet

__all__ = ["Attention", "Block", "DropPath", "LocalNormPool", "MambaMixer", "MiniPointNet", "Mlp",
           "PosMLP", "TokenContext", "linear_rates", "mamba_block", "transformer_block"]

