"""The optional compiled ops of pointmap (the metadata is pyproject.toml's).

extensions/pointmap_ops (C++, and CUDA where nvcc and a GPU are present) is built into ``pointmap._C`` with
torch.utils.cpp_extension against the torch that is already installed:

    pip install --no-build-isolation -e ".[dev,vis]"     # the README's install: the ops are compiled

Where torch cannot be imported here (a plain ``pip install .`` or ``pip wheel .`` builds in an isolated
environment without it), nothing is compiled and the result is a pure-Python package (a ``py3-none-any``
wheel) that uses the ops' PyTorch paths; a compiler failure leaves the same. Either way the build says so in
one line, kept in ``pointmap/_C_build.txt`` for ``python -m pointmap.env``. Nothing is compiled at run time.

    FORCE_CUDA=1        build the CUDA kernels too even when no GPU is visible (needs nvcc and a CUDA torch)
    POINTMAP_NO_EXT=1   do not build pointmap._C

The configs of the top-level ``cfgs/`` folder ship inside the package (``pointmap/cfgs``), copied at build
time; an editable install reads them in place.
"""
import os
import shutil

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join("extensions", "pointmap_ops")
STATUS = "_C_build.txt"  # beside the package's modules: what the build did, for pointmap.env


def _sources(with_cuda: bool):
    files = sorted(f for f in os.listdir(os.path.join(HERE, SRC)) if f.endswith(".cpp") or (with_cuda and f.endswith(".cu")))
    return [os.path.join(SRC, f) for f in files]


def _why_not_built():
    """None when the ops can be compiled here, else the one line that says why they are not."""
    if os.environ.get("POINTMAP_NO_EXT", "0") == "1":
        return "not built: POINTMAP_NO_EXT=1 at install time"
    try:
        import torch  # noqa: F401
        from torch.utils import cpp_extension  # noqa: F401
    except ImportError as e:
        return (f"not built: torch was not importable when pointmap was built ({e}): a pure-Python package, the "
                "ops' PyTorch paths; to compile them install torch first, then pip install --no-build-isolation .")
    return None


def _record(folder: str, text: str) -> None:
    print(f"pointmap._C: {text}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, STATUS), "w") as f:
        f.write(text + "\n")


SKIPPED = _why_not_built()


class BuildPy(build_py):
    """build_py that puts ``cfgs/`` into the built package (not in an editable install: it reads them in place)
    and, when the ops are not compiled, says so."""

    def run(self):
        super().run()
        folder = os.path.join(HERE if self.editable_mode else self.build_lib, "pointmap")
        if SKIPPED:
            _record(folder, SKIPPED)
        if not self.editable_mode:
            target = os.path.join(folder, "cfgs")
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(os.path.join(HERE, "cfgs"), target, ignore=shutil.ignore_patterns("*.pyc", "__pycache__"))


class OptionalTorchExtension(build_ext):
    """build_ext for pointmap._C through torch's BuildExtension; a compiler failure is reported and leaves the
    pure-PyTorch install."""

    def run(self):
        import torch
        from torch.utils import cpp_extension

        with_cuda = (torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
                     and (os.environ.get("FORCE_CUDA", "0") == "1" or torch.cuda.is_available()))
        make = cpp_extension.CUDAExtension if with_cuda else cpp_extension.CppExtension
        macros = [("POINTMAP_WITH_CUDA", None)] if with_cuda else []
        self.distribution.ext_modules[:] = [make("pointmap._C", _sources(with_cuda), define_macros=macros,
                                                 extra_compile_args={"cxx": ["-O3", "-ffp-contract=off"],
                                                                     "nvcc": ["-O3", "--fmad=false"]})]
        builder = cpp_extension.BuildExtension(self.distribution)
        for name in ("inplace", "build_lib", "build_temp", "force", "debug", "parallel", "compiler", "editable_mode"):
            if hasattr(self, name):
                setattr(builder, name, getattr(self, name))
        builder.ensure_finalized()  # takes the torch extension from the distribution
        try:
            builder.run()
        except Exception as e:  # noqa: BLE001 -- a failed optional build must not fail the install
            msg = " ".join(str(e).split())[-300:]
            self.extensions = []
            self.distribution.ext_modules[:] = []
            return self._record(f"not built: the compiler failed ({type(e).__name__}: {msg})")
        self.extensions = builder.extensions
        self._record(f"built with torch {torch.__version__}" + (f" and CUDA {torch.version.cuda}" if with_cuda
                                                                 else ", C++ only"))

    def _record(self, text: str):
        _record(os.path.join(HERE if self.inplace else self.build_lib, "pointmap"), text)


setup(
    # Declared only when torch is importable, so that setuptools runs build_ext (which decides what it really
    # builds); without it the wheel is pure Python, tagged py3-none-any.
    ext_modules=[] if SKIPPED else [Extension("pointmap._C", sources=_sources(False))],
    cmdclass={"build_ext": OptionalTorchExtension, "build_py": BuildPy},
)
