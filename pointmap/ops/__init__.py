"""Point-cloud ops: one public function, one ``*_ref`` oracle and one dispatch point per op.

Every public op takes ``backend="auto"``; the choice can also be forced per op by environment
(``POINTMAP_FPS_BACKEND=torch``) or from a config's ``ops:`` section (:func:`set_backend`).
``python -m pointmap.env`` lists the backends each op can use on this machine; :func:`backends_used` says which
ran. Kernels not yet verified on a GPU check themselves against the PyTorch path first (``_backend``).
"""
from ._backend import (KernelMismatchWarning, available_backends, backend_scope, backends_used, get_backend_override,
                       kernel_checks, set_backend)
from .chamfer import chamfer, chamfer_ref
from .fps import fps, fps_ref
from .group import gather_points, group, group_ref
from .knn import knn, knn_ref
from .selective_scan import selective_scan, selective_scan_ref
from .serialize import serialize, serialize_ref

__all__ = [
    "fps", "fps_ref", "knn", "knn_ref", "chamfer", "chamfer_ref", "group", "group_ref", "gather_points",
    "serialize", "serialize_ref", "selective_scan", "selective_scan_ref",
    "available_backends", "set_backend", "get_backend_override", "backends_used", "kernel_checks", "backend_scope",
    "KernelMismatchWarning",
]
