"""One dispatch point for every op: ``backend=`` argument > environment > config > "auto".

Backends register a callable that says whether they can run on given tensors, and an install hint
used when a backend is asked for by name but cannot run here. A backend that computes only one variant of an
op's semantics (pointnet2_ops' FPS always skips points near the origin) says so in ``fixed``; :func:`resolve`
hands it out only for that variant, so ``auto`` gives the same result on every machine.

Every backend :func:`resolve` hands out is recorded (:func:`backends_used`: what a run writes to meta.json
and its checkpoints). A kernel that no GPU has run yet carries a ``selfcheck``: before ``auto`` uses it for
the first time on a device, the check compares it with its PyTorch backend on a small input; when they
disagree (or the kernel raises), a :class:`KernelMismatchWarning` gives the figures once and the PyTorch
backend serves that op for the rest of the process. ``POINTMAP_TRUST_KERNELS=1`` skips the check; a backend
asked for by name is never checked.
"""
import contextlib
import importlib.util
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ..errors import UnavailableError, UserError, one_line

_OVERRIDES: Dict[str, str] = {}
_USED: Dict[str, List[str]] = {}  # op -> the backends resolve() handed out, in order of first use
_VERDICTS: Dict[Tuple[str, str, str], Optional[str]] = {}  # (op, backend, device type) -> None: agrees; or why not


class KernelMismatchWarning(RuntimeWarning):
    """An unverified kernel disagreed with the PyTorch path on its check input; the PyTorch path runs instead."""


@dataclass
class Backend:
    name: str
    fn: Callable
    available: Callable[[], bool]  # importable / compiled on this machine
    supports: Callable[..., bool] = lambda *t: True  # can run on these tensors (device, dtype)
    hint: str = ""
    # a kernel not yet verified on a GPU: selfcheck(kernel_fn, reference_fn, device) -> None when they agree on
    # a small input, else the figures; the reference (and the fallback) is the backend named checked_against
    selfcheck: Optional[Callable] = None
    checked_against: str = "torch"
    # options of the op this backend computes one way only, whatever it is asked: option -> the value it computes
    fixed: Dict[str, Any] = field(default_factory=dict)

    def computes(self, options: Dict[str, Any]) -> bool:
        """Whether this backend computes the op with these options (one the caller does not pass is not checked)."""
        return all(options.get(k, v) == v for k, v in self.fixed.items())


_REGISTRY: Dict[str, List[Backend]] = {}


