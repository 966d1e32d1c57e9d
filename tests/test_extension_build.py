"""The CUDA sources compile with nvcc where nvcc and a CUDA build of torch are present (they run only
on a GPU: tests marked gpu check them there)."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cuda_home():
    """CUDA_HOME if set, else the usual /usr/local/cuda, else the toolkit holding the nvcc on PATH."""
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return home
    nvcc = shutil.which("nvcc")
    if nvcc:
        home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        if os.path.isdir(os.path.join(home, "include")) and os.path.exists(os.path.join(home, "include", "cuda.h")):
            return home
    return None


@pytest.mark.slow
@pytest.mark.skipif(torch.version.cuda is None or _cuda_home() is None, reason="needs nvcc and a CUDA build of torch")
@pytest.mark.skipif(os.environ.get("POINTMAP_SKIP_NVCC_TEST") == "1", reason="POINTMAP_SKIP_NVCC_TEST=1")
def test_cuda_sources_compile(tmp_path):
    env = dict(os.environ, CUDA_HOME=_cuda_home(), TORCH_CUDA_ARCH_LIST="9.0", TORCH_EXTENSIONS_DIR=str(tmp_path),
               MAX_JOBS="2")
    code = "from pointmap.ops import _ext; m = _ext.build(True); print(m.with_cuda, hasattr(m, 'fps_cuda'))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "True True"


def _fresh_state(monkeypatch):
    from pointmap.ops import _ext

    monkeypatch.setitem(_ext._state, "tried", False)
    monkeypatch.setitem(_ext._state, "module", None)
    monkeypatch.setitem(_ext._state, "error", None)
    return _ext


def test_nothing_compiles_at_run_time(monkeypatch):
    """The compiled ops come from the install (pointmap._C) or not at all: get() never compiles."""
    _ext = _fresh_state(monkeypatch)

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled at run time")

    monkeypatch.setattr(_ext, "build", no_compiling)
    monkeypatch.setattr(_ext._cpp_extension(), "load", no_compiling)
    mod = _ext.get()
    assert mod is None or os.path.dirname(mod.__file__) == os.path.join(ROOT, "pointmap")


def test_missing_build_says_why(monkeypatch):
    _ext = _fresh_state(monkeypatch)
    monkeypatch.setitem(sys.modules, "pointmap._C", None)               # as if setup.py had not built it
    assert _ext.get() is None and not _ext.has("fps_cpu")
    assert _ext.error().startswith("pointmap._C not built") or _ext.error().startswith("pointmap._C built")
    from pointmap.env import report
    assert "unavailable (pointmap._C" in report()["compiled_ops"]


@pytest.mark.skipif(os.environ.get("POINTMAP_REQUIRE_EXT") != "1", reason="set POINTMAP_REQUIRE_EXT=1 (CI does)")
def test_install_built_the_compiled_ops():
    from pointmap.ops import _ext

    assert _ext.get() is not None, _ext.error()
    assert _ext.has("fps_cpu")
