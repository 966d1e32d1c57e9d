"""Point-cloud transforms: small composable objects, buildable from config entries.

Each transform takes an item dict (``points`` (..., N, 3), optional ``normals`` (..., N, 3) and ``seg``
(..., N)) or a bare points tensor, and returns the same kind. Leading batch dimensions are allowed, so
the same objects augment a batch on the device inside a training step. Randomness comes from torch's
generator (seeded per DataLoader worker by torch), never from numpy's global state.

    build_transforms([{"name": "sample", "num_points": 1024, "method": "fps"},
                      {"name": "normalize"}, {"name": "scale_translate"}])
"""
import math
from typing import Any, Callable, List, Mapping, Optional, Sequence, Union

import torch

from ..errors import ConfigError, UserError, accepted_kwargs, check_kwargs, one_line
from ..registry import Registry

Item = Union[dict, torch.Tensor]


class Transform:
    """Base class: subclasses implement ``apply(item: dict) -> dict``."""

    def __call__(self, item: Item) -> Item:
        if isinstance(item, dict):
            return self.apply(dict(item))
        return self.apply({"points": torch.as_tensor(item)})["points"]

    def apply(self, item: dict) -> dict:
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _rand(shape, like: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return torch.rand(shape, dtype=like.dtype, device=like.device) * (high - low) + low


def _take(x: torch.Tensor, idx: torch.Tensor, point_dim: int) -> torch.Tensor:
    """Select points: ``idx`` is (n,) shared by every cloud, or (..., n) per cloud."""
    if idx.dim() == 1:
        return x.index_select(point_dim % x.dim(), idx.to(x.device))
    if point_dim == -2:
        return torch.gather(x, -2, idx.unsqueeze(-1).expand(*idx.shape, x.shape[-1]))
    return torch.gather(x, -1, idx)


def _take_all(item: dict, idx: torch.Tensor) -> dict:
    for key, dim in (("points", -2), ("normals", -2), ("seg", -1)):
        if key in item:
            item[key] = _take(item[key], idx, dim)
    return item


class Sample(Transform):
    """Pick ``num_points`` points.

    Methods:
        ``random``: without replacement (padded with repeats when the cloud is smaller); when it keeps every
            point it is a random permutation. On a batch one draw serves every cloud.
        ``replace``: ``num_points`` independent draws with replacement (Point-MAE's part segmentation).
        ``fps``: farthest point sampling (:func:`pointmap.ops.fps`), from the cloud's first point or, with
            ``random_start``, from a random one: the cloud is shuffled first, as the peers' training clouds
            arrive, so every epoch draws another subset (an FPS-ordered cache would otherwise give the same
            points every time). ``skip_near_origin`` copies pointnet2_ops' rule of never taking a point within
            1e-3 of the origin after the first. A cloud of at most ``num_points`` points is taken as
            ``random`` takes it (all its points in random order, padded with repeats when smaller).
        ``first``: the first ``num_points`` points as stored.

    ``seed``: draw from a generator seeded with it on every call instead of torch's global one, so every call
    draws the same indices for clouds of a size: a deterministic evaluation sample, the same in every run and
    every epoch (a random subset all the same, as long as the stored point order is not tied to the seed).
    """

    METHODS = ("random", "replace", "fps", "first")

    def __init__(self, num_points: int, method: str = "random", random_start: bool = False,
                 skip_near_origin: bool = False, seed: Optional[int] = None):
        if method not in self.METHODS:
            raise ConfigError(f"sample: unknown method {method!r}; valid: {', '.join(self.METHODS)}")
        if method != "fps" and (random_start or skip_near_origin):
            raise ConfigError(f"sample: random_start and skip_near_origin are options of method fps, not {method!r}")
        if int(num_points) < 1:
            raise ConfigError(f"sample: num_points must be >= 1, got {num_points}")
        self.num_points, self.method = int(num_points), method
        self.random_start, self.skip_near_origin = bool(random_start), bool(skip_near_origin)
        self.seed = None if seed is None else int(seed)

    def apply(self, item):
        pts = item["points"]
        n_in, n, dev = pts.shape[-2], self.num_points, pts.device
        gen = None if self.seed is None else torch.Generator().manual_seed(self.seed)

        def randperm(m):
            return torch.randperm(m, device=dev) if gen is None else torch.randperm(m, generator=gen).to(dev)

        def randint(high, count):
            return (torch.randint(high, (count,), device=dev) if gen is None
                    else torch.randint(high, (count,), generator=gen).to(dev))

        if self.method == "fps" and n_in > n:
            from pointmap.ops import fps  # data → ops is allowed; imported late to keep import light

            flat = pts.reshape(-1, n_in, 3)
            if self.random_start:  # FPS on a shuffled copy, its indices mapped back
                perm = torch.stack([randperm(n_in) for _ in range(len(flat))])
                shuffled = torch.gather(flat, 1, perm.unsqueeze(-1).expand(-1, -1, 3))
                idx = torch.gather(perm, 1, fps(shuffled, n, skip_near_origin=self.skip_near_origin))
            else:
                idx = fps(flat, n, skip_near_origin=self.skip_near_origin)
            idx = idx[0] if pts.dim() == 2 else idx.reshape(*pts.shape[:-2], n)
        elif self.method == "first" and n_in >= n:
            idx = torch.arange(n, device=dev)
        elif self.method == "replace":
            idx = randint(n_in, n)
        else:
            idx = randperm(n_in)[:n]
            if n_in < n:
                idx = torch.cat([idx, randint(n_in, n - n_in)])
        return _take_all(item, idx)


class Normalize(Transform):
    """Center on the centroid and scale into the unit sphere (max distance to the center = 1)."""

    def apply(self, item):
        pts = item["points"]
        pts = pts - pts.mean(dim=-2, keepdim=True)
        radius = pts.norm(dim=-1).amax(dim=-1, keepdim=True).clamp_min(1e-12)
        item["points"] = pts / radius.unsqueeze(-1)
        return item


class ScaleTranslate(Transform):
    """Random scale in ``[scale_low, scale_high]`` (per axis when ``anisotropic``) and translation in
    ``[-translate, translate]`` per axis; normals follow the inverse scale and are renormalized."""

    def __init__(self, scale_low: float = 2.0 / 3.0, scale_high: float = 1.5, translate: float = 0.2,
                 anisotropic: bool = True):
        self.scale_low, self.scale_high = float(scale_low), float(scale_high)
        self.translate, self.anisotropic = float(translate), bool(anisotropic)

    def apply(self, item):
        pts = item["points"]
        lead = pts.shape[:-2]
        scale = _rand((*lead, 1, 3 if self.anisotropic else 1), pts, self.scale_low, self.scale_high)
        shift = _rand((*lead, 1, 3), pts, -self.translate, self.translate)
        item["points"] = pts * scale + shift
        if "normals" in item:
            nrm = item["normals"] / scale
            item["normals"] = nrm / nrm.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return item


class Rotate(Transform):
    """Rotation about one axis (``y``, the up axis of ShapeNet and ModelNet, by default) by an angle
    uniform in ``[-max_angle, max_angle]`` degrees; applied to normals too."""

    AXES = {"x": 0, "y": 1, "z": 2}

    def __init__(self, axis: str = "y", max_angle: float = 180.0):
        if axis not in self.AXES:
            raise ConfigError(f"rotate: unknown axis {axis!r}; valid: x, y, z")
        self.axis, self.max_angle = axis, float(max_angle)

    def apply(self, item):
        pts = item["points"]
        lim = math.radians(self.max_angle)
        theta = _rand(pts.shape[:-2], pts, -lim, lim)
        c, s = torch.cos(theta), torch.sin(theta)
        a = self.AXES[self.axis]
        i, j = [k for k in range(3) if k != a]
        rot = torch.zeros(*theta.shape, 3, 3, dtype=pts.dtype, device=pts.device)
        rot[..., a, a] = 1.0
        rot[..., i, i], rot[..., i, j], rot[..., j, i], rot[..., j, j] = c, -s, s, c
        for key in ("points", "normals"):
            if key in item:
                item[key] = item[key] @ rot.transpose(-1, -2)
        return item


class Jitter(Transform):
    """Add Gaussian noise of std ``sigma``, clipped to ``[-clip, clip]``."""

    def __init__(self, sigma: float = 0.01, clip: float = 0.05):
        self.sigma, self.clip = float(sigma), float(clip)

    def apply(self, item):
        pts = item["points"]
        item["points"] = pts + (torch.randn_like(pts) * self.sigma).clamp(-self.clip, self.clip)
        return item


class Dropout(Transform):
    """Random point dropout: drop a fraction uniform in ``[0, max_ratio]`` of the points, replacing each
    dropped point (and its normal / part label) by the first point, so N stays fixed."""

    def __init__(self, max_ratio: float = 0.875):
        self.max_ratio = float(max_ratio)

    def apply(self, item):
        pts = item["points"]
        n = pts.shape[-2]
        ratio = _rand((*pts.shape[:-2], 1), pts, 0.0, self.max_ratio)
        drop = _rand((*pts.shape[:-2], n), pts) < ratio
        idx = torch.arange(n, device=pts.device).expand_as(drop).masked_fill(drop, 0)
        return _take_all(item, idx)


class Compose(Transform):
    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, item: Item) -> Item:
        for t in self.transforms:
            item = t(item)
        return item

    def __repr__(self):
        return f"Compose({self.transforms!r})"


