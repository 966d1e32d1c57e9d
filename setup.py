"""pointmap: masked autoregressive pretraining (MAP) for point clouds with hybrid Mamba-Transformer encoders.

The compiled ops (extensions/pointmap_ops: C++, and CUDA where nvcc and a GPU are present) are built here,
at install time, into ``pointmap._C`` with torch.utils.cpp_extension. The build is optional: when torch
cannot be imported by this script (pip's isolated build environment) or the compiler fails, the install
still succeeds, pointmap uses its PyTorch paths, and ``python -m pointmap.env`` says why (the reason is
kept in ``pointmap/_C_build.txt``). Nothing is compiled at run time.

    FORCE_CUDA=1   build the CUDA kernels too even when no GPU is visible (needs nvcc and a CUDA torch)
    POINTMAP_NO_EXT=1   do not build pointmap._C
"""
import os

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join("extensions", "pointmap_ops")
STATUS = "_C_build.txt"  # beside the package's modules: what the build did, for pointmap.env


def _version():
    ns = {}
    with open(os.path.join(HERE, "pointmap", "version.py")) as f:
        exec(f.read(), ns)
    return ns["__version__"]


def _sources(with_cuda: bool):
    files = sorted(f for f in os.listdir(os.path.join(HERE, SRC)) if f.endswith(".cpp") or (with_cuda and f.endswith(".cu")))
    return [os.path.join(SRC, f) for f in files]


class OptionalTorchExtension(build_ext):
    """build_ext for pointmap._C through torch's BuildExtension, chosen when it runs (torch is installed by
    then in a plain ``pip install``); any failure is reported and leaves the pure-PyTorch install."""

    def run(self):
        if os.environ.get("POINTMAP_NO_EXT", "0") == "1":
            return self._skip("not built: POINTMAP_NO_EXT=1 at install time")
        try:
            import torch
            from torch.utils import cpp_extension
        except ImportError as e:
            return self._skip(f"not built: torch was not importable when pointmap was installed ({e}); "
                              "install torch first, then: pip install --no-build-isolation --no-deps -e .")
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
            return self._skip(f"not built: the compiler failed ({type(e).__name__}: {msg})")
        self.extensions = builder.extensions
        self._record(f"built with torch {torch.__version__}" + (f" and CUDA {torch.version.cuda}" if with_cuda
                                                                 else ", C++ only"))

    def _skip(self, text: str):
        self.extensions = []
        self.distribution.ext_modules[:] = []
        self._record(text)

    def _record(self, text: str):
        print(f"pointmap._C: {text}")
        folder = os.path.join(HERE if self.inplace else self.build_lib, "pointmap")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, STATUS), "w") as f:
            f.write(text + "\n")


setup(
    name="pointmap",
    version=_version(),
    description="Masked autoregressive pretraining for point clouds with hybrid Mamba-Transformer encoders",
    long_description=open(os.path.join(HERE, "README.md")).read() if os.path.exists(os.path.join(HERE, "README.md")) else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["pointmap", "pointmap.*"]),
    package_data={"pointmap.models": ["pretrained.yaml"]},  # the published weights' entries
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.4",  # nn.RMSNorm
        "torchvision",
        "timm>=1.0",
        "pyyaml",
        "h5py",
        "numpy",
        "tqdm",
        "safetensors",  # tools/export.py's weights (timm needs it too)
        "trimesh",
        "tensorboard",
        "scikit-learn",  # the SVM linear probe (the ablation's default)
        "ninja",  # builds extensions/pointmap_ops at install time (torch.utils.cpp_extension)
    ],
    extras_require={
        "vis": ["open3d>=0.17", "matplotlib"],
        # mamba-ssm compiles against the installed torch: install it with
        #   pip install --no-build-isolation "pointmap[cuda]"
        "cuda": ["mamba-ssm>=2.0", "ninja"],
        # tools/export.py --onnx: torch.onnx's dynamo exporter needs onnxscript; onnxruntime checks the file
        # (tested with onnx 1.23, onnxruntime 1.32, onnxscript 0.7)
        "onnx": ["onnx", "onnxruntime", "onnxscript"],
        # fpsample 1.x is published as an sdist only, whose build needs scikit-build-core: the README's
        # --no-build-isolation install cannot build it on a fresh machine, so dev takes the 0.3 wheels.
        # dev: the tests, and the documentation site (mkdocs build --strict, which .ci/run runs)
        "dev": ["pytest", "scipy", "rtree", "fpsample>=0.3,<1.0", "matplotlib", "scikit-learn", "ninja", "Pillow",
                "mkdocs-material", "mkdocstrings[python]", "onnx", "onnxruntime", "onnxscript"],
    },
    # Declared so that setuptools runs build_ext; the command above decides what it really builds.
    ext_modules=[Extension("pointmap._C", sources=_sources(False))],
    cmdclass={"build_ext": OptionalTorchExtension},
)
