"""pointmap: masked autoregressive pretraining (MAP) for point clouds with hybrid Mamba-Transformer encoders.

The CUDA ops in extensions/ are optional. They are compiled on first use on a GPU machine (cached by
torch.utils.cpp_extension), or at install time with ``FORCE_CUDA=1 pip install -e .``.
"""
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _version():
    ns = {}
    with open(os.path.join(HERE, "pointmap", "version.py")) as f:
        exec(f.read(), ns)
    return ns["__version__"]


def _ext_modules():
    """Build pointmap._C at install time only when asked (FORCE_CUDA=1) and CUDA is usable."""
    if os.environ.get("FORCE_CUDA", "0") != "1":
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    src = os.path.join("extensions", "pointmap_ops")
    sources = [os.path.join(src, f) for f in sorted(os.listdir(os.path.join(HERE, src)))
               if f.endswith((".cpp", ".cu"))]
    ext = CUDAExtension("pointmap._C", sources, define_macros=[("POINTMAP_WITH_CUDA", None)],
                        extra_compile_args={"cxx": ["-O3", "-ffp-contract=off"], "nvcc": ["-O3", "--fmad=false"]})
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = _ext_modules()

setup(
    name="pointmap",
    version=_version(),
    description="Masked autoregressive pretraining for point clouds with hybrid Mamba-Transformer encoders",
    long_description=open(os.path.join(HERE, "README.md")).read() if os.path.exists(os.path.join(HERE, "README.md")) else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["pointmap", "pointmap.*"]),
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.1",
        "torchvision",
        "timm>=1.0",
        "pyyaml",
        "h5py",
        "numpy",
        "tqdm",
        "trimesh",
        "tensorboard",
        "ninja",  # compiles extensions/pointmap_ops on first use (torch.utils.cpp_extension)
    ],
    extras_require={
        "vis": ["open3d>=0.17", "matplotlib"],
        # mamba-ssm compiles against the installed torch: install it with
        #   pip install --no-build-isolation "pointmap[cuda]"
        "cuda": ["mamba-ssm>=2.0", "ninja"],
        "dev": ["pytest", "scipy", "rtree", "fpsample", "matplotlib", "scikit-learn", "ninja", "Pillow"],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
