"""The process scope: what one run, one driver or one tool changes in the process, owned and given back.

    with ProcessScope() as scope:          # a Trainer session, a driver (seeds, folds, the ablation), a tool
        scope.force_backends(cfg.ops)       # op backends forced for this scope only
        scope.set_deterministic(True)       # deterministic algorithms for this scope only
        ...                                 # logging set up inside is undone at the end too
        raise_if_stopped("before seed 1")   # a driver, between its runs

Scopes nest. On exit each gives back what it found on entry: the forced op backends (and the record of
the backends used, :func:`pointmap.ops.backend_scope`), deterministic mode, the ``pointmap`` logger's
handlers and level. The outermost one owns SIGINT and SIGTERM: while it is open, a signal is a *stop
request* that the innermost scope defers to the next check point (a Trainer's: each step, after an
epoch's hooks, during the final test, after a probe's fit; a driver's: before each run) where the run
saves its checkpoint and raises :class:`RunInterrupted`; a second signal stops at once
(:class:`SignalInterrupt`, a ``KeyboardInterrupt``). A scope opened with ``defer_stop=False`` (the tools' entry
point, around what is not a run) turns the first signal into a :class:`SignalInterrupt` at once. Both say which
signal it was, and :func:`exit_code` the exit status a shell reports for it (SIGINT 130, SIGTERM 143). Outside the main thread no
handler is installed (Python delivers signals there only), nor for a signal the process was started
ignoring (a shell's background job ignores SIGINT, ``nohup`` SIGHUP): it stays ignored, as Python leaves it.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any, Dict, List, Mapping, Optional

import torch

from ..ops import backend_scope, set_backend
from .rundir import RunInterrupted, command_line

__all__ = ["ProcessScope", "SignalInterrupt", "stop_requested", "raise_if_stopped", "exit_code"]

logger = logging.getLogger(__name__)

_OPEN: List["ProcessScope"] = []  # the scopes open now, outermost first
_STOP: Dict[str, Any] = {"signal": None, "previous": {}}  # the pending stop request; the handlers replaced


class SignalInterrupt(KeyboardInterrupt):
    """A signal stopped the process at once (a second SIGINT / SIGTERM, or one outside a deferring scope);
    ``signal``: its name."""

    def __init__(self, signal: str):
        self.signal = signal
        super().__init__(signal)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """The exit status of a process that ``interrupt`` stopped, as a shell reports a signal's: 128 + its
    number, so SIGTERM 143 and SIGINT 130 (also a plain KeyboardInterrupt, whose signal is not known)."""
    name = getattr(interrupt, "signal", None) or "SIGINT"
    return 128 + int(signal.Signals[name])


def stop_requested() -> Optional[str]:
    """The name of the signal that asked this process to stop (``SIGTERM``), or None."""
    return _STOP["signal"]


def raise_if_stopped(where: str) -> None:
    """A stop was requested: raise :class:`RunInterrupted` saying ``where`` and the command that continues."""
    if _STOP["signal"] is not None:
        raise RunInterrupted(where, command_line(resume=True), _STOP["signal"])


def _on_signal(signum: int, frame: Any) -> None:
    defer = bool(_OPEN) and _OPEN[-1].defer_stop
    if not defer or _STOP["signal"] is not None:  # not deferred here, or asked twice: stop now
        raise SignalInterrupt(signal.Signals(signum).name)
    _STOP["signal"] = signal.Signals(signum).name
    logger.warning("%s received: stopping at the next check point (again to stop at once)", _STOP["signal"])


class ProcessScope:
    """See the module docstring. ``defer_stop``: a signal is a stop request (True) or stops at once."""

    def __init__(self, defer_stop: bool = True):
        self.defer_stop = defer_stop
        self._exits: Optional[contextlib.ExitStack] = None

    @property
    def stop_requested(self) -> Optional[str]:
        return stop_requested()

    def configure(self, ops: Mapping[str, str], deterministic: bool, cpu_threads: Optional[int] = None) -> None:
        """A run's process-wide settings for the rest of this scope: forced op backends, deterministic mode,
        the CPU's intra-op thread count (None: as it is)."""
        self.force_backends(ops)
        self.set_deterministic(deterministic)
        if cpu_threads:
            torch.set_num_threads(int(cpu_threads))

    def force_backends(self, ops: Mapping[str, str]) -> None:
        """``op -> backend`` (a config's ``ops:``) for the rest of this scope."""
        for op, backend in ops.items():
            set_backend(op, backend)

    def set_deterministic(self, on: bool) -> None:
        """Deterministic algorithms (warnings where an op has none) and no cuDNN autotuning, for this scope."""
        if on:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

    def __enter__(self) -> "ProcessScope":
        self._exits = contextlib.ExitStack()
        self._exits.enter_context(backend_scope())
        self._exits.callback(torch.set_num_threads, torch.get_num_threads())
        self._exits.callback(_restore_deterministic, torch.are_deterministic_algorithms_enabled(),
                             torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)
        log = logging.getLogger("pointmap")
        self._exits.callback(_restore_logger, log, list(log.handlers), log.level, log.propagate)
        if not _OPEN and threading.current_thread() is threading.main_thread():
            _STOP["previous"] = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
                                 if signal.getsignal(sig) is not signal.SIG_IGN}
        _OPEN.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _OPEN.remove(self)
        if not _OPEN:
            for sig, handler in _STOP["previous"].items():
                signal.signal(sig, handler)
            _STOP.update(signal=None, previous={})
        self._exits.close()


def _restore_deterministic(on: bool, warn_only: bool, benchmark: bool) -> None:
    torch.use_deterministic_algorithms(on, warn_only=warn_only)
    torch.backends.cudnn.benchmark = benchmark


def _restore_logger(log: logging.Logger, handlers: List[logging.Handler], level: int, propagate: bool) -> None:
    """The logger as it was: handlers added since are closed, handlers removed since come back (a log file
    handler closed meanwhile reopens its file, appending, on its next record)."""
    for h in list(log.handlers):
        if h not in handlers:
            log.removeHandler(h)
            h.close()
    for h in handlers:
        if h not in log.handlers:
            log.addHandler(h)
    log.setLevel(level)
    log.propagate = propagate
