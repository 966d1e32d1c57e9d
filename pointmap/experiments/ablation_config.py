"""The ablation's config: variants (the grammar of their names), the ablation yaml and its checks, and the
stage configs a variant is built from (:mod:`pointmap.experiments.ablation` runs them)."""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..config import RUN_ROOT, Config, apply_overrides, config_from_dict, deep_merge, load_yaml, resolve_config
from ..objective import DECODER_ORDERS, DECODER_ROW_ORDERS, MASK_STRATEGIES, OBJECTIVES
from ..errors import ConfigError, UserError

__all__ = ["AblationConfig", "Variant", "parse_variant", "expand_variants", "load_ablation_config"]

_VARIANT = re.compile(rf"^(?P<objective>{'|'.join(OBJECTIVES)})(?:-mask(?P<mask>\d*\.\d+))?"
                      rf"(?:-(?P<strategy>{'|'.join(MASK_STRATEGIES)}))?(?:-(?P<decoder>{'|'.join(DECODER_ORDERS)}))?"
                      rf"(?:-(?P<order>{'|'.join(DECODER_ROW_ORDERS)}))?$")
_GRAMMAR = ("map, mae, ar, local_mae or scratch, optionally followed, in this order, by -mask<ratio>, "
            "-random|-sequential|-diagonal (mask strategy), -concat (the released 3D decoder order) and "
            "-shuffled|-aligned (e.g. map-mask0.25, map-sequential, map-concat, map-shuffled)")
STAGES = ("pretrain", "finetune", "probe", "lowdata", "fewshot")


@dataclass(frozen=True)
class Variant:
    """One arm of the ablation. ``objective`` None: no pretraining; ``mask_ratio`` / ``mask_strategy`` /
    ``decoder_order`` None: the pretraining config's."""
    name: str
    objective: Optional[str]
    mask_ratio: Optional[float] = None
    row_order: str = "aligned"
    mask_strategy: Optional[str] = None
    decoder_order: Optional[str] = None


def parse_variant(name: str) -> Variant:
    """``objective[-mask<r>][-random|-sequential|-diagonal][-concat][-aligned|-shuffled]`` or ``scratch``."""
    if name == "scratch":
        return Variant(name, None)
    m = _VARIANT.match(str(name))
    if not m:
        raise UserError(f"unknown ablation variant {name!r}: use {_GRAMMAR}")
    mask = float(m["mask"]) if m["mask"] else None
    if mask is not None and not 0.0 < mask < 1.0:
        raise UserError(f"ablation variant {name!r}: the mask ratio must be in (0, 1)")
    return Variant(name, m["objective"], mask, m["order"] or "aligned", m["strategy"], m["decoder"])


@dataclass
class AblationConfig:
    pretrain_cfg: str
    finetune_cfg: str
    name: str = ""  # the file stem by default: <output_dir>/<name>/<exp_name>/
    exp_name: str = "default"
    output_dir: str = RUN_ROOT
    common: Dict[str, Any] = field(default_factory=dict)
    pretrain: Dict[str, Any] = field(default_factory=dict)
    finetune: Dict[str, Any] = field(default_factory=dict)
    probe: Optional[str] = "svm"
    probe_overrides: Dict[str, Any] = field(default_factory=dict)
    skip_finetune: bool = False
    variants: List[str] = field(default_factory=lambda: ["map", "mae", "ar", "scratch"])
    seeds: List[int] = field(default_factory=lambda: [0])
    mask_ratios: List[float] = field(default_factory=list)
    row_orders: List[str] = field(default_factory=list)
    mask_strategies: List[str] = field(default_factory=list)
    lowdata: Optional[Dict[str, Any]] = None
    fewshot: Optional[Dict[str, Any]] = None
    reference: Optional[str] = None

    @property
    def root(self) -> str:
        return os.path.join(self.output_dir, self.name, self.exp_name)


_TYPES = {"pretrain_cfg": str, "finetune_cfg": str, "name": str, "exp_name": str, "output_dir": str,
          "common": dict, "pretrain": dict, "finetune": dict, "probe": (str, type(None)),
          "probe_overrides": dict, "skip_finetune": bool, "variants": list, "seeds": list, "mask_ratios": list,
          "row_orders": list, "mask_strategies": list, "lowdata": (dict, type(None)), "fewshot": (dict, type(None)),
          "reference": (str, type(None))}
_LOWDATA_KEYS = {"fraction": float, "overrides": dict}
_FEWSHOT_KEYS = {"cfg": str, "way": int, "shot": int, "folds": list, "overrides": dict}


