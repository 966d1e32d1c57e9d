"""One call from a pretrainer and a cloud to the reconstruction picture (and its PLY files).

    from pointmap.vis import reconstruction_figure
    fig = reconstruction_figure(model, points, seed=0)        # points: (N, 3)
    fig.save("recon.png", ply_dir="recon_ply")                 # fig.chamfer: the sample's CD-L2
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from .panels import Panel, reconstruction_panels, run_pretrainer, sample_chamfer
from .render import render_panels, save_png, write_ply

__all__ = ["Reconstruction", "reconstruction_figure"]


@dataclass
class Reconstruction:
    """image: (H, W, 3) uint8; panels: the coloured point sets; chamfer: CD-L2 of the masked patches."""

    image: np.ndarray
    panels: List[Panel]
    chamfer: float
    caption: str
    num_masked: int
    num_patches: int

    def save(self, png: Optional[str] = None, ply_dir: Optional[str] = None) -> Dict[str, str]:
        """Write the PNG and/or one ``<panel>.ply`` per panel; returns {what: path}."""
        written = {}
        if png:
            written["png"] = save_png(self.image, png)
        if ply_dir:
            for p in self.panels:
                written[p.name] = write_ply(p.points, p.colors, os.path.join(ply_dir, f"{p.name}.ply"))
        return written


def reconstruction_figure(model: nn.Module, points: torch.Tensor, *, seed: int = 0,
                          mask_ratio: Optional[float] = None, size: Tuple[int, int] = (1600, 440),
                          backend: str = "auto", color_by: str = "role", point_size: float = 4.0,
                          title: str = "") -> Reconstruction:
    """Mask ``points`` (N, 3) with a mask seeded by ``seed``, reconstruct with ``model`` (a point-cloud
    :class:`~pointmap.models.MAPPretrainer`) and draw input / visible / masked truth / reconstruction."""
    if getattr(getattr(model, "encoder", None), "modality", None) != "points":
        raise UserError("reconstruction_figure needs a point-cloud pretrainer; images: pointmap.vis.image_grid")
    x = torch.as_tensor(points, dtype=torch.float32)
    x = x.unsqueeze(0) if x.dim() == 2 else x
    if x.dim() != 3 or x.shape[0] != 1 or x.shape[-1] != 3:
        raise UserError(f"points must be (N, 3) or (1, N, 3), got {tuple(x.shape)}")
    out = run_pretrainer(model, x, seed=seed, mask_ratio=mask_ratio)
    cd = sample_chamfer(out)
    g, m = out.mask.shape[1], int(out.mask[0].sum())
    ratio = model.mask_ratio if mask_ratio is None else mask_ratio
    caption = (f"{title + ' | ' if title else ''}Chamfer L2 (masked patches) {cd:.4g} | "
               f"{m} of {g} patches masked (ratio {ratio:g}, seed {seed})")
    panels = reconstruction_panels(x, out, color_by=color_by)
    image = render_panels(panels, size, caption, backend=backend, point_size=point_size)
    return Reconstruction(image, panels, cd, caption, m, g)
