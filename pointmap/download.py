"""Files from the web, downloaded once into pointmap's cache and checked on every later use.

    path = fetch("https://github.com/Pang-Yatian/Point-MAE/releases/download/main/pretrain.pth")

A URL's file lives at ``$POINTMAP_HOME/hub/<host>/<path of the URL>`` (``POINTMAP_HOME`` defaults to
``~/.cache/pointmap``), so a file put there by hand is found. The first download streams into
``<file>.part`` (resumed with an HTTP Range request after a cut connection, in the same call or the next
one), then the size and sha256 are written to ``<file>.json`` and the file is renamed into place; every later
use checks the file against that record. A file shared only through a web page (a OneDrive share link) cannot be
fetched: :func:`fetch_by_hand` names the page and the path under ``$POINTMAP_HOME/by_hand/`` to put it at, records
the size and sha256 of the file found there on its first use and checks it on every later one.
``POINTMAP_OFFLINE=1`` never opens a connection: a cached file is
used, a missing one is an error that names the URL and the path to put it at. ``POINTMAP_MIRROR=<base URL>``
fetches ``<base URL>/<host>/<path>`` instead of the URL itself (a mirror laid out as the cache is; the cache
path stays the original URL's). Every error here is a one-line :class:`~pointmap.errors.UserError`.
Standard library (urllib) and tqdm only; this module imports nothing of pointmap but errors and atomic.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import http.client
import json
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Iterator, Optional

from .atomic import atomic_write
from .errors import UserError, one_line

__all__ = ["DownloadError", "ChecksumError", "by_hand_path", "cache_home", "cache_path", "fetch", "fetch_by_hand",
           "is_offline"]

logger = logging.getLogger(__name__)

HOME_ENV, OFFLINE_ENV, MIRROR_ENV = "POINTMAP_HOME", "POINTMAP_OFFLINE", "POINTMAP_MIRROR"
TIMEOUT = 30.0  # seconds without a byte before a connection counts as cut
ATTEMPTS = 5  # connections per call; each resumes where the last one stopped
CHUNK = 1 << 20


class DownloadError(UserError):
    """A file could not be downloaded (HTTP error, no network, offline): names the URL and the cache path."""


class ChecksumError(UserError):
    """A cached file differs from the size and sha256 recorded when it was downloaded."""


def cache_home() -> str:
    """``$POINTMAP_HOME``, default ``~/.cache/pointmap``."""
    return os.path.abspath(os.path.expanduser(os.environ.get(HOME_ENV) or os.path.join("~", ".cache", "pointmap")))


def is_offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _split(url: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if parts.scheme not in ("http", "https") or not parts.netloc or not segments or \
            any(urllib.parse.unquote(s) in (".", "..") for s in segments):
        raise UserError(f"not a downloadable file URL: {url!r} (expected http(s)://host/path/file)")
    return parts


def cache_path(url: str) -> str:
    """Where ``url``'s file is kept: ``<cache_home()>/hub/<host>/<path>`` (a port's ``:`` becomes ``_``)."""
    parts = _split(url)
    segments = [urllib.parse.unquote(s) for s in parts.path.split("/") if s]
    return os.path.join(cache_home(), "hub", parts.netloc.replace(":", "_"), *segments)


def _source(url: str) -> str:
    """The URL actually fetched: ``url``, or its place under ``$POINTMAP_MIRROR``."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return url
    parts = _split(url)
    return f"{mirror.rstrip('/')}/{parts.netloc}{parts.path}"


def _where(url: str) -> str:
    source = _source(url)
    return url if source == url else f"{url} (from {source})"


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _record_path(path: str) -> str:
    return path + ".json"


