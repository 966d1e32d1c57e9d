"""What the tools call: one run, one run per seed (mean ± std), scoring a checkpoint, the summary line.

Each is a thin layer over :class:`~pointmap.engine.Trainer` and :class:`~pointmap.engine.RunDir`:
the Trainer owns a single run's folder; a driver that composes runs (seeds here, few-shot folds, the
ablation) owns the folder above them and its process scope with :func:`driver_run`, and asks
:func:`run_child` to start, resume or read back each run under it: a stop request (SIGINT, SIGTERM) that
arrived meanwhile ends the driver there, before its next run.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence

from ..errors import UserError, UserFileNotFoundError
from ..config import Config
from ..engine import Hook, ProcessScope, RunDir, Trainer, Task, build_task, raise_if_stopped
from ..engine import distributed as du
from ..engine.logging import format_metrics, setup_logging
from ..engine.metrics import summarize_seeds
from ..models import absolute_spec

__all__ = ["run", "run_pretrain", "run_finetune", "run_seeds", "run_child", "driver_run", "read_inputs",
           "evaluate_checkpoint", "format_results"]

logger = logging.getLogger(__name__)


def run(cfg: Config, task: Optional[Task] = None, *, device: str = "auto", resume: bool = False, force: bool = False,
        work_dir: Optional[str] = None, hooks: Iterable[Hook] = ()) -> Dict[str, Any]:
    """``Trainer(cfg, ...).fit()``: train, select, test (or, for ``train.probe: svm``, fit the SVM);
    returns what metrics.json holds. ``force``: resume even where ``cfg`` changes what the run trains."""
    return Trainer(cfg, task, device=device, resume=resume, force=force, work_dir=work_dir, hooks=hooks).fit()


def run_pretrain(cfg: Config, **kwargs) -> Dict[str, Any]:
    if cfg.task != "pretrain":
        raise UserError(f"{cfg.name}: task is {cfg.task!r}, not 'pretrain' (use the matching tool)")
    return run(cfg, **kwargs)


def run_finetune(cfg: Config, seeds: Optional[Sequence[int]] = None, **kwargs) -> Dict[str, Any]:
    if cfg.task == "pretrain":
        raise UserError(f"{cfg.name}: task is 'pretrain'; finetuning needs a downstream task config")
    return run_seeds(cfg, seeds, **kwargs) if seeds else run(cfg, **kwargs)


def run_child(cfg: Config, work_dir: str, *, resume: bool, device: str = "auto", hooks: Iterable[Hook] = (),
              force: bool = False) -> Dict[str, Any]:
    """One run under a driver, unless a stop was requested (then :class:`~pointmap.engine.RunInterrupted`).
    With ``resume``: a finished run (:attr:`RunDir.state`, the one rule) is read back, a begun one continues
    from its checkpoint, one that left no checkpoint starts again; without: it starts (refusing a folder
    that holds a run, as any run does)."""
    raise_if_stopped(f"before {work_dir}")
    child = RunDir(work_dir)
    if resume and child.state == "finished":
        logger.info("%s: finished before, read back", work_dir)
        return child.read_json()
    if resume and not child.has_checkpoint() and child.state != "empty":
        cfg = copy.deepcopy(cfg)
        cfg.train.overwrite = True  # nothing to continue from: what it left is redone
    return run(cfg, device=device, resume=resume and child.has_checkpoint(), force=force, work_dir=work_dir,
               hooks=hooks)


def read_inputs(cfg: Config) -> None:
    """What a run of ``cfg`` checks and reads before its folder exists (the config against its task, the paths,
    the data sets opened and their index files read), for a driver to call before it makes its own folder: a
    wrong input then leaves no folder at all. Each run reads its data sets again."""
    task = build_task(cfg)
    task.check_inputs()
    task.build_datasets()


@contextlib.contextmanager
def driver_run(path: str, log: bool = False) -> Iterator[RunDir]:
    """The folder of a driver (the runs it composes live below it), in the driver's process scope:
    meta.json with the command line and environment, how it ended; the log on the console and, with
    ``log``, in its own log.txt."""
    with ProcessScope():
        folder = RunDir(path, main=du.is_main_process()).open(log=log, check=False)
        if not log:
            setup_logging(None, folder.main)
        with folder.closing():
            yield folder


def run_seeds(cfg: Config, seeds: Sequence[int], *, device: str = "auto", resume: bool = False,
              force: bool = False, hooks: Iterable[Hook] = ()) -> Dict[str, Any]:
    """One run per seed in ``<exp>/seed<k>/``, then mean ± std of every test metric in ``<exp>/metrics.json``."""
    base = RunDir.of(cfg).path
    read_inputs(cfg)  # a config its task rejects, a missing path, a data set that does not open: no driver folder
    with driver_run(base) as folder:
        runs: List[Dict[str, Any]] = []
        for seed in seeds:
            c = copy.deepcopy(cfg)
            c.train.seed = int(seed)
            runs.append(run_child(c, os.path.join(base, f"seed{seed}"), resume=resume, device=device, hooks=hooks,
                                  force=force))
        results: Dict[str, Any] = {"protocol": cfg.eval.protocol, "task": runs[0]["task"], "config": cfg.name,
                                   "exp_name": cfg.exp_name, "work_dir": folder.abspath, "seeds": list(seeds),
                                   "runs": [os.path.join(base, f"seed{s}") for s in seeds]}
        for key in ("test", "test_vote"):
            if all(key in r for r in runs):
                results[key] = summarize_seeds([r[key] for r in runs])
        folder.write_json(results)
    if "test" in results:
        logger.info("%d seeds | test %s | protocol %s", len(seeds), mean_std_line(results["test"]), cfg.eval.protocol)
    return results


def evaluate_checkpoint(cfg: Config, ckpt: Optional[str] = None, *, device: str = "auto") -> Dict[str, Any]:
    """Score ``ckpt`` (default: the run's ``ckpt-best.pth``; an exported folder or a published entry too; every
    tensor of the model must come from it) on the test split under the config's protocol
    and voting, into its own run folder ``<run>/eval/`` (metrics.json, meta.json, log.txt; an earlier
    evaluation there is replaced, its meta.json entry kept under ``sessions``)."""
    run_dir = RunDir.of(cfg).path
    ckpt = absolute_spec(ckpt or os.path.join(run_dir, "ckpt-best.pth"))  # or a published entry's name
    if cfg.train.probe == "svm":
        raise UserError("--eval scores a trained checkpoint; the SVM probe keeps none (run it again instead)")
    if os.path.isabs(ckpt) and not os.path.exists(ckpt):
        raise UserFileNotFoundError(f"--eval: checkpoint not found: {ckpt} (pass --ckpt, or the run's --exp-name)")
    cfg = copy.deepcopy(cfg)
    cfg.pretrained = None
    cfg.train.overwrite = True
    return Trainer(cfg, device=device, work_dir=os.path.join(run_dir, "eval")).score(ckpt)


def mean_std_line(stats: Dict[str, Dict[str, float]]) -> str:
    shown = {k: v for k, v in stats.items() if k not in ("views", "count", "rounds", "best_round")}
    std = "" if all(v.get("ddof", 1) == 1 for v in shown.values()) else " (std ddof 0)"
    return " ".join(f"{k} {v['mean']:.2f} ± {v['std']:.2f}" for k, v in shown.items()) + std


def format_results(results: Dict[str, Any]) -> str:
    """One line a tool prints at the end: the protocol, the test metrics (or the pretraining loss), the folder."""
    parts = [f"protocol {results['protocol']}"]
    if results.get("probe"):
        parts.append(f"{results['probe']} probe")
    if "seeds" in results or "folds" in results:
        if "folds" in results:
            parts.append(f"{results['way']}-way {results['shot']}-shot, {len(results['folds'])} folds "
                         f"{_span(results['folds'])}")
        else:
            parts.append(f"{len(results['seeds'])} seeds {results['seeds']}")
        for key in ("test", "test_vote"):
            if key in results:
                parts.append(f"{key.replace('_', ' ')} {mean_std_line(results[key])}")
    else:
        best = results.get("best", {})
        if "evaluated" in results:
            parts.append(f"evaluated {results['evaluated']}")
        else:
            chosen = f"C {best['C']:g}" if "C" in best else f"best epoch {best.get('epoch')}"
            parts.append(f"{chosen} ({results['selection']['split']} "
                         f"{results['selection']['metric']} {_num(best.get('value'))})")
        if "test" in results:
            parts.append(f"test {format_metrics(results['test'])}")
        if "test_vote" in results:
            parts.append(f"test vote {format_metrics(results['test_vote'])}")
    parts.append(results["work_dir"])
    return " | ".join(parts)


def _span(values: List[int]) -> str:
    """[0, 1, 2, 3] -> "0-3"; anything else as a list."""
    contiguous = values == list(range(values[0], values[0] + len(values)))
    return f"{values[0]}-{values[-1]}" if contiguous and len(values) > 2 else str(values)


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"
