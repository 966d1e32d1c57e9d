"""The 2D adapter: timm's PatchEmbed in front of the same HybridEncoder blocks; image presets."""
from typing import Optional, Sequence

import torch
from timm.layers import PatchEmbed
from torch import nn

from .hybrid_encoder import EncoderOutput, PatchTokens, TokenEncoder, init_weights
from .presets import _build, build_model
from .registry import register_model


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """images: (B, C, H, W) → (B, G, p·p·C) in raster order, pixels of a patch in (row, col, channel) order."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


class ImageEncoder(TokenEncoder):
    """Images → PatchEmbed tokens in raster order → blocks → norm.

    Positions are the patch grid coordinates (row, col) scaled to [-0.5, 0.5], through the same kind
    of positional MLP as the 3D centers. Rows of the MAP objective are image rows.

    Args (besides :class:`TokenEncoder`'s): img_size, patch_size, in_chans; norm_pix_eps is the epsilon
    of the per-patch pixel normalization of the reconstruction target.
    """

    modality = "image"

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 384,
                 layout: str = "MMMTMMMTMMMT", norm_pix_eps: float = 1e-6, **kwargs):
        super().__init__(embed_dim=embed_dim, layout=layout, coord_dim=2, **kwargs)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.norm_pix_eps = norm_pix_eps
        gh, gw = self.patch_embed.grid_size
        rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        coords = torch.stack([(rows + 0.5) / gh, (cols + 0.5) / gw], dim=-1).reshape(-1, 2) - 0.5
        self.register_buffer("grid_coords", coords, persistent=False)
        init_weights(self)

    @property
    def num_tokens(self) -> int:
        return self.patch_embed.num_patches

    @property
    def target_dim(self) -> int:
        return self.patch_size ** 2 * self.in_chans

    def natural_row_size(self) -> int:
        return self.patch_embed.grid_size[1]

    def _embed(self, images: torch.Tensor):
        b = images.shape[0]
        tokens = self.patch_embed(images)                                  # (B, G, C)
        coords = self.grid_coords.to(tokens.dtype).expand(b, -1, -1)
        order = torch.arange(tokens.shape[1], device=images.device).expand(b, -1)
        return tokens, coords, order

    def tokenize(self, images: torch.Tensor) -> PatchTokens:
        """images: (B, C, H, W) → :class:`PatchTokens`; target: per-patch normalized pixels (B, G, p·p·C)."""
        tokens, coords, order = self._embed(images)
        target = patchify(images, self.patch_size)
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        return PatchTokens(tokens, coords, (target - mean) / (var + self.norm_pix_eps).sqrt(), order)

    def forward(self, images: torch.Tensor, prefix: Optional[torch.Tensor] = None,
                prefix_pos: Optional[torch.Tensor] = None,
                return_layers: Optional[Sequence[int]] = None) -> EncoderOutput:
        """images: (B, C, H, W) → :class:`EncoderOutput` with tokens (B, G, C) in raster order."""
        x, coords, order = self._embed(images)
        return self.encode(x, coords, order, prefix, prefix_pos, return_layers)


def _image_preset(embed_dim: int, num_heads: int):
    """The image HybridNets: bidirectional Mamba mixers in the MAP 2D release's (Vim's) form; head: the mean
    token through one linear layer."""
    return dict(encoder_cls=ImageEncoder, img_size=224, patch_size=16, in_chans=3, embed_dim=embed_dim,
                num_heads=num_heads, layout="MMMTMMMTMMMT", bidirectional="sequence", drop_path_rate=0.1,
                cls_token=False, global_pool="mean", head_hidden=(), head_dropout=0.0)


@register_model(forwards=(build_model, ImageEncoder))
def hybridnet_image_t(num_classes: Optional[int] = None, **kwargs) -> nn.Module:
    """HybridNet-T for images: C=192, 3 heads, 16×16 patches; head: mean token → linear."""
    return _build(_image_preset(192, 3), num_classes, kwargs)


@register_model(forwards=(build_model, ImageEncoder))
def hybridnet_image_s(num_classes: Optional[int] = None, **kwargs) -> nn.Module:
    """HybridNet-S for images: C=384, 6 heads, 16×16 patches; head: mean token → linear."""
    return _build(_image_preset(384, 6), num_classes, kwargs)


@register_model(forwards=(build_model, ImageEncoder))
def hybridnet_image_b(num_classes: Optional[int] = None, **kwargs) -> nn.Module:
    """HybridNet-B for images: C=768, 12 heads, 16×16 patches; head: mean token → linear."""
    return _build(_image_preset(768, 12), num_classes, kwargs)
