"""Panels side by side in one image: Open3D's offscreen renderer, or matplotlib as the fallback.

Both backends draw every panel from the same :class:`Camera` into a ``(h, w, 3)`` uint8 tile; one
compositor puts the tiles side by side under a caption line, so the two produce the same layout.

Open3D renders in a child process (:mod:`pointmap.vis.o3d_worker`): its Filament engine aborts the
whole process when no Vulkan/GL device is usable, which no ``try`` can catch, and a training run that
draws a picture every few epochs must survive that. If open3d cannot be imported or the child fails,
the matplotlib backend draws the same panels after a one-line warning that says why.
``POINTMAP_VIS_BACKEND=open3d|matplotlib`` picks a backend for every call that asks for ``auto``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import MissingPackageError, UnavailableError, UserError
from .panels import Panel

__all__ = ["Camera", "render_panels", "compose", "open3d_problem", "write_ply", "read_ply", "show_panels",
           "save_png", "BACKENDS"]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "open3d", "matplotlib")
BACKGROUND = (1.0, 1.0, 1.0)
O3D_TIMEOUT_S = 300  # first start of a software Vulkan device takes a few seconds; a hang should not last


@dataclass
class Camera:
    """A perspective camera looking at ``center`` from ``eye``; ``fov`` is vertical, in degrees."""

    center: Tuple[float, float, float]
    eye: Tuple[float, float, float]
    up: Tuple[float, float, float] = (0.0, 1.0, 0.0)
    fov: float = 30.0

    @classmethod
    def fit(cls, points: np.ndarray, elevation: float = 25.0, azimuth: float = 35.0, fov: float = 30.0,
            up: Sequence[float] = (0.0, 1.0, 0.0), margin: float = 1.08) -> "Camera":
        """A camera that frames the bounding sphere of ``points`` (N, 3); angles in degrees, y-up."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        lo, hi = points.min(0), points.max(0)
        center = (lo + hi) / 2
        radius = max(float(np.linalg.norm(points - center, axis=1).max()), 1e-6)
        e, a = math.radians(elevation), math.radians(azimuth)
        direction = np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])
        dist = margin * radius / math.sin(math.radians(fov) / 2)
        return cls(tuple(center), tuple(center + dist * direction), tuple(float(u) for u in up), fov)

    def project(self, points: np.ndarray, width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) (x right, y down) and depths (N,) of ``points`` (N, 3)."""
        center, eye, up = (np.asarray(v, dtype=np.float64) for v in (self.center, self.eye, self.up))
        fwd = center - eye
        fwd /= np.linalg.norm(fwd)
        right = np.cross(fwd, up)
        right /= max(np.linalg.norm(right), 1e-12)
        true_up = np.cross(right, fwd)
        rel = np.asarray(points, dtype=np.float64) - eye
        depth = rel @ fwd
        f = (height / 2) / math.tan(math.radians(self.fov) / 2)
        z = np.maximum(depth, 1e-9)
        x = width / 2 + f * (rel @ right) / z
        y = height / 2 - f * (rel @ true_up) / z
        return np.stack([x, y], axis=1), depth


# ----------------------------------------------------------------------------- backends

_O3D_IMPORT_PROBLEM: Optional[str] = "unchecked"


def open3d_problem() -> Optional[str]:
    """None when open3d imports in this process, else why not (one line). Checked once per process."""
    global _O3D_IMPORT_PROBLEM
    if _O3D_IMPORT_PROBLEM == "unchecked":
        try:
            import open3d  # noqa: F401
            _O3D_IMPORT_PROBLEM = None
        except Exception as e:  # ImportError, or OSError for a missing system library (libusb, libGL)
            _O3D_IMPORT_PROBLEM = f"open3d cannot be imported ({type(e).__name__}: {' '.join(str(e).split())})"
    return _O3D_IMPORT_PROBLEM


def _render_open3d(panels: Sequence[Panel], camera: Camera, width: int, height: int,
                   point_size: float) -> List[np.ndarray]:
    """Render in a child process; raises RuntimeError with a one-line reason when it fails."""
    problem = open3d_problem()
    if problem:
        raise RuntimeError(problem)
    meta = {"width": width, "height": height, "point_size": point_size, "background": BACKGROUND,
            "camera": {"center": camera.center, "eye": camera.eye, "up": camera.up, "fov": camera.fov},
            "panels": len(panels)}
    with tempfile.TemporaryDirectory(prefix="pointmap-vis-") as tmp:
        src, dst = os.path.join(tmp, "panels.npz"), os.path.join(tmp, "tiles.npy")
        arrays = {}
        for i, p in enumerate(panels):
            arrays[f"points{i}"], arrays[f"colors{i}"] = p.points, p.colors
        np.savez(src, meta=np.array(json.dumps(meta)), **arrays)
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])))
        try:
            proc = subprocess.run([sys.executable, "-m", "pointmap.vis.o3d_worker", src, dst], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=O3D_TIMEOUT_S)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"the Open3D renderer did not finish in {O3D_TIMEOUT_S} s") from e
        if proc.returncode != 0 or not os.path.isfile(dst):
            raise RuntimeError(f"the Open3D renderer failed ({_reason(proc)})")
        tiles = np.load(dst)
    return [t for t in tiles]


def _reason(proc: subprocess.CompletedProcess) -> str:
    """The most telling line of a failed child: Filament's ``reason:`` line, else the last line."""
    lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("reason:") or "Error" in ln:
            return f"exit {proc.returncode}: {ln}"
    return f"exit {proc.returncode}: {lines[-1] if lines else 'no output'}"


