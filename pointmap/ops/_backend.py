"""One dispatch point for every op: ``backend=`` argument > environment > config > "auto".

Backends register a callable that says whether they can run on given tensors, and an install hint
used when a backend is asked for by name but cannot run here.
"""
import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from ..errors import UnavailableError, UserError

_OVERRIDES: Dict[str, str] = {}


@dataclass
class Backend:
    name: str
    fn: Callable
    available: Callable[[], bool]  # importable / compiled on this machine
    supports: Callable[..., bool] = lambda *t: True  # can run on these tensors (device, dtype)
    hint: str = ""


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


def resolve(op: str, backend: Optional[str], *tensors) -> Callable:
    """The function that runs ``op`` for these tensors."""
    name = backend if backend not in (None, "auto") else get_backend_override(op)
    if name is not None:
        b = _check_name(op, name)
        if not b.available():
            raise UnavailableError(f"{op} backend {name!r} is not available on this machine: {b.hint}")
        if not b.supports(*tensors):
            dev = tensors[0].device if tensors else "?"
            raise UnavailableError(f"{op} backend {name!r} cannot run on tensors on {dev}: {b.hint}")
        return b.fn
    for b in _REGISTRY[op]:
        if b.available() and b.supports(*tensors):
            return b.fn
    raise RuntimeError(f"no {op} backend can run here")  # unreachable: the torch backend runs anywhere


def ops() -> List[str]:
    return sorted(_REGISTRY)
