"""The pretraining objective's settings, named, typed and defaulted once: :class:`ObjectiveConfig` (a config's
``objective:`` section) and the vocabulary of each setting's values. The config checks a yaml file's values
against these types; :class:`pointmap.models.MAPPretrainer` takes an ObjectiveConfig (or its fields as
keywords) and imports the vocabularies; ``objective_settings()`` lists the names for whoever needs them.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional

from .errors import ConfigError, bounded

__all__ = ["ObjectiveConfig", "objective_settings", "OBJECTIVES", "MASK_STRATEGIES", "DECODER_ORDERS",
           "DECODER_ROW_ORDERS", "DECODER_TYPES", "DECODER_INITS", "ORDER_DRAWS", "LOSSES"]

OBJECTIVES = ("map", "mae", "ar", "local_mae")
MASK_STRATEGIES = ("random", "sequential", "diagonal")
DECODER_ORDERS = ("inplace", "concat")
DECODER_ROW_ORDERS = ("aligned", "shuffled")
DECODER_TYPES = ("transformer", "mamba")
DECODER_INITS = ("trunc_normal", "xavier")
ORDER_DRAWS = ("first", "random")
LOSSES = ("cdl2", "cdl1", "mse")


@dataclass
class ObjectiveConfig:
    """The pretraining objective: every setting of :class:`pointmap.models.MAPPretrainer` (what each means:
    its docstring), named and defaulted here alone; ``create_pretrainer`` takes them as keywords (``name`` as
    ``objective``). Finetuning tasks ignore it."""
    name: Literal[OBJECTIVES] = "map"
    mask_ratio: float = bounded(0.5, "(0, 1)")
    mask_strategy: Literal[MASK_STRATEGIES] = "random"
    row_size: Optional[int] = bounded(None, "[1, inf)")  # None: sqrt(num_group) (images: the image's rows)
    decoder_order: Literal[DECODER_ORDERS] = "inplace"
    decoder_row_order: Literal[DECODER_ROW_ORDERS] = "aligned"
    loss: Optional[Literal[LOSSES]] = None  # None: cdl2 for points, mse for images
    decoder_type: Literal[DECODER_TYPES] = "transformer"
    decoder_depth: int = bounded(4, "[1, inf)")
    decoder_heads: int = bounded(6, "[1, inf)")
    decoder_mlp_ratio: float = bounded(4.0, "(0, inf)")
    decoder_drop_path_rate: float = bounded(0.1, "[0, 1)")
    decoder_init: Literal[DECODER_INITS] = "trunc_normal"
    order_draw: Literal[ORDER_DRAWS] = "first"
    # deprecated: settings above go under their own key, encoder arguments under model.args; what it holds
    # still reaches the encoder for one release
    args: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        settings = {k: self.args[k] for k in self.args if k in objective_settings()}
        if self.args:
            where = [f"objective.{k}" if k in settings else f"model.args.{k}" for k in self.args]
            warnings.warn(f"objective.args is deprecated: write {', '.join(where)}", DeprecationWarning)
        for key, value in settings.items():
            if getattr(self, key) != getattr(ObjectiveConfig, key) and getattr(self, key) != value:
                raise ConfigError(f"objective.{key} is set twice: {getattr(self, key)!r} and objective.args.{key}="
                                  f"{value!r}")
            setattr(self, key, value)
        self.args = {k: v for k, v in self.args.items() if k not in settings}


def objective_settings() -> List[str]:
    """The settings of an objective: the fields of :class:`ObjectiveConfig` but ``name`` and ``args``."""
    return [f.name for f in dataclasses.fields(ObjectiveConfig) if f.name not in ("name", "args")]
