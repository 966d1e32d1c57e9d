"""How far a training run has come, in one object: :class:`TrainState`.

The :class:`~pointmap.engine.Trainer` advances it; hooks read it (``trainer.state``) and return what they
decide (:class:`~pointmap.engine.hooks.Decision`) for the Trainer to apply; a checkpoint holds its
:meth:`~TrainState.state_dict` and a resumed run loads it back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .loop import StepMeter

__all__ = ["TrainState"]


def _no_best() -> Dict[str, Any]:
    return {"epoch": None, "value": None, "metrics": {}}


@dataclass
class TrainState:
    epoch: int = 0  # the epoch running (0-based); between epochs, the next one to run
    step_in_epoch: int = 0  # steps of ``epoch`` done before this session (a run resumed mid-epoch)
    global_step: int = 0  # optimizer steps done
    best: Dict[str, Any] = field(default_factory=_no_best)  # the best epoch (1-based), its value and metrics
    best_saved: Optional[int] = None  # the epoch ckpt-best.pth holds
    last_saved: Optional[Tuple[int, int]] = None  # the (epoch, step) ckpt-last.pth holds, as far as this run knows
    history: List[Dict[str, Any]] = field(default_factory=list)  # one record per epoch run
    selection: Dict[str, Any] = field(default_factory=dict)  # the split, metric and mode that pick the best epoch
    meter: Optional[StepMeter] = None  # the running epoch's sums, on the device
    rng_after_iter: Optional[Dict[str, Any]] = None  # resumed mid-epoch: the RNG state once the loader has drawn

    def state_dict(self, epoch: int, step: int = 0) -> Dict[str, Any]:
        """What continues the run from step ``step`` of epoch ``epoch`` (0-based; step 0: the epoch's start),
        under the checkpoint's keys; inside an epoch the meter's sums come along, so the resumed epoch's
        means equal an uninterrupted one's."""
        return {"epoch": epoch, "step_in_epoch": step, "global_step": self.global_step, "best": self.best,
                "best_saved": self.best_saved, "history": self.history, "selection": self.selection,
                "epoch_sums": self.meter.state() if step and self.meter is not None else None}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """The state of a checkpoint (also one written before ``selection`` and ``best_saved`` were kept)."""
        self.epoch, self.step_in_epoch = state["epoch"], state.get("step_in_epoch", 0)
        self.global_step, self.best, self.history = state["global_step"], state["best"], state["history"]
        self.best_saved = state.get("best_saved", self.best["epoch"])
        self.selection = dict(state.get("selection") or self.selection)
        self.last_saved = (self.epoch, self.step_in_epoch)
        if state.get("epoch_sums") is not None and self.meter is not None:
            self.meter.load(state["epoch_sums"])