def _write_record(path: str, url: str, digest: str) -> None:
    record = {"url": url, "size": os.path.getsize(path), "sha256": digest,
              "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    atomic_write(_record_path(path), lambda f: json.dump(record, f, indent=2), binary=False)


def _verify(path: str, url: str) -> None:
    """Check ``path`` against its record; a file without one (put there by hand) gets one now."""
    digest = sha256_of(path)
    try:
        with open(_record_path(path), encoding="utf-8") as f:
            record = json.load(f)
    except FileNotFoundError:
        try:
            _write_record(path, url, digest)
            logger.info("%s: no record of its download; recorded size %d and sha256 %s", path,
                        os.path.getsize(path), digest)
        except OSError as e:  # a read-only cache: use the file, check nothing
            logger.warning("%s: cannot record its sha256 (%s)", path, one_line(e))
        return
    except (OSError, ValueError) as e:
        raise ChecksumError(f"cached file {path}: its record {_record_path(path)} is unreadable ({one_line(e)}); "
                            f"delete both to download {url} again") from e
    size = os.path.getsize(path)
    if digest != record.get("sha256") or size != record.get("size"):
        raise ChecksumError(f"cached file {path} is not the file downloaded from {record.get('url', url)}: sha256 "
                            f"{digest} ({size} bytes), recorded {record.get('sha256')} ({record.get('size')} bytes); "
                            f"delete it and {_record_path(path)} to download it again")


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """One process at a time downloads ``path`` (the ranks of a torchrun job ask at once); POSIX only."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    with open(path + ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _show_progress(progress: Optional[bool]) -> bool:
    if progress is not None:
        return progress
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def _connect(url: str, start: int):
    headers = {"User-Agent": "pointmap"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(_source(url), headers=headers), timeout=TIMEOUT)


def _attempt(url: str, part: str, path: str, progress: bool) -> bool:
    """One connection: append what arrives to ``part``. True when the file is complete."""
    from tqdm import tqdm

    start = os.path.getsize(part) if os.path.exists(part) else 0
    try:
        response = _connect(url, start)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # a stale .part longer than the file: start over
            os.remove(part)
            return False
        raise DownloadError(f"download of {_where(url)} failed: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:  # no connection at all
        kept = f"; the {start} bytes already here stay in {part} for the next try" if start else ""
        raise DownloadError(f"cannot download {_where(url)} ({one_line(getattr(e, 'reason', e))}){kept}: put the "
                            f"file at {path} by hand (or set {MIRROR_ENV})") from e
    with response:
        if start and getattr(response, "status", None) != 206:
            start = 0  # the server sent the whole file: start over
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        with open(part, "ab" if start else "wb") as f, \
                tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                     desc=os.path.basename(path), disable=not progress, leave=False) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:  # cut: what arrived stays in .part
                    logger.warning("download of %s cut after %d bytes (%s); resuming", url, f.tell(), one_line(e))
                    return False
                if not chunk:
                    break
                f.write(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
            got = f.tell()
    if total is not None and got < total:  # the server closed early (urllib returns what came, silently)
        logger.warning("download of %s cut after %d of %d bytes; resuming", url, got, total)
        return False
    return True


def _download(url: str, path: str, progress: Optional[bool]) -> None:
    """Into ``path + ".part"`` (resumed over up to ``ATTEMPTS`` connections), record, rename into place."""
    part = path + ".part"
    logger.info("downloading %s to %s", _where(url), path)
    if not any(_attempt(url, part, path, _show_progress(progress)) for _ in range(ATTEMPTS)):
        size = os.path.getsize(part) if os.path.exists(part) else 0
        raise DownloadError(f"download of {_where(url)} stopped at {size} bytes after {ATTEMPTS} connections; run "
                            f"again to resume from {part}, or put the file at {path} by hand")
    _write_record(part, url, sha256_of(part))
    os.replace(_record_path(part), _record_path(path))  # the record first: a file in place has one
    os.replace(part, path)


def fetch(url: str, progress: Optional[bool] = None) -> str:
    """The local path of ``url``'s file: from the cache (checked against the size and sha256 recorded when it
    was downloaded), else downloaded into it. ``progress``: a progress bar on stderr (default: when stderr
    is a terminal). Raises :class:`DownloadError` (offline or no network and not cached, an HTTP error) or
    :class:`ChecksumError` (the cached file changed), one line each."""
    path = cache_path(url)
    if os.path.isfile(path) and os.path.isfile(_record_path(path)):
        _verify(path, url)
        return path
    if is_offline() and not os.path.isfile(path):
        raise DownloadError(f"offline ({OFFLINE_ENV}=1) and {url} is not in the cache: put the file at {path} by hand")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with _locked(path):
        if not os.path.isfile(path):  # another process may have finished it while this one waited
            _download(url, path, progress)
            return path
    _verify(path, url)
    return path


def by_hand_path(name: str) -> str:
    """Where a file downloaded by hand goes: ``<cache_home()>/by_hand/<name>``."""
    return os.path.join(cache_home(), "by_hand", *name.split("/"))


def fetch_by_hand(page: str, name: str) -> str:
    """The local path of a file that ``page`` shares (a page that does not serve the file itself): the file put at
    :func:`by_hand_path` ``(name)``, recorded on first use and checked on every later one like a downloaded file;
    a :class:`DownloadError` that says where to put it when it is not there."""
    path = by_hand_path(name)
    if not os.path.isfile(path):
        raise DownloadError(f"{page} shares its file through a web page that pointmap cannot download: open it in a "
                            f"browser, download the file and put it at {path}")
    _verify(path, page)
    return path
