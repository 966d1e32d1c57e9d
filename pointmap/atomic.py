"""Writing a file whole: a temp file in the same folder, then a rename. The one place pointmap does it."""
from __future__ import annotations

import os
import tempfile
from typing import IO, Callable

__all__ = ["atomic_write"]


def atomic_write(path: str, write: Callable[[IO], None], binary: bool = True, durable: bool = False) -> None:
    """Call ``write(file)`` on a temp file in ``path``'s folder, then rename it over ``path``: a reader
    (or a crashed writer) sees the old file or the new one, never half of one. ``durable``: fsync before
    the rename, so the new file also survives a power loss (checkpoints). Every file a run writes whole
    (checkpoints, json, tables, charts, data caches) goes through here."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
