"""What this machine can run: ``python -m pointmap.env``.

Prints the torch / CUDA / Triton versions and, for each op, every backend with whether it can be used
here and, when not, why.
"""
import platform
import sys

import torch

from . import __version__
from .ops import _backend, _ext


def _version(mod: str) -> str:
    if not _backend.module_present(mod):
        return "not installed"
    try:
        m = __import__(mod)
        return getattr(m, "__version__", "installed")
    except Exception as e:  # report any import failure as text: this is a diagnostic tool
        return f"installed but does not import ({type(e).__name__}: {str(e).splitlines()[0][:80]})"


# Debian packages behind Open3D: libusb for its import, a Vulkan loader and Mesa's software driver (llvmpipe)
# for offscreen rendering; without them pictures are drawn with matplotlib.
_APT = {"libusb": "libusb-1.0-0", "vulkan": "libvulkan1", "icd": "mesa-vulkan-drivers"}
_VULKAN_ICD_DIRS = ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d")


def rendering_problems() -> list:
    """What is missing for Open3D's offscreen pictures, one line each, ending with the one install line
    that fixes them; empty when nothing is."""
    import ctypes.util
    import glob
    import os

    lines, apt = [], []
    if not _backend.module_present("open3d"):
        lines.append("open3d is not installed: pip install -e '.[vis]'")
    if ctypes.util.find_library("usb-1.0") is None:
        lines.append("libusb-1.0 is missing: open3d does not import without it")
        apt.append(_APT["libusb"])
    if ctypes.util.find_library("vulkan") is None:
        lines.append("no Vulkan loader (libvulkan.so.1): Open3D cannot render offscreen")
        apt.append(_APT["vulkan"])
    if not any(glob.glob(os.path.join(d, "*.json")) for d in _VULKAN_ICD_DIRS):
        lines.append("no Vulkan driver: Mesa's software renderer (llvmpipe) renders without a GPU")
        apt.append(_APT["icd"])
    if apt:
        lines.append(f"fix: apt-get install {' '.join(apt)}   (pictures fall back to matplotlib until then)")
    return lines


def report() -> dict:
    """The environment as a dict (what ``python -m pointmap.env`` prints)."""
    info = {
        "pointmap": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "optional": {m: _version(m) for m in ("triton", "mamba_ssm", "pointnet2_ops", "knn_cuda", "open3d")},
        "ops": {},
        "rendering": rendering_problems(),
    }
    compiled = _ext.get()
    info["compiled_ops"] = ("available" if compiled is not None else f"unavailable ({_ext.error()})")
    for op in _backend.ops():
        info["ops"][op] = {b: ("yes" if b in _backend.available_backends(op) else "no")
                           for b in _backend.all_backends(op)}
        forced = _backend.get_backend_override(op)
        if forced:
            info["ops"][op]["forced"] = forced
    return info


def format_report(info: dict) -> str:
    missing = info.get("rendering") or []
    lines = (["missing for rendering pictures with Open3D:"] + [f"  {m}" for m in missing]) if missing else \
        ["rendering: Open3D's offscreen pictures have what they need"]
    lines += [f"pointmap {info['pointmap']}  python {info['python']}  {info['platform']}",
             f"torch {info['torch']} (CUDA build: {info['torch_cuda_build']}), CUDA available: "
             f"{info['cuda_available']}{' (' + info['gpu'] + ')' if info['gpu'] else ''}, "
             f"CPU threads: {info['cpu_threads']}",
             "optional packages: " + ", ".join(f"{k} {v}" for k, v in info["optional"].items()),
             f"compiled ops (extensions/pointmap_ops): {info['compiled_ops']}",
             "backends per op (auto picks the first usable one for the tensors' device):"]
    for op, backends in info["ops"].items():
        forced = backends.pop("forced", None)
        row = "  ".join(f"{name}={ok}" for name, ok in backends.items())
        lines.append(f"  {op:15s} {row}" + (f"   [forced: {forced}]" if forced else ""))
    return "\n".join(lines)


def main() -> None:
    """The command ``python -m pointmap.env``: the report on stdout (the library itself only logs)."""
    sys.stdout.write(format_report(report()) + "\n")


if __name__ == "__main__":
    main()
