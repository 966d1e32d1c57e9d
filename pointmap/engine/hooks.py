"""Hooks: code that runs at fixed points of :class:`~pointmap.engine.Trainer` without touching its loop.

A hook subclasses :class:`Hook` and overrides any of the methods below. Each gets the trainer, to read:
``trainer.state`` (:class:`~pointmap.engine.TrainState`: epoch, global step, best epoch, history, selection),
``module`` (the model itself), ``task``, ``datasets``, ``work_dir``, ``cfg``, ``select_split`` (the split that
picks the checkpoint, None: the train metrics do) and its ``evaluate(split)``.
A hook writes nothing of the trainer's: what it decides it *returns*, as a :class:`Decision` (metrics for the
epoch's record, a new best epoch, a checkpoint to write), which the Trainer applies before the next hook
runs. Hooks with ``main_process_only = True`` run on rank 0 only (use it for hooks that write files; a
decision to write a checkpoint must come from a hook that runs on every rank). Register a hook by name to
switch it on from a config::

    @register_hook("vis")
    class VisHook(Hook):
        main_process_only = True
        def __init__(self, every=10): self.every = every
        def after_epoch(self, trainer, entry):
            done = trainer.state.epoch + 1
            if done % self.every == 0:
                save_png(trainer, f"{trainer.work_dir}/vis/epoch_{done:03d}.png")

    # cfg:  hooks: [{name: vis, every: 10}]     or  Trainer(cfg, hooks=[VisHook(every=10)])

A config's hook arguments are checked against the hook's signature before anything is written; "how
often" is ``every`` (epochs) for every hook. Evaluation, best-epoch selection, the epoch's log line and
checkpoints are hooks too, the Trainer's defaults (:data:`DEFAULT_HOOKS`, at the end of this file); they
run first, then the others in order.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Type

from ..errors import ConfigError, accepted_kwargs, check_kwargs
from ..registry import Registry

__all__ = ["Hook", "Decision", "HOOKS", "register_hook", "build_hooks", "DEFAULT_HOOKS", "EvaluateHook", "BestHook",
           "LogHook", "CheckpointHook"]

logger = logging.getLogger(__name__)


@dataclass
class Decision:
    """What a hook asks of the Trainer, which applies it before the next hook runs."""

    record: Dict[str, Any] = field(default_factory=dict)  # entries for the epoch's history record
    selection: Dict[str, Any] = field(default_factory=dict)  # changes to how the best epoch is chosen
    best: Optional[Dict[str, Any]] = None  # the new best epoch: {"epoch" (1-based), "value", "metrics"}
    save_last: bool = False  # write ckpt-last.pth: the run as this epoch leaves it
    save_best: bool = False  # write ckpt-best.pth


class Hook:
    main_process_only = False

    def before_train(self, trainer) -> Optional[Decision]:
        """After setup (and resume), before the first epoch runs."""

    def before_epoch(self, trainer) -> Optional[Decision]:
        """At the start of epoch ``trainer.state.epoch`` (0-based)."""

    def after_step(self, trainer, logs: Dict[str, Any]) -> Optional[Decision]:
        """After each optimizer step; ``logs`` holds ``loss`` and what the task reported as tensors on the
        device (reading one waits for the device: prefer :meth:`after_log`), and ``lr``."""

    def after_log(self, trainer, logs: Dict[str, float]) -> Optional[Decision]:
        """Every ``train.log_every`` steps and at the end of an epoch: the mean ``loss`` (and task
        metrics) of the steps since the last log, as floats, and ``lr``."""

    def after_epoch(self, trainer, entry: Dict[str, Any]) -> Optional[Decision]:
        """After epoch ``trainer.state.epoch`` (0-based) trained; ``entry`` is its history record, with what
        the hooks before this one decided (the defaults: evaluation, best epoch, log, checkpoint)."""

    def after_train(self, trainer, results: Dict[str, Any]) -> Optional[Decision]:
        """After the final test pass, with the results written to metrics.json."""


HOOKS = Registry("hook")


def register_hook(name: str, override: bool = False) -> Callable[[Type[Hook]], Type[Hook]]:
    return HOOKS.register(name, override=override)


# Modules whose hooks register themselves on import (vis -> "vis", tracking -> "wandb"); imported only when
# a config names a hook that is not registered yet, so the engine does not depend on them.
_BUILTIN_HOOK_MODULES = ("pointmap.vis.hook", "pointmap.engine.tracking")


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
        check_kwargs("hooks", f"hook {name!r}", spec, accepted_kwargs(cls))
        hooks.append(cls(**spec))
    return hooks


def check_every(hook: str, every: Any) -> int:
    """A hook's ``every`` (epochs) as an int, or a ConfigError naming the hook."""
    if int(every) < 1:
        raise ConfigError(f"hook {hook}: every must be >= 1, got {every}")
    return int(every)


