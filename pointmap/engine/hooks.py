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
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Type

from ..registry import Registry

__all__ = ["Hook", "HOOKS", "register_hook", "build_hooks"]

logger = logging.getLogger(__name__)


class Hook:
    main_process_only = False

    def before_train(self, trainer) -> None:
        """After setup (and resume), before the first epoch runs."""

    def before_epoch(self, trainer) -> None:
        """At the start of epoch ``trainer.epoch`` (0-based)."""

    def after_step(self, trainer, logs: Dict[str, float]) -> None:
        """After each optimizer step; ``logs`` holds ``loss``, ``lr`` and what the task reported."""

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


def build_hooks(specs: List[Dict[str, Any]]) -> List[Hook]:
    """``[{name: vis, every: 10}]`` -> hook instances (unknown names are an error naming the known ones)."""
    hooks = []
    for spec in specs:
        spec = dict(spec)
        name = spec.pop("name", None)
        if name not in HOOKS:
            _register_builtin_hooks()
        if name not in HOOKS:
            raise ValueError(f"unknown hook {name!r} in config 'hooks'; valid names: {', '.join(HOOKS) or 'none'}")
        hooks.append(HOOKS[name](**spec))
    return hooks
