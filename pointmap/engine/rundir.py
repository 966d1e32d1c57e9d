"""The run folder: one object owns ``experiments/<cfg>/<exp>/`` and everything a run writes there.

    run = RunDir("experiments/map_demo/default", resume=False, overwrite=False)
    run.open(cfg, world_size=1, device=torch.device("cpu"))   # refuse / resume / overwrite, log.txt, meta.json
    run.save_checkpoint(ckpt, best=True)                     # ckpt-last.pth (+ ckpt-best.pth), atomically
    run.write_json(results)                                  # metrics.json, atomically
    run.close("finished")                                    # meta.json: end time and exit status
    with run.closing(): ...                                  # close by how the block ends

A folder *holds a run* once it has ``ckpt-last.pth`` or ``metrics.json``: opening it again refuses unless
``resume`` (continue from ``ckpt-last.pth``) or ``overwrite`` (start afresh) says otherwise. A run that
failed before it wrote either leaves its folder marked ``failed`` in ``meta.json`` with the error in
``log.txt``, and the next start simply reuses it. ``meta.json`` says what made the run: the git commit of
the pointmap checkout (and whether it had uncommitted changes), pointmap / torch / CUDA / Python versions,
the device, the world size, the exact command line, start and end time, exit status. Only rank 0 writes.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import logging
import os
import platform
import shlex
import subprocess
import sys
from typing import Any, Callable, Dict, Iterator, Optional

import torch

from ..atomic import atomic_write
from ..config import Config, save_config
from ..errors import UserError, UserFileNotFoundError
from ..version import __version__
from .checkpoint import atomic_save, atomic_write_json
from .logging import close_log_file, setup_logging

__all__ = ["RunDir", "RunInterrupted", "command_line", "environment", "cpu_name"]

logger = logging.getLogger(__name__)

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RunInterrupted(KeyboardInterrupt):
    """SIGINT / SIGTERM stopped the run (or a driver) cleanly ``where`` it says (``at epoch 3 step 41``,
    ``during the final test``, ``before seed 1``); ``ckpt-last.pth`` holds the point a training run reached,
    and ``command`` continues it. ``signal``: the signal's name (``SIGTERM``), None where not known (under
    DDP, a stop another process was asked for)."""

    def __init__(self, where: str, command: str, signal: Optional[str] = None):
        self.where, self.command, self.signal = where, command, signal
        super().__init__(f"interrupted {where}; continue with: {command}")


def command_line(resume: bool = False) -> str:
    """The command that started this process, as a shell would take it back (``torchrun`` under DDP);
    ``resume=True`` adds ``--resume`` unless it is there."""
    argv = list(sys.argv)
    if resume and "--resume" not in argv:
        argv.append("--resume")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        prefix = ["torchrun", f"--nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', world)}"]
    else:
        prefix = ["python"]
    return shlex.join(prefix + argv)


@functools.lru_cache(maxsize=None)
def _git(*args: str) -> Optional[str]:
    """``git <args>`` in the pointmap checkout (None outside one); asked once per process, so every run
    of a process records the code that process imported."""
    try:
        out = subprocess.run(["git", "-C", PACKAGE_DIR, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment(device: Optional[torch.device] = None, world_size: int = 1) -> Dict[str, Any]:
    """What made a run: code (git commit + dirty flag of the pointmap checkout, None outside one),
    versions, the machine, the device and the world size."""
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else None
    dev = device if device is not None else torch.device("cpu")
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
    return {"git_commit": commit, "git_dirty": dirty, "pointmap_version": __version__,
            "torch_version": torch.__version__, "cuda_version": torch.version.cuda,
            "python_version": platform.python_version(), "hostname": platform.node(),
            "device": str(dev), "device_name": device_name, "world_size": world_size}


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo where there is one)."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:
        pass
    return name


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class RunDir:
    """The folder ``path`` of one run (see the module docstring). ``main``: this process writes files
    (rank 0); other ranks only check."""

    def __init__(self, path: str, *, resume: bool = False, overwrite: bool = False, main: bool = True):
        self.path = path
        self.resume, self.overwrite, self.main = resume, overwrite, main
        self.meta: Optional[Dict[str, Any]] = None
        self.opened = False

    @classmethod
    def of(cls, cfg: Config, **kwargs) -> "RunDir":
        """``<cfg.train.output_dir>/<cfg.name>/<cfg.exp_name>``."""
        return cls(os.path.join(cfg.train.output_dir, cfg.name or "run", cfg.exp_name), **kwargs)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def abspath(self) -> str:
        return os.path.abspath(self.path)

    def has_checkpoint(self) -> bool:
        return os.path.isfile(self.ckpt_last)

    @property
    def ckpt_last(self) -> str:
        return self.file("ckpt-last.pth")

    @property
    def ckpt_best(self) -> str:
        return self.file("ckpt-best.pth")

    # ------------------------------------------------------------------ state
    def read_json(self, name: str = "metrics.json") -> Optional[Dict[str, Any]]:
        import json

        if not os.path.isfile(self.file(name)):
            return None
        with open(self.file(name), encoding="utf-8") as f:
            return json.load(f)

    @property
    def state(self) -> str:
        """``finished`` (meta.json says so), ``started`` (holds a run: ckpt-last.pth or metrics.json),
        else ``empty`` (nothing, or a start that failed before writing either)."""
        meta = self.read_json("meta.json") or {}
        if meta.get("status") == "finished" and os.path.isfile(self.file("metrics.json")):
            return "finished"
        if os.path.isfile(self.ckpt_last) or os.path.isfile(self.file("metrics.json")):
            return "started"
        return "empty"

    # ------------------------------------------------------------------ open / close
    def check(self, can_resume: bool = True) -> None:
        """Refuse to start over a run, or to resume nothing (``can_resume``: a checkpoint is needed)."""
        if self.resume and can_resume and not os.path.isfile(self.ckpt_last):
            raise UserFileNotFoundError(f"nothing to resume: {self.ckpt_last} not found")
        if not self.resume and not self.overwrite and self.state != "empty":
            raise UserError(f"{self.path} already holds a run: pass --resume to continue it, "
                             f"--exp-name NAME for a new one, or train.overwrite=true")

    def open(self, cfg: Optional[Config] = None, *, device: Optional[torch.device] = None, world_size: int = 1,
             log: bool = True, check: bool = True, can_resume: bool = True,
             resumed: Optional[Dict[str, Any]] = None) -> "RunDir":
        """Check (unless ``check=False``), then on rank 0: clear what ``overwrite`` replaces, attach
        ``log.txt``, save ``config.yaml`` (a resumed run keeps the one it started with) and start ``meta.json``
        (``resumed``: what a resume changed, :meth:`~pointmap.engine.resume.ResumeCheck.record`, under
        ``resume``)."""
        if check:
            self.check(can_resume)
        self.opened = True
        if log:
            self.attach_log()
        if not self.main:
            return self
        os.makedirs(self.path, exist_ok=True)
        if self.overwrite and not self.resume:
            for name in ("ckpt-last.pth", "ckpt-best.pth", "metrics.json"):
                if os.path.isfile(self.file(name)):
                    os.remove(self.file(name))
        if cfg is not None and not (self.resume and os.path.isfile(self.file("config.yaml"))):
            save_config(cfg, self.file("config.yaml"))
        previous = self.read_json("meta.json")
        sessions = (previous.pop("sessions", []) + [_session(previous)]) if previous else []
        self.meta = {**environment(device, world_size), "command": command_line(), "start": _now(), "end": None,
                     "status": "running", "resumed": bool(self.resume), **({"resume": resumed} if resumed else {}),
                     "sessions": sessions}
        self._write_meta()
        return self

    def close(self, status: str, error: Optional[BaseException] = None, **extra: Any) -> None:
        """Record how the run ended (``finished``, ``interrupted``, ``failed``); a failure's error goes
        to log.txt too. Detaches log.txt."""
        if error is not None:  # a user error's line is the tool's to print: here it goes to log.txt only
            logger.error("run failed: %s: %s", type(error).__name__, " ".join(str(error).split()),
                         extra={"console": not isinstance(error, UserError)})
        if self.main and self.meta is not None:
            self.meta.update(end=_now(), status=status, **extra)
            if error is not None:
                self.meta["error"] = f"{type(error).__name__}: {' '.join(str(error).split())}"
            self._write_meta()
        self.opened = False
        close_log_file()

    @contextlib.contextmanager
    def closing(self, extra: Callable[[], Dict[str, Any]] = dict) -> Iterator["RunDir"]:
        """Close the run (once opened) by how the block ends: ``finished``, ``interrupted`` (SIGINT/SIGTERM:
        a KeyboardInterrupt), ``failed`` (any other exception, recorded); ``extra()``: more for meta.json."""
        try:
            yield self
        except KeyboardInterrupt:
            if self.opened:
                self.close("interrupted", **extra())
            raise
        except BaseException as e:
            if self.opened:
                self.close("failed", e, **extra())
            raise
        self.close("finished", **extra())

    def attach_log(self) -> None:
        """The ``pointmap`` logger to the console and (rank 0) ``log.txt``, appended (after what
        :meth:`hold_log` kept)."""
        setup_logging(self.file("log.txt"), self.main)

    def hold_log(self) -> None:
        """The ``pointmap`` logger to the console now; its records kept for ``log.txt``, which :meth:`open`
        attaches: a run reads its inputs before its folder exists, and its log still says what it read."""
        setup_logging(None, self.main, hold=True)

    def _write_meta(self) -> None:
        atomic_write_json(self.meta, self.file("meta.json"))

    # ------------------------------------------------------------------ files
    def write_json(self, data: Dict[str, Any], name: str = "metrics.json") -> None:
        if self.main:
            atomic_write_json(data, self.file(name))

    def write_text(self, text: str, name: str) -> None:
        if self.main:
            atomic_write(self.file(name), lambda f: f.write(text), binary=False)

    def save_checkpoint(self, ckpt: Dict[str, Any], last: bool = True, best: bool = False) -> None:
        if self.main:
            if last:
                atomic_save(ckpt, self.ckpt_last)
            if best:
                atomic_save(ckpt, self.ckpt_best)


def _session(meta: Dict[str, Any]) -> Dict[str, Any]:
    keys = ("command", "start", "end", "status", "git_commit", "git_dirty", "world_size", "device", "resume")
    return {k: meta.get(k) for k in keys if k != "resume" or k in meta}
