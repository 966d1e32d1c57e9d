"""An exponential moving average of a model's weights (``train.ema_decay``): timm's ``ModelEmaV3`` at a fixed
decay, updated after every optimizer step as DeiT's and the MAP 2D release's ``engine.py`` update timm's
``ModelEma`` (no warmup of the decay: ema ← decay · ema + (1 − decay) · weights, buffers included)."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch.nn as nn

__all__ = ["WeightEma", "build_ema"]


class WeightEma:
    """The averaged copy of ``module`` (``.module``, in eval mode, never trained). Its ``state_dict`` is the
    copy's, under the model's own names: what a checkpoint keeps as ``model_ema`` (the release's layout)."""

    def __init__(self, module: nn.Module, decay: float):
        from timm.utils import ModelEmaV3

        self.decay = float(decay)
        self._ema = ModelEmaV3(module, decay=self.decay)

    @property
    def module(self) -> nn.Module:
        return self._ema.module

    def update(self, module: nn.Module) -> None:
        self._ema.update(module)  # no step: the fixed decay from the first update on

    def state_dict(self) -> Dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.module.load_state_dict(state)


def build_ema(module: nn.Module, decay: Optional[float]) -> Optional[WeightEma]:
    """A :class:`WeightEma` of ``module`` at ``decay``; None when ``decay`` is None (no EMA)."""
    return None if decay is None else WeightEma(module, decay)