def module_present(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it. A module already imported without a
    ``__spec__`` (a stand-in put in ``sys.modules``) counts as present; a broken spec as absent."""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def register_backend(op: str, backend: Backend) -> None:
    """Add a backend; earlier registrations are preferred by ``auto``."""
    _REGISTRY.setdefault(op, []).append(backend)


def set_backend(op: str, name: Optional[str]) -> None:
    """Force ``op`` to a backend for this process (what a config's ``ops:`` section does); None clears."""
    if op not in _REGISTRY:
        raise UserError(f"unknown op {op!r}; ops with backends: {sorted(_REGISTRY)}")
    if name is None or name == "auto":
        _OVERRIDES.pop(op, None)
    else:
        _check_name(op, name)
        _OVERRIDES[op] = name


def get_backend_override(op: str) -> Optional[str]:
    env = os.environ.get(f"POINTMAP_{op.upper()}_BACKEND")
    if env and env != "auto":
        return env
    return _OVERRIDES.get(op)


def _check_name(op: str, name: str) -> Backend:
    for b in _REGISTRY[op]:
        if b.name == name:
            return b
    raise UserError(f"unknown {op} backend {name!r}; choose one of {['auto'] + [b.name for b in _REGISTRY[op]]}")


def available_backends(op: str) -> List[str]:
    """Names of the backends of ``op`` that can run on this machine."""
    return [b.name for b in _REGISTRY[op] if b.available()]


def all_backends(op: str) -> List[str]:
    return [b.name for b in _REGISTRY[op]]


def resolve(op: str, backend: Optional[str], *tensors, options: Optional[Dict[str, Any]] = None) -> Callable:
    """The function that runs ``op`` for these tensors with these semantic ``options`` (recorded in
    :func:`backends_used`). ``auto`` skips a backend whose ``fixed`` options differ; one asked for by name raises."""
    b = _pick(op, backend, tensors, options or {})
    used = _USED.setdefault(op, [])
    if b.name not in used:
        used.append(b.name)
    return b.fn


def _pick(op: str, backend: Optional[str], tensors, options: Dict[str, Any]) -> Backend:
    name = backend if backend not in (None, "auto") else get_backend_override(op)
    if name is not None:
        b = _check_name(op, name)
        if not b.available():
            raise UnavailableError(f"{op} backend {name!r} is not available on this machine: {b.hint}")
        if not b.supports(*tensors):
            dev = tensors[0].device if tensors else "?"
            raise UnavailableError(f"{op} backend {name!r} cannot run on tensors on {dev}: {b.hint}")
        if not b.computes(options):
            fixed = ", ".join(f"{k}={v!r}" for k, v in b.fixed.items())
            asked = ", ".join(f"{k}={options.get(k, v)!r}" for k, v in b.fixed.items())
            raise UnavailableError(f"{op} backend {name!r} computes {op} with {fixed} only, not {asked}; "
                                   f"use backend='auto' or another backend")
        return b
    for b in _REGISTRY[op]:
        if b.available() and b.supports(*tensors) and b.computes(options):
            return b if b.selfcheck is None or _trusted(op, b, tensors[0].device) else _check_name(op, b.checked_against)
    raise RuntimeError(f"no {op} backend can run here")  # unreachable: the torch backend runs anywhere


def _trusted(op: str, b: Backend, device) -> bool:
    """Whether kernel ``b`` agrees with its PyTorch backend on ``device`` (checked once per process)."""
    if os.environ.get("POINTMAP_TRUST_KERNELS") == "1":
        return True
    key = (op, b.name, device.type)
    if key not in _VERDICTS:
        import torch

        reference = _check_name(op, b.checked_against)
        try:  # eagerly, outside any graph torch.compile is tracing
            verdict = torch.compiler.disable(b.selfcheck)(b.fn, reference.fn, device)
        except Exception as e:  # a kernel that cannot even run its check is not used either
            verdict = f"its check raised {type(e).__name__}: {one_line(e, 300)}"
        _VERDICTS[key] = verdict
        if verdict is not None:
            warnings.warn(f"{op} backend {b.name!r} disagrees with {reference.name!r} on a check input on {device}: "
                          f"{verdict}; {reference.name!r} runs {op} in this process instead (POINTMAP_TRUST_KERNELS=1 "
                          f"skips this check)", KernelMismatchWarning, stacklevel=4)
    return _VERDICTS[key] is None


def backends_used() -> Dict[str, List[str]]:
    """op -> the backends that ran it (what ``auto`` picked), since the innermost :func:`backend_scope` began."""
    return {op: list(names) for op, names in _USED.items()}


def kernel_checks() -> Dict[str, str]:
    """``"<op> <backend> on <device type>"`` -> ``"agrees"`` or what differed, for every kernel checked in this
    process."""
    return {f"{op} {name} on {dev}": verdict or "agrees" for (op, name, dev), verdict in _VERDICTS.items()}


@contextlib.contextmanager
def backend_scope() -> Iterator[None]:
    """Inside, :func:`set_backend` may force backends and :func:`backends_used` starts empty; on exit the forced
    backends are those of before, and the record of before gets what was used inside added to it."""
    overrides, used = dict(_OVERRIDES), backends_used()
    _USED.clear()
    try:
        yield
    finally:
        inside = backends_used()
        _OVERRIDES.clear()
        _OVERRIDES.update(overrides)
        _USED.clear()
        _USED.update(used)
        for op, names in inside.items():
            _USED.setdefault(op, []).extend(n for n in names if n not in _USED[op])


def exporting() -> bool:
    """Whether ``torch.export`` (what ``torch.onnx.export`` runs) is tracing this call: an op then takes a path
    with no host-side decision on tensor values and no shape-dependent Python arithmetic on the batch size."""
    import torch

    is_exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.5
    return bool(is_exporting and is_exporting())


def ops() -> List[str]:
    return sorted(_REGISTRY)
