"""The compiled ops (``extensions/pointmap_ops``): ``pointmap._C`` if it was built at install time
(``FORCE_CUDA=1 pip install -e .``), otherwise compiled on first use with torch.utils.cpp_extension and
cached (``TORCH_EXTENSIONS_DIR``, default ~/.cache/torch_extensions). CUDA sources join the build when
torch sees a GPU and nvcc is found. ``POINTMAP_NO_EXT=1`` turns the compiled ops off.
"""
import glob
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


def get():
    """The compiled module, or None when it cannot be had here (the reason is in :func:`error`)."""
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
                from pointmap import _C as mod  # built at install time
            except ImportError:
                mod = None
            if mod is None:
                with_cuda = _want_cuda()
                log.info("compiling pointmap's %s ops once (cached by torch.utils.cpp_extension)",
                         "C++/CUDA" if with_cuda else "C++")
                try:
                    mod = build(with_cuda)
                except Exception as e:  # a missing compiler or ninja must not break the torch paths
                    _state["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
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
