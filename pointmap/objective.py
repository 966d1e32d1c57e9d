"""The pretraining objective's settings, named, typed and defaulted once: :class:`ObjectiveConfig` (a config's
``objective:`` section) and the vocabulary of each setting's values. The config checks a yaml file's values
against these types; :class:`pointmap.models.MAPPretrainer` takes an ObjectiveConfig (or its fields as
keywords) and imports the vocabularies; ``objective_settings()`` lists the names for whoever needs them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Literal, Optional

from .errors import bounded

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


def objective_settings() -> List[str]:
    """The settings of an objective: the fields of :class:`ObjectiveConfig` but ``name``."""
    return [f.name for f in dataclasses.fields(ObjectiveConfig) if f.name != "name"]
