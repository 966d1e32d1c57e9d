"""The 2D adapter's picture: a grid with one row per image, columns original / masked / reconstruction.

The pretrainer predicts per-patch normalized pixels; a predicted patch is shown de-normalized with the
mean and standard deviation of the true patch (the usual MAE picture: the shape of the guess, the
brightness of the truth). Visible patches are shown as they are, masked ones grey in the middle column.
Images normalized by a transform (ImageNet's mean and std) are shown with that normalization undone.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from pointmap.models.image import patchify

from ..errors import UserError
from .panels import run_pretrainer

__all__ = ["unpatchify", "image_reconstructions", "image_grid"]

MASK_GREY = 0.5


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int, grid: tuple) -> torch.Tensor:
    """(B, G, p·p·C) in raster order → (B, C, H, W): the inverse of :func:`pointmap.models.patchify`."""
    b = patches.shape[0]
    gh, gw = grid
    p = patch_size
    x = patches.reshape(b, gh, gw, p, p, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, gh * p, gw * p)


@torch.no_grad()
def image_reconstructions(model: nn.Module, images: torch.Tensor, seed: int = 0,
                          mask_ratio: Optional[float] = None):
    """images: (B, C, H, W) → (original, masked, reconstruction, mse): three (B, C, H, W) tensors in the
    images' range and the loss (MSE on normalized masked patches)."""
    enc = model.encoder
    eps = getattr(model, "norm_pix_eps", None) or getattr(enc, "norm_pix_eps", None)  # the objective's or the adapter's
    if getattr(enc, "modality", None) != "image":
        raise UserError("image_reconstructions needs an image pretrainer (e.g. hybridnet_image_s)")
    images = images.float()
    out = run_pretrainer(model, images, seed=seed, mask_ratio=mask_ratio)
    p, c, grid = enc.patch_size, enc.in_chans, tuple(enc.patch_embed.grid_size)
    mask = out.mask.cpu()
    truth = patchify(images.cpu(), p)                                     # (B, G, p·p·C)
    mean, var = truth.mean(-1, keepdim=True), truth.var(-1, keepdim=True)
    pred = out.pred.float().cpu().reshape(-1, truth.shape[-1])
    recon, masked = truth.clone(), truth.clone()
    recon[mask] = pred * (var[mask] + eps).sqrt() + mean[mask]
    masked[mask] = MASK_GREY
    return (images.cpu(), unpatchify(masked, p, c, grid), unpatchify(recon, p, c, grid), float(out.loss))


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H, W, 3) uint8 (one channel repeated as grey)."""
    x = x.clamp(0, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return (x[:3].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def image_grid(model: nn.Module, images: torch.Tensor, seed: int = 0, mask_ratio: Optional[float] = None,
               cell: int = 96, pad: int = 4, mean: Optional[Sequence[float]] = None,
               std: Optional[Sequence[float]] = None) -> np.ndarray:
    """(B, C, H, W) images in [0, 1] (or normalized per channel by ``mean`` and ``std``, which the picture
    undoes) → an (H', W', 3) uint8 grid, one row per image, columns original / masked / reconstruction, each
    cell upscaled (nearest) to about ``cell`` pixels, a title line on top."""
    from PIL import Image, ImageDraw

    from .render import _font

    original, masked, recon, mse = image_reconstructions(model, images, seed, mask_ratio)
    if mean is not None and std is not None:
        shape = (1, -1, 1, 1)
        m, s = torch.tensor(mean).reshape(shape), torch.tensor(std).reshape(shape)
        original, recon = original * s + m, recon * s + m
        masked = torch.where(masked == MASK_GREY, masked, masked * s + m)
    h, w = original.shape[-2:]
    scale = max(1, round(cell / max(h, w)))
    ch, cw = h * scale, w * scale
    header = 34
    rows = original.shape[0]
    canvas = Image.new("RGB", (3 * cw + 4 * pad, header + rows * (ch + pad) + pad), (255, 255, 255))
    for r in range(rows):
        for col, x in enumerate((original[r], masked[r], recon[r])):
            tile = Image.fromarray(_to_uint8(x)).resize((cw, ch), Image.NEAREST)
            canvas.paste(tile, (pad + col * (cw + pad), header + r * (ch + pad)))
    draw = ImageDraw.Draw(canvas)
    font = _font(11)
    for col, title in enumerate(("original", "masked", "reconstruction")):
        draw.text((pad + col * (cw + pad) + cw // 2, 3), title, fill=(0, 0, 0), font=font, anchor="mt")
    draw.text((canvas.width // 2, header - 3), f"MSE (normalized masked patches) {mse:.4g}", fill=(90, 90, 90),
              font=_font(9), anchor="mb")
    return np.asarray(canvas)
