"""Point-MAE's mini-PointNet patch tokenizer."""
import torch
import torch.nn.functional as F
from torch import nn


def _pointwise(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A kernel-1 Conv1d applied to channels-last rows (..., C_in) → (..., C_out): a plain matmul."""
    return F.linear(x, conv.weight.squeeze(-1), conv.bias)


class MiniPointNet(nn.Module):
    """Embeds each point patch into one token (Point-MAE's ``Encoder``, same module indices).

    Per patch: Conv1d 3→128, BN, ReLU, Conv1d 128→256, max-pool, the pooled feature concatenated to
    every point (512), Conv1d 512→512, BN, ReLU, Conv1d 512→C, max-pool.

    Args:
        embed_dim: output channels C.

    The parameters are Point-MAE's Conv1d/BatchNorm1d modules (its checkpoints load as they are); the
    computation runs channels-last as matmuls (``channels_last = True``), which is the same function and
    several times faster than kernel-1 convolutions, above all their backward on the CPU. Set
    ``channels_last = False`` to run the convolutions themselves.
    """

    def __init__(self, embed_dim: int = 384):
        super().__init__()
        self.embed_dim = embed_dim
        self.channels_last = True
        self.first_conv = nn.Sequential(
            nn.Conv1d(3, 128, 1), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Conv1d(128, 256, 1))
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Conv1d(512, embed_dim, 1))

    def forward(self, neighborhood: torch.Tensor) -> torch.Tensor:
        """neighborhood: (B, G, K, 3) float, relative to the centers → tokens (B, G, C)."""
        b, g, k, _ = neighborhood.shape
        if self.channels_last:
            return self._forward_channels_last(neighborhood)
        x = neighborhood.reshape(b * g, k, 3).transpose(1, 2)           # (BG, 3, K)
        x = self.first_conv(x)                                          # (BG, 256, K)
        pooled = x.amax(dim=2, keepdim=True)                            # (BG, 256, 1)
        x = torch.cat([pooled.expand(-1, -1, k), x], dim=1)             # (BG, 512, K)
        x = self.second_conv(x)                                         # (BG, C, K)
        return x.amax(dim=2).reshape(b, g, self.embed_dim)

    def _forward_channels_last(self, neighborhood: torch.Tensor) -> torch.Tensor:
        b, g, k, _ = neighborhood.shape
        conv1, bn1, act1, conv2 = self.first_conv
        conv3, bn2, act2, conv4 = self.second_conv
        x = neighborhood.reshape(b * g * k, 3)                          # one row per point
        x = _pointwise(conv2, act1(bn1(_pointwise(conv1, x))))          # (BGK, 256)
        x = x.reshape(b * g, k, -1)
        pooled = x.amax(dim=1, keepdim=True)                            # (BG, 1, 256)
        x = torch.cat([pooled.expand(-1, k, -1), x], dim=2).reshape(b * g * k, -1)  # (BGK, 512)
        x = _pointwise(conv4, act2(bn2(_pointwise(conv3, x))))          # (BGK, C)
        return x.reshape(b * g, k, -1).amax(dim=1).reshape(b, g, self.embed_dim)
