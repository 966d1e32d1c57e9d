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
    lines = [f"pointmap {info['pointmap']}  python {info['python']}  {info['platform']}",
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
