"""Point-MAE's mini-PointNet patch tokenizer."""
import torch
from torch import nn


class MiniPointNet(nn.Module):
    """Embeds each point patch into one token (Point-MAE's ``Encoder``, same module indices).

    Per patch: Conv1d 3→128, BN, ReLU, Conv1d 128→256, max-pool, the pooled feature concatenated to
    every point (512), Conv1d 512→512, BN, ReLU, Conv1d 512→C, max-pool.

    Args:
        embed_dim: output channels C.
    """

    def __init__(self, embed_dim: int = 384):
        super().__init__()
        self.embed_dim = embed_dim
        self.first_conv = nn.Sequential(
            nn.Conv1d(3, 128, 1), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Conv1d(128, 256, 1))
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Conv1d(512, embed_dim, 1))

    def forward(self, neighborhood: torch.Tensor) -> torch.Tensor:
        """neighborhood: (B, G, K, 3) float, relative to the centers → tokens (B, G, C)."""
        b, g, k, _ = neighborhood.shape
        x = neighborhood.reshape(b * g, k, 3).transpose(1, 2)           # (BG, 3, K)
        x = self.first_conv(x)                                          # (BG, 256, K)
        pooled = x.amax(dim=2, keepdim=True)                            # (BG, 256, 1)
        x = torch.cat([pooled.expand(-1, -1, k), x], dim=1)             # (BG, 512, K)
        x = self.second_conv(x)                                         # (BG, C, K)
        return x.amax(dim=2).reshape(b, g, self.embed_dim)
