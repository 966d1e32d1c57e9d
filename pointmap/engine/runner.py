"""What the tools call: one run, or one run per seed with mean ± std, and the one-line summaries."""
from __future__ import annotations

import copy
import logging
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence

import torch.distributed as dist

from ..config import Config
from . import distributed as du
from .hooks import Hook
from .logging import RunWriter, format_metrics
from .metrics import summarize_seeds
from .tasks import Task
from .trainer import Trainer

__all__ = ["run", "run_seeds", "run_pretrain", "run_finetune", "format_results"]

logger = logging.getLogger(__name__)


def run(cfg: Config, task: Optional[Task] = None, *, device: str = "auto", resume: bool = False,
        work_dir: Optional[str] = None, hooks: Iterable[Hook] = ()) -> Dict[str, Any]:
    """``Trainer(cfg, ...).fit()``: train, select, test; returns what metrics.json holds.
    ``train.probe: svm`` fits a linear SVM on frozen features instead (:func:`~pointmap.engine.probe.run_svm_probe`)."""
    if cfg.train.probe == "svm":
        from .probe import run_svm_probe

        return run_svm_probe(cfg, task, device=device, work_dir=work_dir)
    return Trainer(cfg, task, device=device, resume=resume, work_dir=work_dir, hooks=hooks).fit()


def run_pretrain(cfg: Config, **kwargs) -> Dict[str, Any]:
    if cfg.task != "pretrain":
        raise ValueError(f"{cfg.name}: task is {cfg.task!r}, not 'pretrain' (use the matching tool)")
    return run(cfg, **kwargs)


def run_finetune(cfg: Config, seeds: Optional[Sequence[int]] = None, **kwargs) -> Dict[str, Any]:
    if cfg.task == "pretrain":
        raise ValueError(f"{cfg.name}: task is 'pretrain'; finetuning needs a downstream task config")
    return run_seeds(cfg, seeds, **kwargs) if seeds else run(cfg, **kwargs)


def run_seeds(cfg: Config, seeds: Sequence[int], *, device: str = "auto", resume: bool = False,
              hooks: Iterable[Hook] = (), **kwargs) -> Dict[str, Any]:
    """One run per seed in ``<exp>/seed<k>/``, then mean ± std of every test metric in ``<exp>/metrics.json``."""
    base = os.path.join(cfg.train.output_dir, cfg.name or "run", cfg.exp_name)
    runs: List[Dict[str, Any]] = []
    for seed in seeds:
        c = copy.deepcopy(cfg)
        c.train.seed = int(seed)
        work_dir = os.path.join(base, f"seed{seed}")
        started = os.path.isfile(os.path.join(work_dir, "ckpt-last.pth"))  # --resume continues the seeds begun
        runs.append(run(c, device=device, resume=resume and started, work_dir=work_dir, hooks=hooks, **kwargs))
    results: Dict[str, Any] = {"protocol": cfg.eval.protocol, "task": runs[0]["task"], "config": cfg.name,
                               "exp_name": cfg.exp_name, "work_dir": os.path.abspath(base), "seeds": list(seeds),
                               "runs": [os.path.join(base, f"seed{s}") for s in seeds]}
    for key in ("test", "test_vote"):
        if all(key in r for r in runs):
            results[key] = summarize_seeds([r[key] for r in runs])
    RunWriter(base, enabled=du.is_main_process()).write_json(results)
    if "test" in results:
        logger.info("%d seeds | test %s | protocol %s", len(seeds), _mean_std_line(results["test"]), cfg.eval.protocol)
    return results


def _mean_std_line(stats: Dict[str, Dict[str, float]]) -> str:
    return " ".join(f"{k} {v['mean']:.2f} ± {v['std']:.2f}" for k, v in stats.items() if k not in ("views", "count"))


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
                parts.append(f"{key.replace('_', ' ')} {_mean_std_line(results[key])}")
    else:
        best = results.get("best", {})
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


def shutdown() -> None:
    """Leave the process group (tools call it once at exit; harmless without torchrun)."""
    if du.is_distributed():
        dist.destroy_process_group()
