"""The checks every reader shares (:mod:`pointmap.data.io`, :mod:`pointmap.data.readers`): a missing file named
by its full path, a point array of the wrong shape or with non-finite values named by its file."""
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..errors import UserError, UserFileNotFoundError

PathLike = Union[str, os.PathLike]
README_HINT = "see data/README.md for the expected layout"


def missing(path: PathLike, what: str = "file") -> UserFileNotFoundError:
    return UserFileNotFoundError(f"{what} not found: {Path(path).absolute()} ({README_HINT})")


def check_points(arr, path: PathLike, min_cols: int = 3, ndim: int = 2, num_points: Optional[int] = None):
    """Validate a point array: shape ``(..., N, C>=min_cols)`` with ``ndim`` dims and finite values.
    Returns it as float32. ``path`` names the source in errors (file, or file plus key)."""
    arr = np.asarray(arr)
    if (arr.ndim != ndim or arr.shape[-1] < min_cols or arr.shape[-2] == 0
            or (num_points is not None and arr.shape[-2] != num_points)):
        want = ("(M, " if ndim == 3 else "(") + f"{num_points or 'N'}, >={min_cols})"
        raise UserError(f"{path}: point array has shape {tuple(arr.shape)}, expected {want}")
    if not np.issubdtype(arr.dtype, np.number):
        raise UserError(f"{path}: point array has non-numeric dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    finite = np.isfinite(arr).all(axis=-1)
    if not finite.all():
        idx = tuple(int(i) for i in np.argwhere(~finite)[0])
        where = f"point {idx[-1]}" if len(idx) == 1 else f"cloud {idx[0]}, point {idx[1]}"
        raise UserError(f"{path}: non-finite coordinates at {where}")
    return arr
