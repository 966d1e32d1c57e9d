"""Image transforms for config entries: timm's ``create_transform`` (``{name: image, ...}``), registered among the
point transforms so a config's ``data.train_transforms`` / ``data.test_transforms`` and ``tools/recipe.py`` treat
both alike. It takes an item's ``image`` as a PIL image (the :mod:`.images` folder data sets give one) and
leaves a normalized (C, H, W) float tensor.

    # DeiT's training transform, as the MAP 2D release feeds it (datasets.py build_transform)
    {name: image, is_training: true, input_size: 224, color_jitter: 0.3, auto_augment: rand-m9-mstd0.5-inc1,
     interpolation: bicubic, re_prob: 0.25, re_mode: pixel}
    # MAE's: a crop of 20-100% of the area and a flip
    {name: image, is_training: true, input_size: 224, scale: [0.2, 1.0], color_jitter: null, interpolation: bicubic}
    # evaluation: resize to 224 / 0.875, centre crop
    {name: image, input_size: 224, crop_pct: 0.875, interpolation: bicubic}
"""
from __future__ import annotations

from typing import Optional, Sequence

from .transforms import TRANSFORMS, Transform

__all__ = ["ImageTransform", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageTransform(Transform):
    """timm's ``create_transform`` with these arguments (the same names and defaults; see timm's documentation):
    random-resized crop (``scale``, ``ratio``), flips, colour jitter (ignored by timm when ``auto_augment`` is
    RandAugment), ``auto_augment``, random erasing (``re_*``) when ``is_training``; resize and centre crop
    (``crop_pct``) otherwise; then ToTensor and Normalize(``mean``, ``std``)."""

    def __init__(self, input_size: int = 224, is_training: bool = False, scale: Optional[Sequence[float]] = None,
                 ratio: Optional[Sequence[float]] = None, hflip: float = 0.5, vflip: float = 0.0,
                 color_jitter: Optional[float] = 0.4, auto_augment: Optional[str] = None,
                 interpolation: str = "bilinear", mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, re_prob: float = 0.0, re_mode: str = "const", re_count: int = 1,
                 crop_pct: Optional[float] = None):
        from timm.data import create_transform

        self.input_size, self.is_training = int(input_size), bool(is_training)
        self.scale = None if scale is None else tuple(float(v) for v in scale)
        self.ratio = None if ratio is None else tuple(float(v) for v in ratio)
        self.hflip, self.vflip, self.color_jitter, self.auto_augment = float(hflip), float(vflip), color_jitter, auto_augment
        self.interpolation, self.mean, self.std = interpolation, tuple(mean), tuple(std)
        self.re_prob, self.re_mode, self.re_count, self.crop_pct = float(re_prob), re_mode, int(re_count), crop_pct
        self._tf = create_transform(**vars(self))

    def apply(self, item):
        item["image"] = self._tf(item["image"])
        return item

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"ImageTransform({args})"

    def __getstate__(self):  # DataLoader workers: rebuilt from the arguments
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __setstate__(self, state):
        self.__init__(**state)


TRANSFORMS.register("image", ImageTransform)