TRANSFORMS = Registry("transform")
for _name, _cls in (("sample", Sample), ("normalize", Normalize), ("scale_translate", ScaleTranslate),
                    ("rotate", Rotate), ("jitter", Jitter), ("dropout", Dropout)):
    TRANSFORMS.register(_name, _cls)


def check_transforms(cfgs: Sequence[dict], section: str = "transforms") -> None:
    """A :class:`~pointmap.errors.ConfigError` for the first entry of ``cfgs`` (config section ``section``) that
    is not ``{name: <a registered transform>, **options of its class}`` with values its class takes (each
    entry is built once: the classes check their values)."""
    for i, cfg in enumerate(cfgs or []):
        where = f"{section}[{i}]"
        if not isinstance(cfg, dict) or "name" not in cfg:
            raise ConfigError(f"{where}: expected a mapping {{name: <transform>, ...options}}, got {cfg!r}")
        cls = TRANSFORMS.get(cfg["name"])
        options = {k: v for k, v in cfg.items() if k != "name"}
        check_kwargs(where, f"transform {cfg['name']!r}", options, accepted_kwargs(cls))
        try:
            cls(**options)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from e
        except (TypeError, ValueError) as e:  # a required option left out, a value of the wrong kind
            raise ConfigError(f"{where}: transform {cfg['name']!r}: bad options {options}: {one_line(e)}") from e


