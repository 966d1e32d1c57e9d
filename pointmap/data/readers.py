"""One reader for a user's point-cloud and mesh files (re-exported by :mod:`pointmap.data.io`).

    points = read_points("scan.pcd")                      # (N, 3) float32
    cloud = read_points("table.xyz", normals=True)         # (N, 6): x y z nx ny nz
    points = read_points("bunny.obj", mesh_points=8192)    # a mesh: its surface, sampled (seeded)

| files | read with | notes |
| --- | --- | --- |
| ``.ply`` (ascii / binary) | trimesh | vertices; a ply with faces is a mesh |
| ``.pcd`` (ascii / binary) | numpy (``binary_compressed``: Open3D when installed) | fields ``x y z`` (``normal_x ...``) |
| ``.xyz`` ``.pts`` ``.txt`` | numpy | whitespace or commas; columns 4-6 are the normals, more are ignored; a leading count line and ``#`` comments are skipped |
| ``.npy`` ``.npz`` | numpy | (N, ≥3); ``.npz``: ``key``, else ``points`` / ``xyz`` / ``pos`` / ``data`` / its only array |
| ``.h5`` ``.hdf5`` | h5py | ``key`` (else ``points`` / ``xyz`` / ``pos`` / ``data``); (M, N, C) needs ``index`` |
| ``.obj`` ``.off`` ``.stl`` ``.glb`` ``.gltf`` | trimesh | surface-sampled, ``mesh_points`` points, ``seed`` |
| ``.las`` ``.laz`` | laspy (``pip install laspy``) | scaled x y z |

Every error is one line naming the file and why: unreadable, no points, non-finite coordinates, fewer than
``min_points`` points (:class:`~pointmap.errors.UserError`; a missing file: ``UserFileNotFoundError``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from ..errors import MissingPackageError, UserError, one_line
from .validate import check_points, missing

__all__ = ["read_points", "read_cloud", "READ_EXTENSIONS", "MESH_FILE_EXTENSIONS", "find_point_files"]

TEXT_EXTENSIONS = (".xyz", ".pts", ".txt")
MESH_FILE_EXTENSIONS = (".obj", ".off", ".stl", ".glb", ".gltf")
READ_EXTENSIONS = (".ply", ".pcd", *TEXT_EXTENSIONS, ".npy", ".npz", ".h5", ".hdf5", *MESH_FILE_EXTENSIONS,
                   ".las", ".laz")
ARRAY_KEYS = ("points", "xyz", "pos", "data")  # what an .npz / .h5 cloud is usually called


def read_points(path, *, normals: bool = False, key: Optional[str] = None, index: Optional[int] = None,
                mesh_points: int = 8192, seed: int = 0, min_points: int = 1) -> np.ndarray:
    """The points of ``path`` (see the module table): (N, 3) float32, or (N, 6) with the normals
    (``normals=True``; a file without normals is an error). ``key``: the array of an ``.npz`` / ``.h5``;
    ``index``: the cloud of an (M, N, C) array; a mesh is sampled with ``mesh_points`` points from ``seed``.
    Fewer than ``min_points`` points (the model's patch size, say) is an error."""
    arr = read_cloud(path, key=key, index=index, mesh_points=mesh_points, seed=seed, min_points=min_points)
    if normals and arr.shape[1] < 6:
        raise UserError(f"{path}: normals asked for, but the file holds {arr.shape[1]} columns (x y z only)")
    return np.ascontiguousarray(arr[:, :6] if normals else arr[:, :3])


def read_cloud(path, *, key: Optional[str] = None, index: Optional[int] = None, mesh_points: int = 8192,
               seed: int = 0, min_points: int = 1) -> np.ndarray:
    """:func:`read_points` with every column the file gives: (N, 3), or (N, 6) where it holds normals (a
    mesh: its faces' normals); checked the same way."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in READ_EXTENSIONS:
        raise UserError(f"{path}: unknown extension {ext or '(none)'!r}; expected one of {', '.join(READ_EXTENSIONS)}")
    if not path.is_file():
        raise missing(path, "input file")
    where = f"{path}[{key}]" if key else str(path)
    if ext in MESH_FILE_EXTENSIONS or ext == ".ply":
        arr = _read_trimesh(path, mesh_points, seed)
    elif ext == ".pcd":
        arr = _read_pcd(path)
    elif ext in TEXT_EXTENSIONS:
        arr = _read_text(path)
    elif ext in (".las", ".laz"):
        arr = _read_las(path)
    else:
        arr, where = _read_array(path, ext, key, index)
    if arr.ndim == 2 and arr.shape[0] == 0:
        raise UserError(f"{where}: no points in the file")
    arr = check_points(arr, where)
    if len(arr) < min_points:
        raise UserError(f"{where}: {len(arr)} points, fewer than the {min_points} the model needs")
    return arr[:, :6] if arr.shape[1] >= 6 else arr[:, :3]


def find_point_files(paths, extensions=READ_EXTENSIONS) -> list:
    """``paths`` (files and folders) as a list of files: a folder gives every file under it (recursive, sorted)
    with one of ``extensions``; a file is kept whatever its extension (:func:`read_points` then names it)."""
    exts = tuple(e.lower() for e in extensions)
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts)
        else:
            out.append(p)
    return out


def _read_trimesh(path: Path, mesh_points: int, seed: int) -> np.ndarray:
    import trimesh

    try:
        obj = trimesh.load(str(path), force="mesh" if path.suffix.lower() in (".glb", ".gltf") else None)
    except Exception as e:  # trimesh raises many types for unreadable files; name the file, keep the cause
        raise UserError(f"unreadable {path.suffix.lower()} file {path}: {type(e).__name__}: {one_line(e, 200)}") from e
    if isinstance(obj, trimesh.Scene):
        obj = obj.to_geometry() if hasattr(obj, "to_geometry") else obj.dump(concatenate=True)
    if isinstance(obj, trimesh.Trimesh) and len(obj.faces):
        if obj.area <= 0:
            raise UserError(f"mesh file {path} has no surface to sample (zero area)")
        pts, face = trimesh.sample.sample_surface(obj, int(mesh_points), seed=seed)
        return np.concatenate([pts, obj.face_normals[face]], axis=1).astype(np.float32)
    vertices = np.asarray(getattr(obj, "vertices", np.zeros((0, 3))), dtype=np.float32).reshape(-1, 3)
    raw = (getattr(obj, "metadata", None) or {}).get("_ply_raw", {}).get("vertex", {}).get("data")
    names = getattr(getattr(raw, "dtype", None), "names", None) or ()
    if all(n in names for n in ("nx", "ny", "nz")):
        vertices = np.concatenate([vertices, np.stack([raw[n] for n in ("nx", "ny", "nz")], 1).astype(np.float32)], 1)
    return vertices


_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8",
              ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}


def _pcd_header(path: Path, f) -> Tuple[dict, int]:
    header = {}
    while True:
        line = f.readline()
        if not line:
            raise UserError(f"unreadable pcd file {path}: the header ends before its DATA line")
        text = line.decode("ascii", errors="replace").strip()
        if not text or text.startswith("#"):
            continue
        word, *rest = text.split()
        header[word.upper()] = rest
        if word.upper() == "DATA":
            return header, f.tell()


def _read_pcd(path: Path) -> np.ndarray:
    """ascii and binary PCD with numpy; binary_compressed through Open3D (when installed)."""
    with open(path, "rb") as f:
        header, offset = _pcd_header(path, f)
        try:
            fields = header["FIELDS"]
            sizes = [int(s) for s in header["SIZE"]]
            types = header["TYPE"]
            counts = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
            n = int(header.get("POINTS", [0])[0]) or int(header["WIDTH"][0]) * int(header.get("HEIGHT", ["1"])[0])
            dtype = np.dtype([(name, _PCD_TYPES[(t.upper(), s)], (c,) if c > 1 else ())
                              for name, s, t, c in zip(fields, sizes, types, counts)])
        except (KeyError, ValueError, IndexError) as e:
            raise UserError(f"unreadable pcd file {path}: bad header ({type(e).__name__}: {one_line(e)})") from e
        if not all(k in fields for k in "xyz"):
            raise UserError(f"pcd file {path} has no x y z fields (fields: {' '.join(fields)})")
        kind = header["DATA"][0].lower()
        if kind == "ascii":
            try:
                flat = np.loadtxt(f, dtype=np.float64, ndmin=2)
            except ValueError as e:
                raise UserError(f"unreadable pcd file {path}: {one_line(e, 200)}") from e
            if flat.shape[0] == 0:
                return np.zeros((0, 3), np.float32)
            cols = np.cumsum([0] + counts)
            if flat.shape[1] != cols[-1]:
                raise UserError(f"pcd file {path}: {flat.shape[1]} values per line, the header names {cols[-1]}")
            data = {name: flat[:, cols[i]] for i, name in enumerate(fields)}
        elif kind == "binary":
            buf = f.read()
            if len(buf) < n * dtype.itemsize:
                raise UserError(f"pcd file {path} is truncated: {len(buf)} bytes of data for {n} points of "
                                f"{dtype.itemsize} bytes")
            data = np.frombuffer(buf, dtype=dtype, count=n)
        else:
            return _read_pcd_open3d(path, kind)
    xyz = [np.asarray(data[k], dtype=np.float32) for k in "xyz"]
    nrm = [np.asarray(data[k], dtype=np.float32) for k in ("normal_x", "normal_y", "normal_z") if k in fields]
    return np.stack(xyz + (nrm if len(nrm) == 3 else []), axis=1)


def _read_pcd_open3d(path: Path, kind: str) -> np.ndarray:
    try:
        import open3d as o3d
    except ImportError as e:
        raise MissingPackageError(f"pcd file {path} is {kind}: reading it needs open3d (pip install open3d)") from e
    cloud = o3d.io.read_point_cloud(str(path))
    pts = np.asarray(cloud.points, dtype=np.float32)
    if cloud.has_normals():
        pts = np.concatenate([pts, np.asarray(cloud.normals, dtype=np.float32)], axis=1)
    return pts


def _read_text(path: Path) -> np.ndarray:
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [ln for ln in (raw.strip() for raw in f) if ln and not ln.startswith(("#", "//"))]
    if lines and len(lines[0].replace(",", " ").split()) == 1:  # a .pts count line
        lines = lines[1:]
    if not lines:
        return np.zeros((0, 3), np.float32)
    delimiter = "," if "," in lines[0] else None
    width = len(lines[0].split(delimiter))
    try:
        arr = np.loadtxt(lines, delimiter=delimiter, dtype=np.float32, ndmin=2, usecols=range(min(width, 6)))
    except ValueError as e:
        raise UserError(f"unreadable point text file {path}: {one_line(e, 200)}") from e
    return arr if arr.shape[1] in (3, 6) else arr[:, :3]


def _pick_key(path: Path, keys, key: Optional[str]) -> str:
    keys = list(keys)
    if key is not None:
        if key not in keys:
            raise UserError(f"{path} has no key {key!r} (keys: {', '.join(keys) or 'none'})")
        return key
    for name in ARRAY_KEYS:
        if name in keys:
            return name
    if len(keys) == 1:
        return keys[0]
    raise UserError(f"{path} holds {len(keys)} arrays ({', '.join(keys) or 'none'}) and none is called "
                    f"{' / '.join(ARRAY_KEYS)}: name one with key=")


def _read_array(path: Path, ext: str, key: Optional[str], index: Optional[int]) -> Tuple[np.ndarray, str]:
    where = str(path)
    try:
        if ext == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                name = _pick_key(path, z.files, key)
                arr, where = z[name], f"{path}[{name}]"
        else:
            import h5py

            with h5py.File(path, "r") as f:
                arrays = [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
                name = _pick_key(path, arrays, key)
                arr, where = f[name][()], f"{path}[{name}]"
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"unreadable {ext} file {path}: {one_line(e, 200)}") from e
    arr = np.asarray(arr)
    if arr.ndim == 3:
        if index is None:
            raise UserError(f"{where} holds {arr.shape[0]} clouds {tuple(arr.shape)}: pick one with index=")
        if not -arr.shape[0] <= index < arr.shape[0]:
            raise UserError(f"{where}: index {index} is out of range ({arr.shape[0]} clouds)")
        arr, where = arr[index], f"{where}[{index}]"
    return arr, where


def _read_las(path: Path) -> np.ndarray:
    try:
        import laspy
    except ImportError as e:
        raise MissingPackageError(f"{path}: LAS files need laspy (pip install laspy)") from e
    try:
        las = laspy.read(str(path))
    except Exception as e:  # laspy raises its own and numpy's errors on a bad file
        raise UserError(f"unreadable LAS file {path}: {type(e).__name__}: {one_line(e, 200)}") from e
    return np.stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)], axis=1).astype(np.float32)