# ----------------------------------------------------------------------------- the Trainer's default hooks
# What every run does after an epoch, in this order; a config changes one by naming it in ``hooks``:
#   hooks: [{name: evaluate, every: 5}, {name: checkpoint, save_best: false}, {name: best, metric: loss, mode: min}]
DEFAULT_HOOKS = ("evaluate", "best", "log", "checkpoint")


@register_hook("evaluate")
class EvaluateHook(Hook):
    """Scores the selection split (a held-out val split; the test set under the peer protocol) after
    every ``every``-th epoch and after the last one, from epoch ``first`` (1-based) on: the peers' runners
    score from their second epoch (``first: 2``). Decides: the metrics, under the split's label (with
    ``train.ema_eval``, the averaged weights' too, under the label + ``_ema``)."""

    def __init__(self, every: int = 1, first: int = 1):
        self.every, self.first = check_every("evaluate", every), int(first)

    def after_epoch(self, trainer, entry: Dict[str, Any]) -> Optional[Decision]:
        split, done = trainer.select_split, trainer.state.epoch + 1
        if split is not None and done >= self.first and (done % self.every == 0 or done == trainer.cfg.optim.loop_epochs):
            label = trainer.state.selection["split"]
            record = {label: trainer.evaluate(split)}
            if getattr(trainer, "ema", None) is not None and trainer.cfg.train.ema_eval:  # train.ema_eval
                record[f"{label}_ema"] = trainer.evaluate(split, ema=True)
            return Decision(record=record)
        return None


@register_hook("best")
class BestHook(Hook):
    """The epoch whose ``metric`` (default: the task's monitor) on the selection split is best — on the
    epoch's train metrics when there is no such split; ``mode`` max or min. A tie keeps the earlier epoch
    (``ties: first``) or takes the later one (``ties: last``, Point-MAE's part segmentation, which saves on
    ``>=``). Decides: the selection's metric and mode (before training), a new best epoch (after one)."""

    def __init__(self, metric: Optional[str] = None, mode: Optional[str] = None, ties: str = "first"):
        if mode not in (None, "max", "min"):
            raise ConfigError(f"hook best: mode must be max or min, not {mode!r}")
        if ties not in ("first", "last"):
            raise ConfigError(f"hook best: ties must be first or last, not {ties!r}")
        self.metric, self.mode, self.ties = metric, mode, ties

    def before_train(self, trainer) -> Decision:
        task = trainer.task
        return Decision(selection={"metric": self.metric or task.monitor, "mode": self.mode or task.monitor_mode})

    def after_epoch(self, trainer, entry: Dict[str, Any]) -> Optional[Decision]:
        state = trainer.state
        sel, old = state.selection, state.best["value"]
        value = entry.get(sel["split"], {}).get(sel["metric"])
        if value is None:
            return None
        if old is None or (value > old if sel["mode"] == "max" else value < old) or (self.ties == "last" and value == old):
            return Decision(best={"epoch": state.epoch + 1, "value": value, "metrics": dict(entry)})
        return None


@register_hook("log")
class LogHook(Hook):
    """The epoch's line in the log and its TensorBoard scalars. Decides: the epoch's ``time_s``."""

    main_process_only = True

    def after_epoch(self, trainer, entry: Dict[str, Any]) -> Decision:
        from .logging import format_metrics, format_value

        state, cfg = trainer.state, trainer.cfg
        done, seconds = state.epoch + 1, round(trainer.epoch_time(), 2)
        if trainer.writer is not None:
            for k in ("train", "val", "test"):
                trainer.writer.scalars(entry.get(k, {}), done, f"epoch/{k}_")
        evals = " ".join(format_metrics(entry[k], f"{k}_") for k in ("val", "test") if k in entry)
        lr = f"{entry['lr']:.3g}" if entry.get("lr_last", entry["lr"]) == entry["lr"] else \
            f"{entry['lr']:.3g} -> {entry['lr_last']:.3g}"  # from the epoch's first step to its last
        logger.info("epoch %d/%d | %s %s | lr %s | best %s %s at epoch %s | %.1fs | protocol %s", done,
                    cfg.optim.loop_epochs, format_metrics(entry["train"], "train_"), evals, lr,
                    state.selection["metric"], format_value(state.best["value"]), state.best["epoch"], seconds,
                    cfg.eval.protocol)
        return Decision(record={"time_s": seconds})


@register_hook("checkpoint")
class CheckpointHook(Hook):
    """Decides: ``ckpt-last.pth`` after every ``every``-th epoch and the last, ``ckpt-best.pth`` when the
    epoch is the new best (``save_best``). Runs on every rank (their RNG states go into the file)."""

    def __init__(self, every: int = 1, save_best: bool = True):
        self.every, self.save_best = check_every("checkpoint", every), bool(save_best)

    def after_epoch(self, trainer, entry: Dict[str, Any]) -> Optional[Decision]:
        done = trainer.state.epoch + 1
        best = self.save_best and trainer.state.best["epoch"] == done
        last = done % self.every == 0 or done == trainer.cfg.optim.loop_epochs
        return Decision(save_last=last, save_best=best) if last or best else None
