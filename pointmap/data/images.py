"""Image data sets.

- ``digits``: a small set for the 2D adapter demo, scikit-learn's 8x8 digits (1797 images, bundled with
  scikit-learn, no download), upsampled to ``size`` x ``size``, 1 channel, float32 in [0, 1]. Items are
  ``{"image": (1, H, W), "label"}``; a fixed seeded permutation gives train (70%), val (10%) and test (20%).
- ``image_folder``: ImageNet's layout on disk (``<root>/train/<class>/*.JPEG``), PIL images for timm's transforms.
- ``sample_photos``: the 20 photographs that ship with scikit-image and matplotlib, PIL images likewise.
"""
import os
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import MissingPackageError, UserError, one_line
from .io import check_split, missing
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


def _rgb(path: str):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


class ImageFolder(Dataset):
    """Images in ImageNet's layout, ``<root>/<split>/<class>/<image>`` (torchvision's ``ImageFolder``: classes are
    the sorted folder names). Items are ``{"image": PIL RGB image, "label"}``: a config's ``{name: image, ...}``
    transform (:mod:`.image_transforms`) turns the image into a tensor. ``num_classes``: the classes the folder
    must hold (what a model is sized by before the files are read), checked when given."""

    def __init__(self, root: str, split: str = "train", num_classes: Optional[int] = None, transform=None):
        from torchvision.datasets import ImageFolder as _Folder

        folder = os.path.join(str(root), split)
        if not os.path.isdir(folder):
            raise missing(folder, f"image folder split {split!r}")
        try:
            self.folder = _Folder(folder, loader=_rgb)
        except FileNotFoundError as e:  # torchvision: no class folder, or none with an image in it
            raise UserError(f"{folder}: {one_line(e)}") from e
        self.classes = list(self.folder.classes)
        if num_classes is not None and len(self.classes) != int(num_classes):
            raise UserError(f"{folder}: {len(self.classes)} class folders, but data.options.num_classes is {num_classes}")
        self.num_classes = len(self.classes)
        self.labels = torch.tensor(self.folder.targets, dtype=torch.long)
        self.transform = transform

    def __len__(self):
        return len(self.folder)

    def __getitem__(self, index):
        image, label = self.folder[index]
        item = {"image": image, "label": torch.tensor(label)}
        return self.transform(item) if self.transform is not None else item


def _folder_labels(num_classes: Optional[int] = None, **_):
    return None if num_classes is None else {"num_classes": int(num_classes)}


@register_dataset("image_folder", forwards=(ImageFolder,), label_space=_folder_labels, on_disk=True)
def _build_image_folder(root, split, **options):
    return ImageFolder(root, split, **options)


# Photographs that ship inside installed packages (scikit-image's data folder, matplotlib's sample data): real
# images for a demo without a download. Drawings, test patterns and synthetic images of those folders are left out.
SKIMAGE_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
                  "coffee.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
                  "motorcycle_left.png", "motorcycle_right.png", "page.png", "retina.jpg", "rocket.jpg", "text.png")
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg",)
HELD_OUT_PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "grace_hopper.jpg")  # the val split


def sample_photo_paths() -> List[str]:
    """The paths of the shipped photographs, in a fixed order (scikit-image's, then matplotlib's)."""
    try:
        import matplotlib
        import skimage
    except ImportError as e:
        raise MissingPackageError("the sample_photos data set reads the photographs shipped with scikit-image and "
                                  "matplotlib: pip install scikit-image matplotlib") from e
    sk = os.path.join(os.path.dirname(skimage.__file__), "data")
    mpl = os.path.join(matplotlib.get_data_path(), "sample_data")
    paths = [os.path.join(sk, f) for f in SKIMAGE_PHOTOS] + [os.path.join(mpl, f) for f in MATPLOTLIB_PHOTOS]
    absent = [p for p in paths if not os.path.isfile(p)]
    if absent:
        raise missing(absent[0], "shipped sample photograph (another scikit-image or matplotlib version?)")
    return paths


class SamplePhotos(Dataset):
    """The photographs shipped with scikit-image and matplotlib (:data:`SKIMAGE_PHOTOS`, :data:`MATPLOTLIB_PHOTOS`):
    ``val`` holds :data:`HELD_OUT_PHOTOS` (once each), ``train`` the other 16, each listed ``repeats`` times (an
    epoch of random crops of every photo, ``repeats`` per photo). Items are ``{"image": PIL RGB image, "label"}``, the label
    the photo's index (``classes``: the file names without extension)."""

    def __init__(self, split: str = "train", repeats: int = 1, transform=None):
        check_split(split, ("train", "val"), "sample_photos")
        if int(repeats) < 1:
            raise UserError(f"sample_photos: repeats must be >= 1, got {repeats}")
        paths = [p for p in sample_photo_paths() if (os.path.basename(p) in HELD_OUT_PHOTOS) == (split == "val")]
        self.paths, self.repeats = paths, int(repeats) if split == "train" else 1
        self.classes = [os.path.splitext(os.path.basename(p))[0] for p in paths]
        self.num_classes = len(self.classes)
        self.images = [_rgb(p) for p in paths]
        self.labels = torch.arange(len(paths)).repeat(self.repeats)
        self.transform = transform

    def __len__(self):
        return len(self.paths) * self.repeats

    def __getitem__(self, index):
        i = index % len(self.paths)
        item = {"image": self.images[i].copy(), "label": torch.tensor(i)}
        return self.transform(item) if self.transform is not None else item


@register_dataset("sample_photos", forwards=(SamplePhotos,))
def _build_sample_photos(root, split, **options):
    return SamplePhotos(split, **options)