def build_transform(cfg: dict) -> Transform:
    check_transforms([cfg])
    cfg = dict(cfg)
    return TRANSFORMS.get(cfg.pop("name"))(**cfg)


def build_transforms(cfgs: List[dict]) -> Compose:
    """A :class:`Compose` from config entries ``[{"name": ..., **options}, ...]``."""
    return Compose([build_transform(c) for c in cfgs or []])


def create_transform(pretrained_cfg: Mapping[str, Any]) -> Compose:
    """The test-time pipeline of a model's ``pretrained_cfg`` (timm's ``resolve_data_config`` +
    ``create_transform``): its ``transforms``, led by farthest point sampling of its ``num_points`` when they
    sample none (a cloud of one's own has any number of points).

        model = pointmap.create_model("pointmae", pretrained="pointmae.modelnet40_1k")
        points = create_transform(model.pretrained_cfg)(torch.as_tensor(cloud))   # (num_points, 3)
    """
    if pretrained_cfg.get("modality", "points") != "points":
        raise UserError(f"{pretrained_cfg.get('name')}: a {pretrained_cfg.get('modality')} model takes tensors of "
                        f"input_size {pretrained_cfg.get('input_size')}, not point clouds")
    transforms = [dict(t) for t in pretrained_cfg.get("transforms") or []]
    n = pretrained_cfg.get("num_points")
    if n and not any(t.get("name") == "sample" for t in transforms):
        transforms.insert(0, {"name": "sample", "num_points": int(n), "method": "fps"})
    return build_transforms(transforms)
