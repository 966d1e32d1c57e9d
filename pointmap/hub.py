"""Files on the Hugging Face Hub, through ``huggingface_hub``: its cache (``HF_HUB_CACHE`` / ``HF_HOME``),
revisions, ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` (pointmap's ``POINTMAP_OFFLINE=1`` too), all read at each call.

    path = hub_file("hanx/Mamba3D", "pretrain_pointmae/ckpt-last.pth", revision="main")
    repo, path, revision = parse_hub_spec("hf-hub:me/map-demo@v1")       # ("me/map-demo", None, "v1")

A name ``hf-hub:owner/repo[@revision]`` is a model repository written by ``pointmap export`` (its
``config.json`` card and ``model.safetensors``); ``hf-hub:owner/repo/path/in/repo`` one file of a repository
(the registry's Hub-hosted entries). Every error here is a one-line :class:`~pointmap.errors.UserError`.
"""
from __future__ import annotations

import os
import re
from typing import Optional, Tuple

from .download import DownloadError, is_offline
from .errors import UserError, one_line

__all__ = ["HUB_PREFIX", "is_hub_spec", "parse_hub_spec", "hub_file", "hub_endpoint", "hub_offline"]

HUB_PREFIX = "hf-hub:"
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_hub_spec(spec) -> bool:
    return isinstance(spec, str) and spec.startswith(HUB_PREFIX)


def parse_hub_spec(spec: str) -> Tuple[str, Optional[str], Optional[str]]:
    """(repo id, path in the repository or None, revision or None) of ``hf-hub:owner/repo[/path][@revision]``."""
    body, _, revision = spec[len(HUB_PREFIX):].partition("@")
    parts = body.split("/")
    if len(parts) < 2 or not all(_SEGMENT.match(p) for p in parts[:2]) or any(p in ("", ".", "..") for p in parts) \
            or ("@" in spec and not revision):
        raise UserError(f"{spec!r} is not a Hub name: expected hf-hub:owner/repo or hf-hub:owner/repo@revision")
    return "/".join(parts[:2]), "/".join(parts[2:]) or None, revision or None


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or "https://huggingface.co"


def hub_offline() -> bool:
    """``POINTMAP_OFFLINE`` or ``HF_HUB_OFFLINE``: only the cache is read."""
    return is_offline() or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_file(repo_id: str, filename: str, revision: Optional[str] = None) -> str:
    """The local path of ``filename`` of the model repository ``repo_id`` at ``revision`` (default: main),
    from huggingface_hub's cache or downloaded into it."""
    import huggingface_hub
    from huggingface_hub import errors

    name = f"{HUB_PREFIX}{repo_id}" + (f"@{revision}" if revision else "")
    try:
        return huggingface_hub.hf_hub_download(repo_id, filename, revision=revision, endpoint=hub_endpoint(),
                                               cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                                               local_files_only=hub_offline())
    except errors.LocalEntryNotFoundError as e:  # not cached, and offline or the Hub unreachable
        why = "offline (POINTMAP_OFFLINE / HF_HUB_OFFLINE)" if hub_offline() else f"{hub_endpoint()} cannot be reached"
        raise DownloadError(f"{name}: {filename} is not in the Hugging Face cache and {why}") from e
    except errors.GatedRepoError as e:
        raise UserError(f"{name}: a gated repository on {hub_endpoint()}: accept its terms there and log in "
                        f"(hf auth login)") from e
    except errors.RepositoryNotFoundError as e:
        raise UserError(f"{name}: no such model repository on {hub_endpoint()} (or a private one: log in with "
                        f"hf auth login)") from e
    except errors.RevisionNotFoundError as e:
        raise UserError(f"{name}: {repo_id} has no revision {revision!r} on {hub_endpoint()}") from e
    except errors.EntryNotFoundError as e:
        raise UserError(f"{name}: the repository has no file {filename!r}") from e
    except (errors.HfHubHTTPError, OSError) as e:
        raise DownloadError(f"{name}: {filename} could not be downloaded from {hub_endpoint()}: {one_line(e, 200)}") from e
