"""Procedural shapes: trimesh primitives and part compositions, surface-sampled.

A shape kind is a function ``rng -> [Part, ...]``; each part places a unit template mesh (built once
with trimesh and cached) with a per-axis size, a rotation and an offset, and names its semantic part
(``top``, ``leg``, ...). :func:`generate` poses the whole object (random scale and rotation), samples
its surface by triangle area, adds noise and optionally cuts away a random slab (partial occlusion).
Proportions are drawn from overlapping ranges, so classes differ in shape rather than in size or
aspect ratio. Everything is y-up, like ShapeNet and ModelNet.
"""
import functools
import math
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from ..errors import UserError

STRETCH = 1.6  # largest random per-axis stretch of a whole object
_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # trimesh's z axis → y


class Part(NamedTuple):
    template: Tuple  # ("cylinder",) or ("torus", 0.3): a template name and its quantized shape parameter
    size: Tuple[float, float, float]
    at: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    rot: Optional[np.ndarray] = None
    part: str = "body"


@functools.lru_cache(maxsize=None)
def template(key: Tuple) -> Tuple[np.ndarray, np.ndarray]:
    """Unit template ``(vertices (V, 3) float64, faces (F, 3) int64)``, y-up, bounding box centered."""
    import trimesh.creation as tc

    name, q = key[0], (key[1] if len(key) > 1 else None)
    if name == "sphere":
        mesh = tc.icosphere(subdivisions=2, radius=0.5)
    elif name == "box":
        mesh = tc.box(extents=(1.0, 1.0, 1.0))
    elif name in ("cylinder", "cup"):
        mesh = tc.cylinder(radius=0.5, height=1.0, sections=24)
    elif name == "cone":
        mesh = tc.cone(radius=0.5, height=1.0, sections=24)
    elif name == "pyramid":
        mesh = tc.cone(radius=0.5 * math.sqrt(2.0), height=1.0, sections=4)
    elif name == "torus":  # q = tube radius / ring radius, outer diameter 1
        ring = 0.5 / (1.0 + q)
        mesh = tc.torus(major_radius=ring, minor_radius=ring * q, major_sections=24, minor_sections=10)
    elif name == "capsule":  # q = straight length / diameter
        mesh = tc.capsule(height=q, radius=0.5, count=[12, 12])
    elif name == "frustum":  # open truncated cone, top radius q * bottom radius (lamp shades, shoulders)
        mesh = tc.revolve([[0.5, -0.5], [0.5 * q, 0.5]], sections=24)
    else:
        raise ValueError(f"unknown template {name!r}")
    verts = np.asarray(mesh.vertices, dtype=np.float64) @ _Y_UP.T
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if name == "cup":  # drop the top cap: an open cup
        tri = verts[faces]
        normal_y = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 1]
        faces = faces[~((tri[:, :, 1] > 0.49).all(axis=1) & (normal_y > 0))]
    lo, hi = verts.min(axis=0), verts.max(axis=0)
    verts = verts - (lo + hi) / 2
    verts.setflags(write=False)
    faces.setflags(write=False)
    return verts, faces


def _q(x: float, step: float = 0.05) -> float:
    """Quantize a shape parameter so its template is built once."""
    return round(round(x / step) * step, 4)


def rot_x(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(rad: float) -> np.ndarray:
    c, s = math.cos(rad), math.sin(rad)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# ---------------------------------------------------------------- primitives (one part, "body")
def _sphere(rng):
    return [Part(("sphere",), (1.0, 1.0, 1.0))]


def _ellipsoid(rng):
    axes = np.array([1.0, rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)])
    return [Part(("sphere",), tuple(rng.permutation(axes)))]


def _box(rng):
    return [Part(("box",), tuple(rng.uniform(0.35, 1.0, 3)))]


def _cylinder(rng):
    d = rng.uniform(0.4, 1.0)
    return [Part(("cylinder",), (d, rng.uniform(0.4, 1.4), d))]


def _cone(rng):
    d = rng.uniform(0.5, 1.2)
    return [Part(("cone",), (d, rng.uniform(0.5, 1.4), d))]


def _pyramid(rng):
    d = rng.uniform(0.5, 1.2)
    return [Part(("pyramid",), (d, rng.uniform(0.5, 1.4), d * rng.uniform(0.8, 1.25)))]


def _torus(rng):
    return [Part(("torus", _q(rng.uniform(0.2, 0.45))), (1.0, 1.0, 1.0))]


def _capsule(rng):
    return [Part(("capsule", _q(rng.uniform(0.5, 2.0), 0.25)), (1.0, 1.0, 1.0))]


# ---------------------------------------------------------------- compositions (named parts)
def _legs(w, d, h, t, inset, round_legs):
    kind = ("cylinder",) if round_legs else ("box",)
    xs, zs = w / 2 - inset - t / 2, d / 2 - inset - t / 2
    return [Part(kind, (t, h, t), (sx * xs, h / 2, sz * zs), part="leg") for sx in (-1, 1) for sz in (-1, 1)]


