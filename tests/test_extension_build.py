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
