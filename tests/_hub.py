"""A file server on 127.0.0.1 laid out as pointmap's download cache (``POINTMAP_MIRROR`` points at it) that
also answers as a Hugging Face Hub (``HF_ENDPOINT`` points at it: the ``/<repo>/resolve/<revision>/<file>``
HEAD and GET that ``hf_hub_download`` makes, with the Hub's headers and error codes), and small weight files
in each peer's own layout: the peer's key names (tests/fixtures/peers/*_state_dicts.json)
carrying the tensors of a tiny pointmap model, so a load checks every name the way the published file has it."""
import hashlib
import io
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlsplit

import pytest
import torch

import pointmap
from pointmap.models.convert import CONVERTERS

PEERS = Path(__file__).resolve().parent / "fixtures" / "peers"

# The small sizes of the peers' fixture models (tests/fixtures/peers/README.md), per preset.
TINY = {"pointmae": dict(embed_dim=48, layout="TT", num_heads=6, num_group=32, group_size=16),
        "pointmamba": dict(embed_dim=48, layout="MM", num_group=32, group_size=16),
        "mamba3d": dict(embed_dim=48, layout="MMM", num_group=32, group_size=16)}
TINY_DECODER = dict(decoder_depth=1)


class Hub:
    """Serves ``files`` (URL path -> bytes) over HTTP/1.0 with Range support; records every GET as
    (path, Range header); ``cut[path] = [n, m, ...]``: the next responses send only n, m, ... bytes of their
    body (then close the connection). ``repos[repo_id][revision] = (commit, {file: bytes})``: the Hub's
    model repositories (:meth:`add_hf`), at ``/<repo_id>/resolve/<revision or commit>/<file>``."""

    def __init__(self):
        self.files: Dict[str, bytes] = {}
        self.repos: Dict[str, Dict[str, Tuple[str, Dict[str, bytes]]]] = {}
        self.requests: List[Tuple[str, Optional[str]]] = []
        self.cut: Dict[str, List[int]] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _hf(self) -> Optional[bytes]:
                """A Hub file's bytes with its headers sent, or None with the Hub's 404 sent."""
                m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", urlsplit(self.path).path)
                repo = hub.repos.get(m.group(1)) if m else None
                revs = dict(repo or {})
                revs.update({commit: (commit, files) for commit, files in (repo or {}).values()})
                found = revs.get(m.group(2)) if repo else None
                data = found[1].get(m.group(3)) if found else None
                if data is None:
                    code = "RepoNotFound" if repo is None else "RevisionNotFound" if found is None else "EntryNotFound"
                    self.send_response(404)
                    self.send_header("X-Error-Code", code)
                    self.send_header("X-Error-Message", code)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                self.send_response(200)
                self.send_header("X-Repo-Commit", found[0])
                self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                return data

            def do_HEAD(self):
                self._hf()

            def do_GET(self):
                rng = self.headers.get("Range")
                hub.requests.append((self.path, rng))
                if "/resolve/" in self.path and not self.path.startswith("/github.com/"):
                    data = self._hf()
                    if data is not None:
                        self.wfile.write(data)
                    return
                data = hub.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start = int(re.match(r"bytes=(\d+)-", rng).group(1)) if rng else 0
                if start >= len(data) and rng:
                    self.send_error(416, "Range Not Satisfiable")
                    return
                body = data[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cuts = hub.cut.get(self.path)
                limit = cuts.pop(0) if cuts else None
                self.wfile.write(body if limit is None else body[:limit])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    @staticmethod
    def path(url: str, revision: str = "main") -> str:
        """Where the mirror layout puts ``url``: ``/<host>/<path>``; an ``hf-hub:repo/file`` URL: the Hub's."""
        if url.startswith("hf-hub:"):
            owner, name, file = url[len("hf-hub:"):].split("/", 2)
            return f"/{owner}/{name}/resolve/{revision}/{file}"
        parts = urlsplit(url)
        return f"/{parts.netloc}{parts.path}"

    def add(self, url: str, data: bytes, revision: str = "main") -> None:
        if url.startswith("hf-hub:"):
            owner, name, file = url[len("hf-hub:"):].split("/", 2)
            self.add_hf(f"{owner}/{name}", {file: data}, revision)
        else:
            self.files[self.path(url)] = data

    def add_hf(self, repo_id: str, files: Dict[str, bytes], revision: str = "main") -> str:
        """Put ``files`` in a commit of ``repo_id`` that ``revision`` points at (over what it held); returns the
        commit's hash."""
        _, old = self.repos.get(repo_id, {}).get(revision, ("", {}))
        files = {**old, **files}
        commit = hashlib.sha1(repr(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items())).encode()
                              + revision.encode()).hexdigest()
        self.repos.setdefault(repo_id, {})[revision] = (commit, files)
        return commit

    def gets(self, url: str) -> List[Optional[str]]:
        """The Range headers of the requests made for ``url``."""
        return [rng for path, rng in self.requests if path == self.path(url)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The server, with downloads going to it (``POINTMAP_MIRROR``, ``HF_ENDPOINT``) and into ``tmp_path/home``
    (``tmp_path/hf``: the Hub's cache), online."""
    server = Hub()
    monkeypatch.setenv("POINTMAP_MIRROR", server.base)
    monkeypatch.setenv("HF_ENDPOINT", server.base)
    monkeypatch.setenv("POINTMAP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("POINTMAP_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield server
    server.close()


# ----------------------------------------------------------------------------- files in the peers' layouts

def _point_mae_partseg() -> Dict[str, list]:
    from .test_checkpoint import _point_mae_shapes

    return _point_mae_shapes("partseg")


def key_table(card) -> Dict[str, list]:
    """Names and shapes (full size) of the peer's file that ``card`` names."""
    peer = {"point_mae": "point_mae", "pointmamba": "pointmamba", "map3d": card.preset}[card.format]
    if card.head.get("num_parts"):
        return _point_mae_partseg()
    if card.pretrainer is not None and peer == "mamba3d":  # Mamba3D keeps no pretraining class: MAP's, less
        table = json.loads((PEERS / "map3d_state_dicts.json").read_text())["map3d_pretrain"]  # its attention
        return {k: s for k, s in table.items() if "blocks_vit." not in k}
    tables = json.loads((PEERS / f"{peer}_state_dicts.json").read_text())
    if card.pretrainer is not None:
        return tables[f"{peer}_pretrain"]
    n = card.head["num_classes"]
    if f"{peer}_finetune_cls{n}" in tables:
        return tables[f"{peer}_finetune_cls{n}"]
    # Point-MAE's table is of its 40-class model; a 15-class file differs in the last layer's rows only
    last = "cls_head_finetune.8."
    return {k: ([n, *s[1:]] if k.startswith(last) else s) for k, s in tables[f"{peer}_finetune_cls40"].items()}


def _pointmap_name(fmt: str, key: str, layout: str) -> Tuple[str, Optional[int]]:
    """(pointmap name, row) of one peer key; PointMamba's per-order vectors are rows of one tensor."""
    m = re.match(r"^(?:MAE_encoder\.)?OrderScale_(gamma|beta)_(\d+)$", key)
    if m:
        return ("encoder.order_scale" if m.group(1) == "gamma" else "encoder.order_shift"), int(m.group(2)) - 1
    return next(iter(CONVERTERS[fmt]({key: torch.zeros(0)}, layout))), None


def _peer_shaped(value: torch.Tensor, full: list) -> torch.Tensor:
    """``value`` with the size-1 dims the peer's tensor has (Conv1d's (out, in, 1), LNP's (1, 1, 1, 2C))."""
    if len(full) == value.dim():
        return value
    if full[-1] == 1 and len(full) == value.dim() + 1:
        return value.unsqueeze(-1)
    assert all(s == 1 for s in full[:-1]), (full, value.shape)
    return value.reshape(*([1] * (len(full) - 1)), -1)


def tiny_model(card, seed: int = 0):
    """The card's model at the fixture sizes: a pretrainer (decoder of one block) for a pretraining file."""
    torch.manual_seed(seed)
    tiny = TINY[card.preset]
    if card.pretrainer is not None:
        return pointmap.create_pretrainer(card.preset, **{**card.pretrainer, **TINY_DECODER}, **{**card.args, **tiny})
    return pointmap.create_model(card.preset, **card.model_kwargs(**tiny))


def peer_bytes(card, model) -> bytes:
    """``model``'s weights under the peer's names, saved as the peer saves them (``base_model`` with DDP's
    ``module.``; Point-MAE's part segmentation: ``model_state_dict``)."""
    layout = getattr(model.encoder, "layout", None)
    names = {}
    for key, shape in key_table(card).items():
        names[_pointmap_name(card.format, key, layout)] = (key, shape)
    state = {}
    for name, value in model.state_dict().items():
        if (name, None) in names:
            key, shape = names[(name, None)]
            state[key] = _peer_shaped(value.clone(), shape)
        else:
            assert name in ("encoder.order_scale", "encoder.order_shift"), f"no peer name for {name}"
            for i, row in enumerate(value):
                state[names[(name, i)][0]] = row.clone()
    buf = io.BytesIO()
    if card.head.get("num_parts"):
        torch.save({"model_state_dict": state, "epoch": 300}, buf)
    else:
        torch.save({"base_model": {f"module.{k}": v for k, v in state.items()}, "epoch": 300}, buf)
    return buf.getvalue()


def serve_entry(hub: Hub, name: str, seed: int = 0):
    """Serve a tiny file of entry ``name`` in its peer's layout; returns (card, the tiny model it holds)."""
    card = pointmap.models.pretrained_card(name)
    model = tiny_model(card, seed)
    hub.add(card.url, peer_bytes(card, model))
    return card, model