def _table(rng):
    w, d, h = rng.uniform(0.8, 1.4), rng.uniform(0.5, 1.0), rng.uniform(0.45, 0.9)
    top_t, leg_t = rng.uniform(0.03, 0.08), rng.uniform(0.04, 0.09)
    top = Part(("box",), (w, top_t, d), (0.0, h + top_t / 2, 0.0), part="top")
    return [top] + _legs(w, d, h, leg_t, rng.uniform(0.0, 0.08), rng.random() < 0.5)


def _chair(rng):
    w, d, h = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6), rng.uniform(0.35, 0.5)
    seat_t, leg_t, back_h = rng.uniform(0.03, 0.07), rng.uniform(0.03, 0.06), rng.uniform(0.35, 0.7)
    seat = Part(("box",), (w, seat_t, d), (0.0, h + seat_t / 2, 0.0), part="seat")
    back = Part(("box",), (w, back_h, seat_t), (0.0, h + seat_t + back_h / 2, -(d - seat_t) / 2), part="back")
    return [seat, back] + _legs(w, d, h, leg_t, 0.0, rng.random() < 0.5)


def _mug(rng):
    r, h = rng.uniform(0.25, 0.45), rng.uniform(0.6, 1.1)
    hd = h * rng.uniform(0.45, 0.7)
    body = Part(("cup",), (2 * r, h, 2 * r), (0.0, h / 2, 0.0), part="body")
    handle = Part(("torus", _q(rng.uniform(0.12, 0.22))), (hd, hd, hd), (r, h / 2, 0.0), rot_x(90.0), part="handle")
    return [body, handle]


def _lamp(rng):
    base_r, base_h = rng.uniform(0.2, 0.35), rng.uniform(0.03, 0.08)
    stem_r, stem_h = rng.uniform(0.015, 0.04), rng.uniform(0.5, 1.0)
    shade_r, shade_h = rng.uniform(0.22, 0.4), rng.uniform(0.2, 0.4)
    top = base_h + stem_h
    return [Part(("cylinder",), (2 * base_r, base_h, 2 * base_r), (0.0, base_h / 2, 0.0), part="base"),
            Part(("cylinder",), (2 * stem_r, stem_h, 2 * stem_r), (0.0, base_h + stem_h / 2, 0.0), part="stem"),
            Part(("frustum", _q(rng.uniform(0.3, 0.6))), (2 * shade_r, shade_h, 2 * shade_r),
                 (0.0, top - shade_h * 0.3, 0.0), part="shade")]


def _bottle(rng):
    r, h = rng.uniform(0.18, 0.35), rng.uniform(0.5, 1.0)
    sh, nr, nh = rng.uniform(0.1, 0.25), rng.uniform(0.05, 0.1), rng.uniform(0.12, 0.3)
    return [Part(("cylinder",), (2 * r, h, 2 * r), (0.0, h / 2, 0.0), part="body"),
            Part(("frustum", _q(nr / r)), (2 * r, sh, 2 * r), (0.0, h + sh / 2, 0.0), part="body"),
            Part(("cylinder",), (2 * nr, nh, 2 * nr), (0.0, h + sh + nh / 2, 0.0), part="neck")]


def _airplane(rng):
    length, rad = rng.uniform(1.2, 1.8), rng.uniform(0.07, 0.13)
    span, chord = rng.uniform(1.0, 1.6), rng.uniform(0.2, 0.35)
    fin_h, tail_span = rng.uniform(0.15, 0.3), rng.uniform(0.3, 0.5)
    q = _q(max(length / (2 * rad) - 1.0, 0.5), 0.5)
    body_len = (q + 1.0) * 2 * rad
    rear = -body_len / 2 + chord * 0.4
    return [Part(("capsule", q), (2 * rad, 2 * rad, 2 * rad), rot=rot_z(90.0), part="fuselage"),
            Part(("box",), (chord, 0.03, span), (rng.uniform(-0.1, 0.15), 0.0, 0.0), part="wing"),
            Part(("box",), (chord * 0.7, fin_h, 0.03), (rear, rad + fin_h / 2, 0.0), part="tail"),
            Part(("box",), (chord * 0.6, 0.025, tail_span), (rear, rad * 0.5, 0.0), part="tail")]


def _dumbbell(rng):
    bar_len, bar_r = rng.uniform(0.6, 1.2), rng.uniform(0.03, 0.07)
    w = rng.uniform(0.2, 0.45)
    weight = ("sphere",) if rng.random() < 0.5 else ("cylinder",)
    wrot = rot_z(90.0) if weight[0] == "cylinder" else None
    size = (w, w * rng.uniform(0.5, 1.0), w) if weight[0] == "cylinder" else (w, w, w)
    return [Part(("cylinder",), (2 * bar_r, bar_len, 2 * bar_r), rot=rot_z(90.0), part="bar")] + [
        Part(weight, size, (s * bar_len / 2, 0.0, 0.0), wrot, part="weight") for s in (-1, 1)]


