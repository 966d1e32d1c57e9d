"""Positional embedding of patch centers (or any low-dimensional coordinates)."""
from torch import nn


class PosMLP(nn.Sequential):
    """Linear(in_dim, hidden), activation, Linear(hidden, C), as an ``nn.Sequential`` (indices 0, 1, 2).

    ``coords: (..., in_dim)`` → ``(..., C)``. Point-MAE and PointMamba use GELU; the released MAP 3D
    encoder uses SiLU.
    """

    def __init__(self, embed_dim: int = 384, in_dim: int = 3, hidden_dim: int = 128, act_layer=nn.GELU):
        super().__init__(nn.Linear(in_dim, hidden_dim), act_layer(), nn.Linear(hidden_dim, embed_dim))
