"""The coloured point sets of a reconstruction figure, built from a pretrainer's output.

Four panels, left to right: the input cloud, the visible patches, the masked patches' ground truth, and
the reconstruction (visible patches + predicted masked patches). Colours say the role of a point
(:data:`ROLE_COLORS`); with ``color_by="patch"`` the masked patches get one hue each instead, the same
hue in the ground-truth and in the reconstruction panel, so a prediction can be matched to its patch.
"""
from __future__ import annotations

import colorsys
import contextlib
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch
from torch import nn

from pointmap.ops import chamfer

from ..errors import UserError

__all__ = ["ROLE_COLORS", "Panel", "run_pretrainer", "reconstruction_panels", "sample_chamfer", "patch_palette"]

# RGB in [0, 1]. Distinct from each other and from the white background.
ROLE_COLORS: Dict[str, tuple] = {
    "input": (0.35, 0.35, 0.35),      # dark grey
    "visible": (0.12, 0.47, 0.71),    # blue
    "masked": (0.17, 0.63, 0.17),     # green: the ground truth the decoder has to guess
    "predicted": (0.84, 0.15, 0.16),  # red
}


@dataclass
class Panel:
    """One view: ``points`` (N, 3) float32, ``colors`` (N, 3) float32 in [0, 1], a short title."""

    name: str
    title: str
    points: np.ndarray
    colors: np.ndarray

    def __post_init__(self):
        self.points = np.ascontiguousarray(self.points, dtype=np.float32).reshape(-1, 3)
        self.colors = np.ascontiguousarray(self.colors, dtype=np.float32).reshape(-1, 3)
        if len(self.points) != len(self.colors):
            raise UserError(f"panel {self.name}: {len(self.points)} points but {len(self.colors)} colours")


def patch_palette(n: int) -> np.ndarray:
    """(n, 3) float32 well-separated hues (golden-ratio steps), fixed for a given n."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    return np.array([colorsys.hsv_to_rgb(h, 0.75, 0.85) for h in hues], dtype=np.float32).reshape(n, 3)


@contextlib.contextmanager
def _mask_ratio(model: nn.Module, ratio: Optional[float]) -> Iterator[None]:
    if ratio is None:
        yield
        return
    if not 0.0 < ratio < 1.0:
        raise UserError(f"mask ratio must be in (0, 1); got {ratio}")
    old = model.mask_ratio
    model.mask_ratio = float(ratio)
    try:
        yield
    finally:
        model.mask_ratio = old


@torch.no_grad()
def run_pretrainer(model: nn.Module, inputs: torch.Tensor, seed: int = 0, mask_ratio: Optional[float] = None):
    """One eval-mode forward of a :class:`~pointmap.models.MAPPretrainer` with a mask drawn from a
    generator seeded with ``seed`` (the same mask every call), optionally at another ``mask_ratio``.
    The model's train/eval mode is restored afterwards. Returns its :class:`PretrainOutput`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(int(seed))
    try:
        with _mask_ratio(model, mask_ratio):
            return model(inputs.to(device), generator=gen)
    finally:
        model.train(was_training)


def sample_chamfer(out, index: int = 0, norm: int = 2) -> float:
    """Chamfer distance (L2 by default: the pretraining loss) between predicted and true masked patches
    of sample ``index``, averaged over its masked patches."""
    pred, target = out.pred[index].float(), out.target[index].float()
    return float(chamfer(pred, target, norm=norm))


def _solid(n: int, role: str) -> np.ndarray:
    return np.tile(np.asarray(ROLE_COLORS[role], dtype=np.float32), (n, 1))


def reconstruction_panels(inputs: torch.Tensor, out, index: int = 0, color_by: str = "role") -> List[Panel]:
    """The four panels of sample ``index``.

    inputs: (B, N, 3) the clouds given to the model; out: its :class:`PretrainOutput` (points).
    color_by: ``role`` (one colour per role) or ``patch`` (masked patches one hue each, matched between
    ground truth and prediction; visible patches keep the role colour).
    """
    if color_by not in ("role", "patch"):
        raise UserError(f"color_by must be 'role' or 'patch'; got {color_by!r}")
    if out.patches.dim() != 4:
        raise UserError("reconstruction_panels needs a point-cloud pretrainer output; "
                         "use pointmap.vis.image_grid for images")
    cloud = inputs[index].detach().float().cpu().numpy()
    mask = out.mask[index].cpu()
    visible = out.patches[index][~mask].float().cpu().numpy()  # (V, K, 3)
    truth = out.target[index].float().cpu().numpy()             # (M, K, 3)
    pred = out.pred[index].float().cpu().numpy()                # (M, K, 3)
    v, m, k = visible.shape[0], truth.shape[0], truth.shape[1]
    vis_colors = _solid(v * k, "visible")
    if color_by == "patch":
        hues = np.repeat(patch_palette(m), k, axis=0)
        truth_colors, pred_colors = hues, hues
    else:
        truth_colors, pred_colors = _solid(m * k, "masked"), _solid(m * k, "predicted")
    return [
        Panel("input", f"input ({len(cloud)} points)", cloud, _solid(len(cloud), "input")),
        Panel("visible", f"visible ({v} patches)", visible.reshape(-1, 3), vis_colors),
        Panel("masked", f"masked, ground truth ({m})", truth.reshape(-1, 3), truth_colors),
        Panel("reconstruction", "reconstruction", np.concatenate([visible.reshape(-1, 3), pred.reshape(-1, 3)]),
              np.concatenate([vis_colors, pred_colors])),
    ]
