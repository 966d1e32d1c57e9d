"""Run logging: the ``pointmap`` logger to the console and ``log.txt``, TensorBoard scalars, metrics.json.

Only rank 0 writes files; other ranks log warnings and errors to the console.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, Dict, Optional

from .checkpoint import atomic_write_json

__all__ = ["setup_logging", "close_log_file", "RunWriter", "format_metrics", "format_value"]

_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def setup_logging(log_file: Optional[str] = None, main_process: bool = True) -> logging.Logger:
    """Configure the ``pointmap`` logger once per run: INFO to stdout (and ``log_file``, appended) on the
    main process, WARNING elsewhere. Handlers from an earlier run in the same process are replaced."""
    logger = logging.getLogger("pointmap")
    for h in list(logger.handlers):
        if getattr(h, "_pointmap_run", False):
            logger.removeHandler(h)
            h.close()
    logger.setLevel(logging.INFO if main_process else logging.WARNING)
    logger.propagate = False
    handlers = [_StdoutHandler()]
    if log_file and main_process:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a", encoding="utf-8"))
    for h in handlers:
        h.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        h._pointmap_run = True
        logger.addHandler(h)
    return logger


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


def format_metrics(metrics: Dict[str, Any], prefix: str = "") -> str:
    """``{"acc": 91.234, "loss": 0.00123}`` -> ``acc 91.23 loss 0.00123``."""
    return " ".join(f"{prefix}{k} {format_value(v)}" for k, v in metrics.items())


def format_value(v: Any) -> str:
    """Floats to 2 decimals (4 significant digits under 1), None as ``-``, anything else as it prints."""
    if v is None:
        return "-"
    return (f"{v:.2f}" if abs(v) >= 1 else f"{v:.4g}") if isinstance(v, float) else str(v)


def _flatten(d: Any, prefix: str = "") -> Dict[str, Any]:
    """Nested dicts → ``{"a.b.c": value}``; other values as they are."""
    if not isinstance(d, dict):
        return {prefix: d} if prefix else {}
    out: Dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
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
                    for k, v in _flatten(config).items() if v is not None}
        metrics = {f"hparam/{k}": float(v) for k, v in _flatten({key: results.get(key) for key in
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
