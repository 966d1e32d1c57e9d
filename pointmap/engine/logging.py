"""Run logging: the ``pointmap`` logger to the console and ``log.txt``, an epoch's progress (a bar on a
terminal, lines elsewhere), TensorBoard scalars, metrics.json.

Only rank 0 writes files; other ranks log warnings and errors to the console.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time
from typing import Any, Dict, List, Optional

from tqdm import tqdm

from .checkpoint import atomic_write_json

__all__ = ["setup_logging", "close_log_file", "RunWriter", "Progress", "format_metrics", "format_value", "flatten"]

_FORMAT = "%(asctime)s %(levelname)s %(message)s"

logger = logging.getLogger(__name__)


def setup_logging(log_file: Optional[str] = None, main_process: bool = True, hold: bool = False) -> logging.Logger:
    """Configure the ``pointmap`` logger once per run: INFO to stdout (and ``log_file``, appended) on the
    main process, WARNING elsewhere. Handlers from an earlier call in the same process are replaced.
    ``hold`` (without ``log_file``): keep the records for the log file a later call attaches, so what a run
    logs before its folder exists (data sets built, weights loaded) still opens its log.txt."""
    logger = logging.getLogger("pointmap")
    held: List[logging.LogRecord] = []
    for h in list(logger.handlers):
        if getattr(h, "_pointmap_run", False):
            if isinstance(h, _HeldRecords):
                held += h.buffer
            logger.removeHandler(h)
            h.close()
    logger.setLevel(logging.INFO if main_process else logging.WARNING)
    logger.propagate = False
    handlers: List[logging.Handler] = [_StdoutHandler()]
    if log_file and main_process:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a", encoding="utf-8"))
    elif hold and main_process:
        handlers.append(_HeldRecords())
    for h in handlers:
        h.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        h._pointmap_run = True
        logger.addHandler(h)
    for record in held if log_file and main_process else ():
        handlers[-1].handle(record)
    return logger


class _HeldRecords(logging.handlers.BufferingHandler):
    """Every record, kept until :func:`setup_logging` hands them to a log file (never flushed on its own)."""

    def __init__(self):
        super().__init__(capacity=0)

    def shouldFlush(self, record: logging.LogRecord) -> bool:
        return False


def close_log_file() -> None:
    """Detach the run's ``log.txt`` from the ``pointmap`` logger (end of a run); the console stays."""
    logger = logging.getLogger("pointmap")
    for h in list(logger.handlers):
        if getattr(h, "_pointmap_run", False) and isinstance(h, logging.FileHandler):
            logger.removeHandler(h)
            h.close()


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time of the record (not the one at setup), so a
    redirected or captured stdout that has since closed is never written to."""

    def __init__(self):
        super().__init__(sys.stdout)
        self.addFilter(lambda record: getattr(record, "console", True))  # extra={"console": False}: the file only

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


class Progress:
    """An epoch's progress on rank 0 (``enabled``): a tqdm bar on a terminal; where stderr is not one (a log
    redirected to a file, a scheduler's job) no bar, whose carriage returns would fill the file, but a line
    in the log at most every :attr:`every_s` seconds (and none at the epoch's end, which has its own line)."""

    every_s = 30.0

    def __init__(self, total: int, initial: int, desc: str, enabled: bool):
        self.total, self.n, self.desc = total, initial, desc
        self.terminal = enabled and sys.stderr.isatty()
        self.lines = enabled and not self.terminal
        self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True,
                        disable=not self.terminal)
        self._start = self._shown = time.time()
        self._first = initial

    def update(self) -> None:
        self.n += 1
        self.bar.update()

    def show(self, loss: float, lr: float) -> None:
        """The running loss and lr: on the bar, or (at most every ``every_s`` seconds) as a log line."""
        if self.terminal:
            self.bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.2e}")
            return
        now = time.time()
        if self.lines and self.n < self.total and now - self._shown >= self.every_s:
            self._shown = now
            logger.info("%s step %d/%d | loss %.4g | lr %.3g | %.2f steps/s", self.desc, self.n, self.total, loss, lr,
                        (self.n - self._first) / max(now - self._start, 1e-9))

    def close(self) -> None:
        self.bar.close()


def format_metrics(metrics: Dict[str, Any], prefix: str = "") -> str:
    """``{"acc": 91.234, "loss": 0.00123}`` -> ``acc 91.23 loss 0.00123``."""
    return " ".join(f"{prefix}{k} {format_value(v)}" for k, v in metrics.items())


def format_value(v: Any) -> str:
    """Floats to 2 decimals (4 significant digits under 1), None as ``-``, anything else as it prints."""
    if v is None:
        return "-"
    return (f"{v:.2f}" if abs(v) >= 1 else f"{v:.4g}") if isinstance(v, float) else str(v)


def flatten(d: Any, prefix: str = "") -> Dict[str, Any]:
    """Nested dicts → ``{"a.b.c": value}``; other values as they are."""
    if not isinstance(d, dict):
        return {prefix: d} if prefix else {}
    out: Dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


class RunWriter:
    """TensorBoard scalars under ``<work_dir>/tb`` and ``<work_dir>/metrics.json``; a no-op off rank 0."""

    def __init__(self, work_dir: str, enabled: bool = True):
        self.work_dir = work_dir
        self.enabled = enabled
        self._tb = None  # opened on the first scalar, so a writer used only for json leaves no tb/

    def _writer(self):
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import

            self._tb = SummaryWriter(os.path.join(self.work_dir, "tb"))
        return self._tb

    def scalars(self, values: Dict[str, float], step: int, prefix: str = "") -> None:
        if not self.enabled:
            return
        tb = self._writer()
        for k, v in values.items():
            if isinstance(v, (int, float)):
                tb.add_scalar(f"{prefix}{k}", v, step)

    def hparams(self, config: Dict[str, Any], results: Dict[str, Any]) -> None:
        """The run's settings (the config, flattened: ``optim.lr``, ``model.args.layout``, ...) beside its final
        numbers (``test``, ``test_vote`` and ``best`` entries of ``results``) in TensorBoard's HParams tab."""
        if not self.enabled:
            return
        settings = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                    for k, v in flatten(config).items() if v is not None}
        metrics = {f"hparam/{k}": float(v) for k, v in flatten({key: results.get(key) for key in
                                                                ("test", "test_vote", "best")}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        metrics = metrics or {"hparam/epochs_done": float(results.get("epochs_done", 0))}
        self._writer().add_hparams(settings, metrics, run_name=".")

    def image(self, tag: str, image: Any, step: int) -> None:
        """An (H, W, 3) uint8 image (a hook's picture) under ``tag``."""
        if self.enabled:
            self._writer().add_image(tag, image, step, dataformats="HWC")

    def write_json(self, data: Dict[str, Any], name: str = "metrics.json") -> None:
        if not self.enabled:
            return
        atomic_write_json(data, os.path.join(self.work_dir, name))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
