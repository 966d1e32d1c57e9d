"""The ``vis`` training hook: every N epochs, the reconstruction of one fixed sample, as a PNG in
``<work_dir>/vis/epoch_XXX.png`` and as an image in TensorBoard (tag ``vis/reconstruction``).

Switched on from a config (the hook name is ``vis``)::

    hooks:
      - {name: vis, every: 2}      # optional: index, seed, size, backend, color_by, num_images

The sample is item ``index`` of the validation split when the run has one, else of the train split
without its random augmentation (normalized only), and the mask is drawn from a generator seeded with
``seed``: every picture shows the same cloud under the same mask, so they compare across epochs.
Point-cloud pretrainers get :func:`reconstruction_figure`; image pretrainers :func:`image_grid` of the
first ``num_images`` items. A picture that cannot be drawn is a warning, never the end of the run.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch

from pointmap.engine.hooks import Hook, check_every, register_hook

__all__ = ["VisHook", "fixed_sample"]

logger = logging.getLogger(__name__)


def fixed_sample(datasets: Dict[str, Any], index: int = 0, count: int = 1) -> torch.Tensor:
    """Items ``index .. index+count-1`` of the validation split (else train, unaugmented) stacked:
    points (count, N, 3) or images (count, C, H, W)."""
    from pointmap.data.transforms import Normalize

    ds = datasets["val"] if "val" in datasets else datasets["train"]
    augmented = ds is datasets["train"] and getattr(ds, "transform", None) is not None
    base, indices = getattr(ds, "base", ds), getattr(ds, "indices", None)
    out = []
    for i in range(index, index + count):
        i = i % len(ds)
        item = base[indices[i] if indices is not None else i] if augmented else ds[i]
        if "points" in item:
            x = torch.as_tensor(item["points"], dtype=torch.float32)
            out.append(Normalize()(x) if augmented else x)
        else:
            out.append(torch.as_tensor(item["image"], dtype=torch.float32))
    return torch.stack(out)


@register_hook("vis")
class VisHook(Hook):
    """See the module docstring. ``every``: draw after epochs N, 2N, ... and the last one."""

    main_process_only = True

    def __init__(self, every: int = 10, index: int = 0, seed: int = 0, size: Sequence[int] = (1600, 440),
                 backend: str = "auto", color_by: str = "role", num_images: int = 4, point_size: float = 4.0):
        self.every = check_every("vis", every)
        self.index, self.seed, self.size = int(index), int(seed), tuple(int(s) for s in size)
        self.backend, self.color_by, self.num_images = backend, color_by, int(num_images)
        self.point_size = float(point_size)
        self._sample: Optional[torch.Tensor] = None

    def before_train(self, trainer) -> None:
        self._sample = fixed_sample(trainer.datasets, self.index, 1)

    def after_epoch(self, trainer, metrics: Dict[str, Any]) -> None:
        epoch = trainer.state.epoch + 1
        if epoch % self.every and epoch != trainer.cfg.optim.loop_epochs:
            return
        try:
            image, caption = self.draw(trainer)
        except (RuntimeError, ValueError, ImportError, OSError) as e:
            logger.warning("vis hook: no picture at epoch %d: %s", epoch, " ".join(str(e).split()))
            return
        from .render import save_png

        path = save_png(image, os.path.join(trainer.work_dir, "vis", f"epoch_{epoch:03d}.png"))
        _add_tensorboard_image(trainer, "vis/reconstruction", image, epoch)
        logger.info("vis: %s (%s)", path, caption)

    def draw(self, trainer):
        """(image, caption) of the fixed sample under the current weights."""
        model = trainer.module
        if getattr(model.encoder, "modality", None) == "image":
            from .images import image_grid

            images = fixed_sample(trainer.datasets, self.index, self.num_images)
            return image_grid(model, images, seed=self.seed), f"{len(images)} images"
        from .figure import reconstruction_figure

        if self._sample is None:
            self._sample = fixed_sample(trainer.datasets, self.index, 1)
        fig = reconstruction_figure(model, self._sample[0], seed=self.seed, size=self.size, backend=self.backend,
                                    color_by=self.color_by, point_size=self.point_size,
                                    title=f"epoch {trainer.state.epoch + 1}")
        return fig.image, f"Chamfer L2 {fig.chamfer:.4g}"


def _add_tensorboard_image(trainer, tag: str, image: np.ndarray, step: int) -> None:
    writer = getattr(trainer, "writer", None)
    if writer is None:
        return
    if hasattr(writer, "image"):
        writer.image(tag, image, step)
        return
    tb = getattr(writer, "_tb", None)  # until RunWriter has an image() method
    if tb is not None:
        tb.add_image(tag, image, step, dataformats="HWC")
