"""Hooks: code that runs at fixed points of :class:`~pointmap.engine.Trainer` without touching its loop.

A hook subclasses :class:`Hook` and overrides any of the methods below; each gets the trainer, whose
``model`` (unwrapped: ``trainer.module``), ``task``, ``datasets``, ``work_dir``, ``epoch``, ``global_step``
and ``cfg`` it may read. Hooks with ``main_process_only = True`` run on rank 0 only (use it for hooks
that write files). Register a hook by name to switch it on from a config::

    @register_hook("vis")
    class VisHook(Hook):
        main_process_only = True
        def __init__(self, every=10): self.every = every
        def after_epoch(self, trainer, metrics):
            if (trainer.epoch + 1) % self.every == 0:
                save_png(trainer, f"{trainer.work_dir}/vis/epoch_{trainer.epoch + 1:03d}.png")

    # cfg:  hooks: [{name: vis, every: 10}]     or  Trainer(cfg, hooks=[VisHook(every=10)])

Evaluation, best-epoch selection, the epoch's log line and checkpoints are hooks too, the Trainer's
defaults (:data:`DEFAULT_HOOKS`, at the end of this file); they run first, then the others in order.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Type

from ..errors import ConfigError, accepted_kwargs, check_kwargs
from ..registry import Registry

__all__ = ["Hook", "HOOKS", "register_hook", "build_hooks", "DEFAULT_HOOKS", "EvaluateHook", "BestHook",
           "LogHook", "CheckpointHook"]

logger = logging.getLogger(__name__)


class Hook:
    main_process_only = False
    renamed: Dict[str, str] = {}  # old argument name -> its name now: accepted from a config with a DeprecationWarning

    def before_train(self, trainer) -> None:
        """After setup (and resume), before the first epoch runs."""

    def before_epoch(self, trainer) -> None:
        """At the start of epoch ``trainer.epoch`` (0-based)."""

    def after_step(self, trainer, logs: Dict[str, Any]) -> None:
        """After each optimizer step; ``logs`` holds ``loss`` and what the task reported as tensors on the
        device (reading one waits for the device: prefer :meth:`after_log`), and ``lr``."""

    def after_log(self, trainer, logs: Dict[str, float]) -> None:
        """Every ``train.log_every`` steps and at the end of an epoch: the mean ``loss`` (and task
        metrics) of the steps since the last log, as floats, and ``lr``."""

    def after_epoch(self, trainer, metrics: Dict[str, Any]) -> None:
        """After the epoch's evaluation and checkpoint; ``metrics`` is the epoch's history entry."""

    def after_train(self, trainer, results: Dict[str, Any]) -> None:
        """After the final test pass, with the results written to metrics.json."""


HOOKS = Registry("hook")


def register_hook(name: str, override: bool = False) -> Callable[[Type[Hook]], Type[Hook]]:
    return HOOKS.register(name, override=override)


# Modules above the engine whose hooks register themselves on import (vis -> "vis"); imported only when
# a config names a hook that is not registered yet, so the engine does not depend on them.
_BUILTIN_HOOK_MODULES = ("pointmap.vis.hook",)


def _register_builtin_hooks() -> None:
    import importlib

    for module in _BUILTIN_HOOK_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as e:
            logger.debug("hooks of %s unavailable: %s", module, e)


def build_hooks(specs: List[Dict[str, Any]], defaults: Sequence[str] = ()) -> List[Hook]:
    """``[{name: vis, every: 10}]`` -> hook instances (unknown names are an error naming the known ones).
    ``defaults`` come first, in their order; a spec naming one sets its arguments, and
    ``{name: ..., enabled: false}`` leaves it out."""
    specs = [dict(s) for s in specs]
    by_name = {s.get("name"): s for s in specs if s.get("name") in defaults}
    ordered = [by_name.get(name, {"name": name}) for name in defaults]
    ordered += [s for s in specs if s.get("name") not in defaults]
    hooks = []
    for spec in ordered:
        if not spec.pop("enabled", True):
            continue
        name = spec.pop("name", None)
        if name not in HOOKS:
            _register_builtin_hooks()
        if name not in HOOKS:
            raise ConfigError(f"unknown hook {name!r} in config 'hooks'; valid names: {', '.join(HOOKS) or 'none'}")
        cls = HOOKS[name]
        for old, new in cls.renamed.items():
            if old in spec:
                warnings.warn(f"hook {name}: '{old}' is now '{new}'", DeprecationWarning, stacklevel=2)
                spec[new] = spec.pop(old)
        check_kwargs("hooks", f"hook {name!r}", spec, accepted_kwargs(cls))
        hooks.append(cls(**spec))
    return hooks


# ----------------------------------------------------------------------------- the Trainer's default hooks
# What every run does after an epoch, in this order; a config changes one by naming it in ``hooks``:
#   hooks: [{name: evaluate, every: 5}, {name: checkpoint, save_best: false}, {name: best, metric: loss, mode: min}]
DEFAULT_HOOKS = ("evaluate", "best", "log", "checkpoint")


@register_hook("evaluate")
class EvaluateHook(Hook):
    """Scores the selection split (a held-out val split; the test set under the peer protocol) after
    every ``every``-th epoch and after the last one, from epoch ``first`` (1-based) on: the peers' runners
    score from their second epoch (``first: 2``)."""

    def __init__(self, every: int = 1, first: int = 1):
        self.every, self.first = int(every), int(first)

    def after_epoch(self, trainer, entry: Dict[str, Any]) -> None:
        split = trainer.select_split
        done = trainer.epoch + 1
        if split is not None and done >= self.first and (done % self.every == 0 or done == trainer.cfg.optim.loop_epochs):
            entry[trainer.split_label(split)] = trainer.evaluate(split)


@register_hook("best")
class BestHook(Hook):
    """Keeps ``trainer.best``: the epoch whose ``metric`` (default: the task's monitor) on the selection
    split is best — on the epoch's train metrics when there is no such split; ``mode`` max or min. A tie
    keeps the earlier epoch (``ties: first``) or takes the later one (``ties: last``, Point-MAE's part
    segmentation, which saves on ``>=``)."""

    def __init__(self, metric: Optional[str] = None, mode: Optional[str] = None, ties: str = "first"):
        if mode not in (None, "max", "min"):
            raise ConfigError(f"hook best: mode must be max or min, not {mode!r}")
        if ties not in ("first", "last"):
            raise ConfigError(f"hook best: ties must be first or last, not {ties!r}")
        self.metric, self.mode, self.ties = metric, mode, ties

    def before_train(self, trainer) -> None:
        trainer.selection.update(metric=self.metric or trainer.task.monitor, mode=self.mode or trainer.task.monitor_mode)

    def after_epoch(self, trainer, entry: Dict[str, Any]) -> None:
        sel, best = trainer.selection, trainer.best
        value = entry.get(sel["split"], {}).get(sel["metric"])
        if value is None:
            return
        old = best["value"]
        if old is None or (value > old if sel["mode"] == "max" else value < old) or (self.ties == "last" and value == old):
            trainer.best = {"epoch": trainer.epoch + 1, "value": value, "metrics": dict(entry)}


@register_hook("log")
class LogHook(Hook):
    """The epoch's line in the log, its TensorBoard scalars, and metrics.json rewritten."""

    main_process_only = True

    def after_epoch(self, trainer, entry: Dict[str, Any]) -> None:
        from .logging import format_metrics, format_value

        done, cfg = trainer.epoch + 1, trainer.cfg
        entry["time_s"] = round(trainer.epoch_time(), 2)
        if trainer.writer is not None:
            for k in ("train", "val", "test"):
                trainer.writer.scalars(entry.get(k, {}), done, f"epoch/{k}_")
        trainer.run.write_json(trainer.summary())
        evals = " ".join(format_metrics(entry[k], f"{k}_") for k in ("val", "test") if k in entry)
        logger.info("epoch %d/%d | %s %s | lr %.3g | best %s %s at epoch %s | %.1fs | protocol %s", done,
                    cfg.optim.loop_epochs, format_metrics(entry["train"], "train_"), evals, entry["lr"],
                    trainer.selection["metric"], format_value(trainer.best["value"]),
                    trainer.best["epoch"], entry["time_s"], cfg.eval.protocol)


@register_hook("checkpoint")
class CheckpointHook(Hook):
    """``ckpt-last.pth`` after every ``every``-th epoch and the last, ``ckpt-best.pth`` when the best
    epoch improves (``save_best``). Runs on every rank (their RNG states go into the file)."""

    def __init__(self, every: int = 1, save_best: bool = True):
        self.every, self.save_best = int(every), bool(save_best)

    def after_epoch(self, trainer, entry: Dict[str, Any]) -> None:
        done = trainer.epoch + 1
        best = self.save_best and trainer.best["epoch"] == done
        last = done % self.every == 0 or done == trainer.cfg.optim.loop_epochs
        if last or best:
            trainer.save_checkpoint(epoch=done, last=last, best=best)