def _render_matplotlib(panels: Sequence[Panel], camera: Camera, width: int, height: int,
                       point_size: float) -> List[np.ndarray]:
    """Each panel projected with ``camera`` and drawn far to near (painter's order) as round dots."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise MissingPackageError("drawing reconstructions needs matplotlib (or open3d): pip install 'pointmap[vis]'") from e
    dpi = 100
    tiles = []
    for p in panels:
        fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor=BACKGROUND)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        if len(p.points):
            xy, depth = camera.project(p.points, width, height)
            order = np.argsort(-depth, kind="stable")
            # scatter sizes are in points² (1/72 in): a dot of point_size pixels across
            ax.scatter(xy[order, 0], xy[order, 1], c=p.colors[order], s=(point_size * 72 / dpi) ** 2,
                       marker="o", linewidths=0, antialiased=False)
        canvas.draw()
        tile = np.asarray(canvas.buffer_rgba())[..., :3]
        tiles.append(_fit(tile, height, width))
    return tiles


def _fit(tile: np.ndarray, height: int, width: int) -> np.ndarray:
    """Crop or pad (white) to exactly (height, width, 3): figure sizes round to whole pixels."""
    out = np.full((height, width, 3), 255, dtype=np.uint8)
    h, w = min(height, tile.shape[0]), min(width, tile.shape[1])
    out[:h, :w] = tile[:h, :w]
    return out


# ----------------------------------------------------------------------------- compositing

def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def compose(tiles: Sequence[np.ndarray], titles: Sequence[str], caption: str, width: int, height: int,
            caption_height: int) -> np.ndarray:
    """Tiles side by side under a caption line, panel titles on the tiles: (height, width, 3) uint8."""
    from PIL import Image, ImageDraw

    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    tile_w = width // max(len(tiles), 1)
    for i, tile in enumerate(tiles):
        canvas.paste(Image.fromarray(np.ascontiguousarray(tile)), (i * tile_w, caption_height))
    draw = ImageDraw.Draw(canvas)
    font = _font(max(9, int(caption_height * 0.6)))
    small = _font(max(8, int(caption_height * 0.5)))
    if caption:
        draw.text((6, caption_height // 2), caption, fill=(0, 0, 0), font=font, anchor="lm")
    for i, title in enumerate(titles):
        draw.text((i * tile_w + tile_w // 2, caption_height + 4), title, fill=(60, 60, 60), font=small, anchor="mt")
    for i in range(1, len(tiles)):
        draw.line([(i * tile_w, caption_height), (i * tile_w, height)], fill=(220, 220, 220))
    return np.asarray(canvas)


def render_panels(panels: Sequence[Panel], size: Tuple[int, int] = (1600, 440), caption: str = "",
                  backend: str = "auto", camera: Optional[Camera] = None, point_size: float = 4.0) -> np.ndarray:
    """All ``panels`` side by side in one (H, W, 3) uint8 image of ``size`` = (W, H).

    backend: ``auto`` (Open3D when it can render here, else matplotlib with a warning), ``open3d``
    (an error when it cannot) or ``matplotlib``. camera: default frames the first panel (the input).
    """
    width, height = int(size[0]), int(size[1])
    backend = _pick(backend)
    n = len(panels)
    if n == 0:
        raise UserError("render_panels needs at least one panel")
    caption_height = max(14, min(40, height // 14)) if caption else 0
    tile_w, tile_h = width // n, height - caption_height
    if tile_w < 16 or tile_h < 16:
        raise UserError(f"image size {width}x{height} is too small for {n} panels (each needs 16x16 pixels)")
    camera = camera or Camera.fit(panels[0].points if len(panels[0].points) else
                                  np.concatenate([p.points for p in panels]))
    tiles = None
    if backend in ("auto", "open3d"):
        try:
            tiles = _render_open3d(panels, camera, tile_w, tile_h, point_size)
        except RuntimeError as e:
            if backend == "open3d":
                raise UnavailableError(f"{e}; pass backend='matplotlib' or install what it needs "
                                   f"(pip install open3d; apt-get install libusb-1.0-0 libvulkan1 "
                                   f"mesa-vulkan-drivers)") from e
            _warn_fallback(str(e))
    if tiles is None:
        tiles = _render_matplotlib(panels, camera, tile_w, tile_h, point_size)
    return compose(tiles, [p.title for p in panels], caption, width, height, caption_height)


_WARNED = set()


def _warn_fallback(reason: str) -> None:
    msg = f"rendering with matplotlib instead of Open3D: {reason}"
    if msg not in _WARNED:  # once per reason and process, not every epoch; a log line (a warnings.warn as
        _WARNED.add(msg)    # well printed it twice)
        logger.warning(msg)


def _pick(backend: str) -> str:
    if backend == "auto":
        backend = os.environ.get("POINTMAP_VIS_BACKEND", "auto") or "auto"
    if backend not in BACKENDS:
        raise UserError(f"unknown vis backend {backend!r}; valid: {', '.join(BACKENDS)}")
    return backend


# ----------------------------------------------------------------------------- files and window

def save_png(image: np.ndarray, path: str) -> str:
    """Write an (H, W, 3) uint8 image as PNG (parent folders created); returns the path."""
    from PIL import Image

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path, format="PNG")
    return path


def write_ply(points: np.ndarray, colors: np.ndarray, path: str) -> str:
    """Binary little-endian PLY with float xyz and uchar rgb (readable by Open3D, trimesh, MeshLab)."""
    points = np.asarray(points, dtype="<f4").reshape(-1, 3)
    rgb = np.clip(np.round(np.asarray(colors, dtype=np.float64).reshape(-1, 3) * 255), 0, 255).astype(np.uint8)
    row = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    data = np.empty(len(points), dtype=row)
    for i, k in enumerate("xyz"):
        data[k] = points[:, i]
    for i, k in enumerate(("red", "green", "blue")):
        data[k] = rgb[:, i]
    header = ("ply\nformat binary_little_endian 1.0\ncomment written by pointmap.vis\n"
              f"element vertex {len(points)}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(data.tobytes())
    return path


def read_ply(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Read back a PLY written by :func:`write_ply`: points (N, 3) float32, colours (N, 3) float32."""
    with open(path, "rb") as f:
        blob = f.read()
    end = blob.index(b"end_header\n") + len(b"end_header\n")
    n = next(int(ln.split()[-1]) for ln in blob[:end].decode("ascii").splitlines() if ln.startswith("element vertex"))
    row = np.dtype([("xyz", "<f4", 3), ("rgb", "u1", 3)])
    data = np.frombuffer(blob, dtype=row, count=n, offset=end)
    return data["xyz"].copy(), data["rgb"].astype(np.float32) / 255


def show_panels(panels: Sequence[Panel], title: str = "pointmap") -> None:
    """Open Open3D's window with the panels side by side along x (needs a display)."""
    problem = open3d_problem()
    if problem:
        raise UnavailableError(f"--show needs Open3D's window: {problem}")
    import open3d as o3d

    geoms, offset = [], 0.0
    for p in panels:
        if not len(p.points):
            continue
        lo, hi = p.points.min(0), p.points.max(0)
        shifted = p.points.astype(np.float64) + [offset - lo[0], 0.0, 0.0]
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(shifted))
        pc.colors = o3d.utility.Vector3dVector(p.colors.astype(np.float64))
        geoms.append(pc)
        offset += float(hi[0] - lo[0]) * 1.15 + 1e-3
    o3d.visualization.draw_geometries(geoms, window_name=title)

