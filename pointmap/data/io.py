"""File access shared by the data sets: locating a data set under a data root, reading the peers'
formats (npy, pickle, h5, text, json) with errors that name the file, and validating point arrays. A user's own
files (.ply .pcd .xyz .npy .h5, meshes, ...): :func:`read_points` (in :mod:`pointmap.data.readers`).

Every error is one line naming the file (and key, shape or index) at fault; a missing file is named by
its full expected path with a pointer to ``data/README.md``.
"""
import _compat_pickle
import codecs
import json
import os
import pickle
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from ..errors import UserError
from ..atomic import atomic_write
from .validate import README_HINT, check_points, missing  # noqa: F401  (named here too, as before)

PathLike = Union[str, os.PathLike]


def require(path: PathLike, what: str = "file") -> Path:
    """Return ``path`` as a Path, or raise FileNotFoundError naming its full path."""
    path = Path(path)
    if not path.exists():
        raise missing(path, what)
    return path


def find_dir(root: Optional[PathLike], rel: str, marker: str) -> Optional[Path]:
    """A data set's folder: ``root/rel`` (root is the ``data/`` folder), ``root/<last part of rel>`` or
    ``root`` itself (root is the data set's own folder), whichever holds ``marker``; None if none does."""
    if root is None:
        return None
    root, rel_path = Path(root), Path(rel)
    for cand in (root / rel_path, root / rel_path.name, root):
        if (cand / marker).exists():
            return cand
    return None


def resolve_dir(root: Optional[PathLike], rel: str, marker: str) -> Path:
    """:func:`find_dir`, raising FileNotFoundError naming ``root/rel/marker`` when nothing is found."""
    if root is None:
        raise UserError(f"this data set needs a root folder ({README_HINT})")
    if not Path(root).is_dir():
        raise missing(root, "data root")
    found = find_dir(root, rel, marker)
    if found is None:
        raise missing(Path(root) / rel / marker)
    return found


def check_split(split: str, valid: Sequence[str], name: str) -> str:
    if split not in valid:
        raise UserError(f"{name}: unknown split {split!r}; valid splits: {', '.join(valid)}")
    return split


def read_lines(path: PathLike) -> list:
    """Non-empty stripped lines of a text file."""
    with open(require(path)) as f:
        return [ln.strip() for ln in f if ln.strip()]


def read_json(path: PathLike):
    try:
        with open(require(path)) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"corrupted json file {path}: {e}") from e


def load_npy(path: PathLike) -> np.ndarray:
    try:
        return np.load(require(path), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"corrupted or truncated npy file {path}: {e}") from e


def _numpy_pickle_names() -> dict:
    """(module, name) -> object for what numpy writes into a pickle of arrays, dtypes and scalars, under the
    names numpy 1.x (``numpy.core``) and numpy 2 (``numpy._core``) write; both resolve to this numpy's."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    out = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        out[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        out[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        out[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return out


# What a data pickle may create: numpy arrays, dtypes and scalars, plain containers, and the bytes of protocols
# 0-2 (``_codecs.encode``). Lists, tuples, dicts, numbers and strings need no name at all.
_PICKLE_NAMES = {**_numpy_pickle_names(), ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
                 ("builtins", "bytearray"): bytearray, ("_codecs", "encode"): codecs.encode}


class _Refused(pickle.UnpicklingError):
    """A data pickle names something outside :data:`_PICKLE_NAMES`."""


class _DataUnpickler(pickle.Unpickler):
    """Admits only :data:`_PICKLE_NAMES`: anything else is refused before it is looked up, so nothing runs."""

    def find_class(self, module: str, name: str):
        # protocols 0-2 write Python 2's names (__builtin__.set): map them as pickle's own find_class does
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return _PICKLE_NAMES[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def load_pickle(path: PathLike):
    """A data pickle (the peers' ``.dat`` caches, ``.pkl`` few-shot folds) holding numpy arrays, dtypes, numpy
    scalars and plain containers; a pickle that would create anything else (a class, a function call such as
    ``os.system``) is refused with a one-line error naming the file, before anything in it runs."""
    try:
        with open(require(path), "rb") as f:
            return _DataUnpickler(f).load()
    except _Refused as e:
        raise UserError(f"refusing to load pickle file {path}: it would call or create {e}, and a data pickle may "
                        f"hold only numpy arrays, dtypes and plain containers") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError) as e:
        raise UserError(f"corrupted or truncated pickle file {path}: {type(e).__name__}: {e}") from e


def load_h5(path: PathLike, keys: Iterable[str], optional: Iterable[str] = ()) -> dict:
    """Read whole datasets ``keys`` (required) and ``optional`` from an h5 file into numpy arrays."""
    import h5py

    path = require(path)
    out = {}
    try:
        with h5py.File(path, "r") as f:
            for key in keys:
                if key not in f:
                    raise UserError(f"h5 file {path} has no key {key!r} (keys: {', '.join(f.keys())})")
                out[key] = f[key][()]
            for key in optional:
                if key in f:
                    out[key] = f[key][()]
    except OSError as e:
        raise UserError(f"corrupted or truncated h5 file {path}: {e}") from e
    return out


def load_text_points(path: PathLike, delimiter: Optional[str] = None) -> np.ndarray:
    """A (N, C) float32 array from a comma- (``delimiter=","``) or space-separated text file."""
    try:
        arr = np.loadtxt(require(path), delimiter=delimiter, dtype=np.float32, ndmin=2)
    except ValueError as e:
        raise UserError(f"unreadable point text file {path}: {e}") from e
    return arr


def check_labels(labels, path: PathLike, count: int, num_classes: Optional[int] = None) -> np.ndarray:
    """Labels as a (count,) int64 array; shapes (count,) and (count, 1) are accepted."""
    labels = np.asarray(labels)
    if labels.size != count or (labels.ndim == 2 and labels.shape[1] != 1) or labels.ndim > 2:
        raise UserError(f"{path}: label array has shape {tuple(labels.shape)}, expected ({count},) or ({count}, 1)")
    labels = labels.reshape(-1).astype(np.int64)
    if num_classes is not None and count and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{path}: labels span [{labels.min()}, {labels.max()}], expected [0, {num_classes - 1}]")
    return labels


def atomic_pickle(obj, path: PathLike) -> None:
    """Pickle ``obj`` to ``path`` whole (:func:`pointmap.atomic.atomic_write`): a failed or interrupted
    write never leaves a truncated file behind."""
    atomic_write(str(path), lambda f: pickle.dump(obj, f, protocol=4))


from .readers import READ_EXTENSIONS, find_point_files, read_points  # noqa: E402  (readers use the checks above)