def _check_section(path: str, key: str, data: Optional[Dict[str, Any]], types: Dict[str, Any]) -> None:
    if data is None:
        return
    for k, v in data.items():
        if k not in types:
            raise UserError(f"{path}: unknown key {key}.{k!r}; valid keys: {', '.join(types)}")
        if not isinstance(v, types[k]) or isinstance(v, bool):
            raise UserError(f"{path}: {key}.{k} has the wrong type ({v!r})")
    missing = [k for k in types if k not in data and k != "overrides"]
    if missing:
        raise UserError(f"{path}: {key} needs {', '.join(missing)}")


def load_ablation_config(path: str, overrides=()) -> AblationConfig:
    """Read an ablation yaml (``_base_`` allowed), apply ``key=value`` overrides, check every key."""
    path = resolve_config(path)
    data = apply_overrides(load_yaml(path), list(overrides))
    for key, value in data.items():
        if key not in _TYPES:
            raise UserError(f"{path}: unknown ablation key {key!r}; valid keys: {', '.join(_TYPES)}")
        if not isinstance(value, _TYPES[key]):
            raise UserError(f"{path}: ablation key {key!r} has the wrong type ({value!r})")
    for key in ("pretrain_cfg", "finetune_cfg"):
        if key not in data:
            raise UserError(f"{path}: the ablation needs {key}")
        if not os.path.isabs(data[key]):
            data[key] = os.path.join(os.path.dirname(os.path.abspath(path)), data[key])
    if data.get("probe") == "none":
        data["probe"] = None
    if data.get("probe") not in ("svm", "linear", None):
        raise UserError(f"{path}: probe must be svm, linear or none; got {data['probe']!r}")
    if data.get("skip_finetune") and data.get("probe", "svm") is None:
        raise UserError(f"{path}: skip_finetune with probe none leaves nothing to measure downstream")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in data.get("seeds", [0])) or not data.get(
            "seeds", [0]):
        raise UserError(f"{path}: seeds must be a non-empty list of integers; got {data.get('seeds')!r}")
    _check_section(path, "lowdata", data.get("lowdata"), _LOWDATA_KEYS)
    _check_section(path, "fewshot", data.get("fewshot"), _FEWSHOT_KEYS)
    if data.get("lowdata") and not 0.0 < data["lowdata"]["fraction"] < 1.0:
        raise UserError(f"{path}: lowdata.fraction must be in (0, 1); got {data['lowdata']['fraction']}")
    if data.get("fewshot"):
        folds = data["fewshot"]["folds"]
        if not folds or not all(isinstance(f, int) and f >= 0 for f in folds) or len(set(folds)) != len(folds):
            raise UserError(f"{path}: fewshot.folds must be distinct non-negative integers; got {folds!r}")
        if not os.path.isabs(data["fewshot"]["cfg"]):
            data["fewshot"] = {**data["fewshot"], "cfg": os.path.join(os.path.dirname(os.path.abspath(path)),
                                                                     data["fewshot"]["cfg"])}
    acfg = AblationConfig(**data)
    acfg.name = acfg.name or os.path.splitext(os.path.basename(path))[0]
    names = [v.name for v in expand_variants(acfg)]  # a bad variant name or sweep value fails here
    if acfg.reference is not None and acfg.reference not in names:
        raise UserError(f"{path}: reference {acfg.reference!r} is not one of the variants ({', '.join(names)})")
    return acfg


def expand_variants(acfg: AblationConfig) -> List[Variant]:
    """The listed variants, then the sweeps' MAP variants (a sweep value equal to the default adds nothing)."""
    names = list(acfg.variants)
    for r in acfg.mask_ratios:
        names.append(f"map-mask{float(r):g}")
    for order in acfg.row_orders:
        names.append("map" if order == "aligned" else f"map-{order}")
    for strategy in acfg.mask_strategies:  # the config's own strategy is plain map
        names.append("map" if strategy == base_objective(acfg).mask_strategy else f"map-{strategy}")
    out: List[Variant] = []
    for name in names:
        v = parse_variant(name)
        if v.objective and v.mask_ratio is not None and v.mask_ratio == base_mask_ratio(acfg):
            v = dataclasses.replace(v, name=v.name.replace(f"-mask{v.mask_ratio:g}", ""), mask_ratio=None)
        if v.name not in [o.name for o in out]:
            out.append(v)
    if not out:
        raise UserError("the ablation has no variants")
    return out


def base_objective(acfg: AblationConfig):
    return stage_config(acfg, acfg.pretrain_cfg, acfg.pretrain, "pretrain").objective


def base_mask_ratio(acfg: AblationConfig) -> float:
    return base_objective(acfg).mask_ratio


def stage_config(acfg: AblationConfig, path: str, section: Dict[str, Any], stage: str) -> Config:
    data = deep_merge(deep_merge(load_yaml(path), acfg.common), section)
    try:
        cfg = config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"ablation {acfg.name}, {stage} config: {e}") from e
    cfg.name = cfg.name or os.path.splitext(os.path.basename(path))[0]
    return cfg
