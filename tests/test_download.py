"""The download cache (pointmap.download) against a server on 127.0.0.1: progress bar, cache hits without a
request, resumed downloads, hashes checked on every use, offline use, HTTP errors as one line."""
import json
import os
import socket

import pytest

from pointmap.download import ChecksumError, DownloadError, cache_path, fetch
from pointmap.errors import UserError

from ._hub import hub  # noqa: F401  (fixture)

URL = "https://github.com/Pang-Yatian/Point-MAE/releases/download/main/pretrain.pth"
DATA = os.urandom(300_000)


def _one_line(e) -> str:
    text = str(e.value)
    assert "\n" not in text and isinstance(e.value, UserError)
    return text


def test_cache_path_is_the_urls_host_and_path(tmp_path, monkeypatch):
    monkeypatch.setenv("POINTMAP_HOME", str(tmp_path))
    assert cache_path(URL) == str(tmp_path / "hub" / "github.com" / "Pang-Yatian" / "Point-MAE" / "releases" /
                                  "download" / "main" / "pretrain.pth")
    monkeypatch.delenv("POINTMAP_HOME")
    assert cache_path(URL).startswith(os.path.expanduser(os.path.join("~", ".cache", "pointmap", "hub")))
    for bad in ("ftp://x/y.pth", "https://host/", "https://host/a/../b.pth", "pretrain.pth"):
        with pytest.raises(UserError, match="not a downloadable file URL"):
            cache_path(bad)


def test_download_once_with_a_progress_bar_then_from_the_cache(hub, capsys):  # noqa: F811
    hub.add(URL, DATA)
    path = fetch(URL, progress=True)
    assert path == cache_path(URL) and open(path, "rb").read() == DATA
    assert "pretrain.pth" in capsys.readouterr().err                   # tqdm's bar, on stderr
    record = json.loads(open(path + ".json").read())
    assert record["size"] == len(DATA) and len(record["sha256"]) == 64 and record["url"] == URL
    assert not os.path.exists(path + ".part")
    assert fetch(URL) == path and fetch(URL, progress=True) == path
    assert hub.gets(URL) == [None]                                      # one request in all
    assert capsys.readouterr().err == ""                                # a cache hit draws no bar


def test_quiet_when_stderr_is_not_a_terminal(hub, capsys):  # noqa: F811
    hub.add(URL, DATA)
    fetch(URL)
    assert capsys.readouterr().err == ""


def test_a_cut_download_resumes_with_a_range_request(hub):  # noqa: F811
    hub.add(URL, DATA)
    hub.cut[hub.path(URL)] = [100_000, 50_000]                          # two responses cut short
    path = fetch(URL)
    assert open(path, "rb").read() == DATA
    assert hub.gets(URL) == [None, "bytes=100000-", "bytes=150000-"]


def test_a_part_left_by_an_earlier_process_is_resumed(hub):  # noqa: F811
    hub.add(URL, DATA)
    os.makedirs(os.path.dirname(cache_path(URL)))
    with open(cache_path(URL) + ".part", "wb") as f:
        f.write(DATA[:1234])
    assert open(fetch(URL), "rb").read() == DATA and hub.gets(URL) == ["bytes=1234-"]


def test_a_stale_part_longer_than_the_file_starts_over(hub):  # noqa: F811
    hub.add(URL, DATA)
    os.makedirs(os.path.dirname(cache_path(URL)))
    with open(cache_path(URL) + ".part", "wb") as f:
        f.write(DATA + b"more")
    assert open(fetch(URL), "rb").read() == DATA and hub.gets(URL) == [f"bytes={len(DATA) + 4}-", None]


def test_a_server_that_keeps_cutting_leaves_the_part_for_the_next_try(hub):  # noqa: F811
    hub.add(URL, DATA)
    hub.cut[hub.path(URL)] = [10_000] * 5
    with pytest.raises(DownloadError) as e:
        fetch(URL)
    text = _one_line(e)
    assert f"stopped at 50000 bytes after 5 connections; run again to resume from {cache_path(URL)}.part" in text
    assert not os.path.exists(cache_path(URL))
    assert open(fetch(URL), "rb").read() == DATA and hub.gets(URL)[-1] == "bytes=50000-"


def test_a_changed_cached_file_is_caught_by_its_hash(hub):  # noqa: F811
    hub.add(URL, DATA)
    path = fetch(URL)
    with open(path, "r+b") as f:
        f.write(b"\0\0\0\0")
    with pytest.raises(ChecksumError) as e:
        fetch(URL)
    text = _one_line(e)
    recorded = json.loads(open(path + ".json").read())["sha256"]
    assert path in text and recorded in text and f"delete it and {path}.json to download it again" in text
    import hashlib
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() in text
    assert hub.gets(URL) == [None]                                      # checked without asking the server


def test_offline_uses_the_cache_and_names_the_path_of_a_missing_file(hub, monkeypatch):  # noqa: F811
    hub.add(URL, DATA)
    path = fetch(URL)
    monkeypatch.setenv("POINTMAP_OFFLINE", "1")
    assert fetch(URL) == path
    other = URL.replace("pretrain.pth", "scan_hardest.pth")
    with pytest.raises(DownloadError) as e:
        fetch(other)
    assert _one_line(e) == (f"offline (POINTMAP_OFFLINE=1) and {other} is not in the cache: put the file at "
                            f"{cache_path(other)} by hand")
    assert hub.gets(URL) == [None] and hub.gets(other) == []


def test_a_file_put_by_hand_is_recorded_then_checked(monkeypatch, tmp_path):
    monkeypatch.setenv("POINTMAP_HOME", str(tmp_path))                 # offline (conftest)
    path = cache_path(URL)
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(DATA)
    assert fetch(URL) == path and json.loads(open(path + ".json").read())["size"] == len(DATA)
    with open(path, "ab") as f:
        f.write(b"x")
    with pytest.raises(ChecksumError, match="is not the file downloaded from"):
        fetch(URL)


def test_http_404_is_one_line_naming_the_url(hub):  # noqa: F811
    with pytest.raises(DownloadError) as e:
        fetch(URL)
    assert _one_line(e) == f"download of {URL} (from {hub.base}{hub.path(URL)}) failed: HTTP 404 Not Found"
    assert not os.listdir(os.path.dirname(cache_path(URL))) or \
        set(os.listdir(os.path.dirname(cache_path(URL)))) <= {"pretrain.pth.lock"}


def test_no_network_names_the_url_and_where_to_put_the_file(monkeypatch, tmp_path):
    with socket.socket() as s:                                          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("POINTMAP_MIRROR", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("POINTMAP_HOME", str(tmp_path))
    monkeypatch.delenv("POINTMAP_OFFLINE")
    with pytest.raises(DownloadError) as e:
        fetch(URL)
    text = _one_line(e)
    assert text.startswith(f"cannot download {URL} (from http://127.0.0.1:{port}/github.com/") and "refused" in text
    assert text.endswith(f"put the file at {cache_path(URL)} by hand (or set POINTMAP_MIRROR)")
