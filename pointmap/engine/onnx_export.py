"""A point-cloud classifier as ONNX: the whole model, grouping included, checked against PyTorch.

    report = export_onnx(model, "exports/demo/model.onnx", num_points=256)

The graph takes ``points`` (B, N, 3) float32, B dynamic and N the model's cloud size, and gives ``logits``
(B, classes). FPS, KNN, the serialization and the Mamba scan run their PyTorch paths inside it (the
backends are forced to ``torch`` for the export): FPS as its loop over the G picks, unrolled; KNN as a stable
sort (ONNX ``TopK``, whose ties go to the lower index, as the PyTorch sort's); the scan in chunks of ~√L
steps, unrolled. The exporter is ``torch.onnx.export(dynamo=True)`` (``torch.export`` then onnxscript, opset
:data:`OPSET`): the TorchScript exporter is deprecated since torch 2.9, and ``torch.export`` makes the batch
size a symbol, so a shape computed from it stays one in the graph instead of being frozen at the example's.

After export, onnxruntime runs the file on clouds of another batch size than the one traced and its logits
must equal PyTorch's within :data:`TOLERANCE` (of the logits' scale when it is above 1); otherwise a
:class:`~pointmap.errors.UserError` says by how much, and the caller writes nothing.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import time
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from ..errors import UserError
from ..ops import backend_scope, set_backend
from ..ops.testing import random_cloud

__all__ = ["export_onnx", "check_exportable", "OnnxReport", "onnx_missing",
           "onnx_session", "run_onnx", "OPSET", "TOLERANCE", "ONNX_FILE", "TORCH_OPS"]

ONNX_FILE = "model.onnx"
OPSET = 18
TOLERANCE = 1e-4
TORCH_OPS = {"fps": "torch", "knn": "torch", "selective_scan": "torch"}  # the PyTorch path of every op in the graph
_PACKAGES = ("onnx", "onnxruntime", "onnxscript")
_INSTALL = "pip install onnx onnxruntime onnxscript (or pip install 'pointmap[onnx]')"


@dataclass
class OnnxReport:
    """What :func:`export_onnx` checked: the largest |onnxruntime - PyTorch| logit difference on ``batch`` clouds
    of ``num_points`` points, the bound it had to stay under, and the seconds the export took."""

    path: str
    num_points: int
    batch: int
    max_abs_diff: float
    bound: float
    opset: int
    seconds: float


def onnx_missing() -> list:
    """The packages ``--onnx`` needs that do not import here."""
    return [p for p in _PACKAGES if importlib.util.find_spec(p) is None]


def _require() -> None:
    missing = onnx_missing()
    if missing:
        raise UserError(f"ONNX export needs {', '.join(missing)}: {_INSTALL}")
    if not hasattr(torch.compiler, "is_exporting") or tuple(int(v) for v in torch.__version__.split(".")[:2]) < (2, 6):
        raise UserError(f"ONNX export needs torch >= 2.6 (its dynamo exporter), found {torch.__version__}")


@contextlib.contextmanager
def torch_ops() -> Iterator[None]:
    """Every op on its PyTorch backend inside (what the exported graph computes), as before on exit."""
    with backend_scope():
        for op, backend in TORCH_OPS.items():
            set_backend(op, backend)
        yield


def _sort_stable(self, stable=None, dim: int = -1, descending: bool = False):
    """aten.sort(stable=True) as ONNX TopK over the whole axis: TopK puts equal values in index order, as a
    stable sort does (torch's ONNX function table has no stable sort)."""
    from onnxscript import opset18 as op

    k = op.Shape(self, start=dim) if dim == -1 else op.Shape(self, start=dim, end=dim + 1)
    return op.TopK(self, k, axis=dim, largest=descending, sorted=True)


def check_exportable(model: nn.Module) -> None:
    """A one-line :class:`~pointmap.errors.UserError` unless the packages are here and ``model`` is a
    point-cloud classifier (what :func:`export_onnx` takes)."""
    _require()
    from ..models import Classifier, HybridEncoder

    if not isinstance(model, Classifier) or not isinstance(model.encoder, HybridEncoder):
        what = type(model).__name__ if not isinstance(model, Classifier) else type(model.encoder).__name__
        raise UserError(f"ONNX export takes a point-cloud classifier (points in, logits out); this run's model is "
                        f"a {what}: export a classification run")


def export_onnx(model: nn.Module, path: str, num_points: int, batch: int = 3, tolerance: float = TOLERANCE,
                seed: int = 0) -> OnnxReport:
    """Write ``model`` (a point-cloud :class:`~pointmap.models.Classifier`, put in eval mode) to ``path`` as
    ONNX and check it with onnxruntime on ``batch`` random clouds of ``num_points`` points (a batch size the
    export did not trace). One-line :class:`~pointmap.errors.UserError` when a package is missing, the model
    is not a point-cloud classifier, or onnxruntime's logits are off by more than ``tolerance`` ·
    max(1, largest |logit|); ``path`` is then whatever the failed step left, for the caller to discard.
    """
    check_exportable(model)
    model.eval()
    example = random_cloud(2, num_points, seed=seed)
    start = time.perf_counter()
    with torch_ops(), torch.no_grad():
        program = torch.onnx.export(
            model, (example,), input_names=["points"], output_names=["logits"], opset_version=OPSET, dynamo=True,
            dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}}, external_data=False,
            custom_translation_table={torch.ops.aten.sort.stable: _sort_stable}, verbose=False)
    program.save(path)
    seconds = time.perf_counter() - start
    points = random_cloud(batch, num_points, seed=seed + 1)
    with torch_ops(), torch.no_grad():
        want = model(points)
    got = torch.from_numpy(run_onnx(path, points.numpy()))
    diff = float((got - want).abs().max())
    bound = tolerance * max(1.0, float(want.abs().max()))
    if not diff <= bound:  # NaN too
        raise UserError(f"the ONNX model's logits differ from PyTorch's by up to {diff:.3g} (allowed: {bound:.3g}) "
                        f"on {batch} random clouds of {num_points} points: nothing written")
    return OnnxReport(path=path, num_points=num_points, batch=batch, max_abs_diff=diff, bound=bound, opset=OPSET,
                      seconds=seconds)


def onnx_session(path: str, threads: int = 0):
    """An onnxruntime CPU session of ``path`` (``threads``: intra-op threads, 0 its default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1 if threads else 0
    opts.log_severity_level = 3
    return ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(path_or_session, points) -> "numpy.ndarray":  # noqa: F821
    """Logits of a (B, N, 3) float32 array from an exported ``model.onnx`` (or a session of it)."""
    session = onnx_session(path_or_session) if isinstance(path_or_session, (str, os.PathLike)) else path_or_session
    return session.run(["logits"], {"points": points})[0]
