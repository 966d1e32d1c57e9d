"""A small image data set for the 2D adapter demo: scikit-learn's 8x8 digits (1797 images, bundled with
scikit-learn, no download), upsampled to ``size`` x ``size``, 1 channel, float32 in [0, 1].
Items are ``{"image": (1, H, W), "label"}``; a fixed seeded permutation gives train (70%), val (10%)
and test (20%).
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import MissingPackageError
from .io import check_split
from .registry import register_dataset


class Digits(Dataset):
    classes = [str(d) for d in range(10)]
    num_classes = 10

    def __init__(self, split: str = "train", size: int = 32, seed: int = 0, transform=None):
        check_split(split, ("train", "val", "test"), "digits")
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:
            raise MissingPackageError("the digits data set needs scikit-learn: pip install scikit-learn") from e
        data = load_digits()
        order = np.random.default_rng(seed).permutation(len(data.target))
        n_train, n_val = int(0.7 * len(order)), int(0.1 * len(order))
        pick = {"train": order[:n_train], "val": order[n_train:n_train + n_val],
                "test": order[n_train + n_val:]}[split]
        images = torch.from_numpy(data.images[pick].astype(np.float32) / 16.0).unsqueeze(1)
        self.images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)
        self.labels = torch.from_numpy(data.target[pick].astype(np.int64))
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        item = {"image": self.images[index], "label": self.labels[index]}
        return self.transform(item) if self.transform is not None else item


@register_dataset("digits", forwards=(Digits,))
def _build_digits(root, split, **options):
    return Digits(split, **options)
