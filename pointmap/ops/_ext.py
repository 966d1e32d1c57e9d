"""The compiled ops (``extensions/pointmap_ops``): ``pointmap._C``, built by ``setup.py`` at install time
(C++; CUDA too where nvcc is found and a GPU is visible, or with ``FORCE_CUDA=1``). Nothing is compiled at
run time: without ``pointmap._C`` the ops use their PyTorch paths and :func:`error` says why.
``POINTMAP_NO_EXT=1`` turns the compiled ops off. :func:`build` compiles the sources on demand (with
torch.utils.cpp_extension's JIT), for checking that they compile; the library never calls it.
"""
import glob
import importlib
import logging
import os
import threading

import torch

log = logging.getLogger(__name__)

SRC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "extensions", "pointmap_ops")
CFLAGS = ["-O3", "-ffp-contract=off"]
NVCC_FLAGS = ["-O3", "--fmad=false"]

_lock = threading.Lock()
_state = {"module": None, "tried": False, "error": None}


def _cpp_extension():
    """torch.utils.cpp_extension, without its import-time warning that a CPU machine has no CUDA runtime."""
    import warnings

    cpp_log = logging.getLogger("torch.utils.cpp_extension")
    level = cpp_log.level
    cpp_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.utils import cpp_extension
    finally:
        cpp_log.setLevel(level)
    return cpp_extension


def _want_cuda() -> bool:
    if not torch.cuda.is_available() or torch.version.cuda is None:
        return False
    return _cpp_extension().CUDA_HOME is not None


def sources(with_cuda: bool):
    files = sorted(glob.glob(os.path.join(SRC_DIR, "*.cpp")))
    if with_cuda:
        files += sorted(glob.glob(os.path.join(SRC_DIR, "*.cu")))
    return files


def build(with_cuda: bool, verbose: bool = False):
    """Compile the extension now (JIT, cached); returns the module."""
    load = _cpp_extension().load

    if not os.path.isdir(SRC_DIR):
        raise RuntimeError(f"extension sources not found at {SRC_DIR}; reinstall pointmap from a source "
                           "checkout (pip install -e .) or build it with FORCE_CUDA=1")
    name = "pointmap_ext_cuda" if with_cuda else "pointmap_ext_cpu"
    defines = ["-DPOINTMAP_WITH_CUDA"] if with_cuda else []
    return load(name=name, sources=sources(with_cuda), extra_cflags=CFLAGS + defines,
                extra_cuda_cflags=NVCC_FLAGS + defines, verbose=verbose)


def _build_status() -> str:
    """What setup.py recorded about building pointmap._C (pointmap/_C_build.txt), or a hint."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_C_build.txt")
    if os.path.isfile(path):
        with open(path) as f:
            return f.read().strip()
    return "not built: pointmap was installed without its build step (pip install -e . builds it)"


def get():
    """The compiled module, or None when it is not there (the reason is in :func:`error`)."""
    if _state["tried"]:
        return _state["module"]
    with _lock:
        if _state["tried"]:
            return _state["module"]
        mod = None
        if os.environ.get("POINTMAP_NO_EXT", "0") == "1":
            _state["error"] = "disabled by POINTMAP_NO_EXT=1"
        else:
            try:
                mod = importlib.import_module("pointmap._C")  # built at install time
            except ImportError as e:
                if isinstance(e, ModuleNotFoundError):
                    _state["error"] = f"pointmap._C {_build_status()}"
                else:  # built against another torch: undefined symbols
                    _state["error"] = (f"pointmap._C does not load ({' '.join(str(e).split())[:160]}); it was built "
                                       "for another torch: reinstall pointmap")
                    log.warning("pointmap's compiled ops are unavailable (%s); using the PyTorch paths",
                                _state["error"])
                mod = None
        _state["module"] = mod
        _state["tried"] = True
        return mod


def error():
    return _state["error"]


def has(fn_name: str) -> bool:
    mod = get()
    return mod is not None and hasattr(mod, fn_name)