KINDS: Dict[str, callable] = {
    "sphere": _sphere, "ellipsoid": _ellipsoid, "box": _box, "cylinder": _cylinder, "cone": _cone,
    "pyramid": _pyramid, "torus": _torus, "capsule": _capsule,
    "table": _table, "chair": _chair, "mug": _mug, "lamp": _lamp, "bottle": _bottle,
    "airplane": _airplane, "dumbbell": _dumbbell,
}
# part names of each composed kind, in label order (what synthetic_parts segments)
PARTS: Dict[str, List[str]] = {
    "table": ["top", "leg"], "chair": ["seat", "back", "leg"], "mug": ["body", "handle"],
    "lamp": ["base", "stem", "shade"], "bottle": ["body", "neck"], "airplane": ["fuselage", "wing", "tail"],
    "dumbbell": ["bar", "weight"],
}


def assemble(parts: List[Part]) -> Tuple[np.ndarray, np.ndarray, List[str], np.ndarray]:
    """Place the parts: ``(vertices, faces, part names, part index of each face)``."""
    verts, faces, face_part, names, offset = [], [], [], [], 0
    for part in parts:
        v, f = template(part.template)
        v = v * np.asarray(part.size)
        if part.rot is not None:
            v = v @ part.rot.T
        verts.append(v + np.asarray(part.at))
        faces.append(f + offset)
        offset += len(v)
        if part.part not in names:
            names.append(part.part)
        face_part.append(np.full(len(f), names.index(part.part)))
    return np.concatenate(verts), np.concatenate(faces), names, np.concatenate(face_part)


def sample_surface(verts, faces, n: int, rng) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` points uniform on the surface: ``(points (n, 3), unit normals (n, 3), face index (n,))``."""
    tri = verts[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area2 = np.linalg.norm(cross, axis=1)
    cdf = np.cumsum(area2)
    fid = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(cdf) - 1)
    r1, r2 = np.sqrt(rng.random(n))[:, None], rng.random(n)[:, None]
    t = tri[fid]
    pts = (1 - r1) * t[:, 0] + r1 * (1 - r2) * t[:, 1] + r1 * r2 * t[:, 2]
    normals = cross[fid] / np.maximum(area2[fid], 1e-20)[:, None]
    return pts, normals, fid


def random_rotation(rng, mode: str) -> np.ndarray:
    if mode == "none":
        return np.eye(3)
    if mode == "up":
        return rot_y(rng.uniform(0.0, 2 * math.pi))
    if mode == "so3":
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        q = q * np.sign(np.diag(r))
        return q if np.linalg.det(q) > 0 else -q
    raise UserError(f"unknown rotation {mode!r}; valid: up, so3, none")


def generate(kind: str, rng, num_points: int = 1024, noise: float = 0.005, occlusion: float = 0.0,
             rotation: str = "up", scale: Tuple[float, float] = (0.4, 0.8)) -> Dict[str, np.ndarray]:
    """One posed, sampled object: ``points``, ``normals`` (N, 3) float32, ``part`` (N,) index into
    ``part_names``. ``occlusion`` is the largest fraction of the surface cut away by a random plane."""
    verts, faces, names, face_part = assemble(KINDS[kind](rng))
    lo, hi = verts.min(axis=0), verts.max(axis=0)
    verts = verts - (lo + hi) / 2
    if kind not in ("sphere", "ellipsoid"):  # blur aspect ratios across classes (a stretched sphere is an ellipsoid)
        verts = verts * rng.uniform(1.0 / STRETCH, STRETCH, 3)
    # unit radius first, so size carries no class information
    verts = verts / np.linalg.norm(verts, axis=1).max()
    verts = verts @ (random_rotation(rng, rotation) * rng.uniform(*scale)).T
    frac = rng.uniform(0.0, occlusion) if occlusion > 0 else 0.0
    m = num_points if frac == 0 else int(math.ceil(num_points / (1.0 - frac))) + 8
    pts, normals, fid = sample_surface(verts, faces, m, rng)
    if frac > 0:
        proj = pts @ rng.normal(size=3)
        keep = np.flatnonzero(proj <= np.quantile(proj, 1.0 - frac))
        if len(keep) < num_points:
            keep = np.concatenate([keep, rng.choice(keep, num_points - len(keep))])
        keep = keep[:num_points]
        pts, normals, fid = pts[keep], normals[keep], fid[keep]
    if noise > 0:
        pts = pts + np.clip(rng.normal(0.0, noise, pts.shape), -3 * noise, 3 * noise)
    return {"points": pts.astype(np.float32), "normals": normals.astype(np.float32),
            "part": face_part[fid], "part_names": names}
