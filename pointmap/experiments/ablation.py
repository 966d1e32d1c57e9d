"""Does MAP help? One ablation config -> MAP / MAE / AR pretraining vs no pretraining, over seeds.

For every variant and seed: pretrain (``synthetic_pretrain`` in the demo), finetune the classifier from
the last pretrained checkpoint, and probe the frozen encoder linearly (``train.probe``: a linear SVM by
default); ``scratch`` finetunes and probes a randomly initialised encoder. Every run goes through the
runner (:func:`~pointmap.experiments.run_pretrain`, :func:`~pointmap.experiments.run_finetune`) into
``<output_dir>/<name>/<exp_name>/<variant>/seed<k>/{pretrain,finetune,probe}/``, and each finished
variant/seed leaves a ``result.json`` there: running the same ablation again skips it, continues a begun
stage from its ``ckpt-last.pth``, and refuses a folder whose results came from other settings (with
``skip_finetune`` a result that also finetuned, under otherwise equal settings, is reused as it is).
At the end: ``results.json``, ``table.md`` (mean ± std over seeds) and ``chart.png``, each written whole.

An ablation config (yaml; paths relative to the file that names them)::

    pretrain_cfg: map_demo.yaml          # the pretraining config (any objective: the variant sets it)
    finetune_cfg: finetune_demo.yaml     # the downstream classification config
    common: {model: {args: {...}}}       # merged into both: one backbone for every variant
    pretrain: {optim: {epochs: 8}}       # merged into the pretraining config
    finetune: {optim: {epochs: 10}}      # merged into the finetuning config
    probe: svm                           # svm | linear | none
    skip_finetune: false                 # true: pretrain + probe only (a cheaper look at the features)
    probe_overrides: {}                  # merged into the probe's config (linear: its epochs, lr)
    variants: [map, mae, ar, scratch]    # map|mae|ar[-mask<ratio>][-aligned|-shuffled], or scratch
    seeds: [0, 1, 2]
    mask_ratios: []                      # a sweep of MAP's mask ratio: adds map-mask<r> variants
    row_orders: []                       # [shuffled]: adds map-shuffled (decoder rows off the scan order)
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..errors import ConfigError, UserError
from ..config import Config, apply_overrides, config_from_dict, config_to_dict, deep_merge, load_yaml
from ..engine import RunDir, build_task
from ..engine import distributed as du
from ..engine.logging import format_value
from ..engine.metrics import mean_std
from .ablation_report import format_table, machine_description, row_losses, write_chart
from .runs import driver_run, run_finetune, run_pretrain

__all__ = ["AblationConfig", "Variant", "parse_variant", "expand_variants", "load_ablation_config",
           "variant_configs", "run_ablation", "format_table", "row_losses"]

logger = logging.getLogger(__name__)

OBJECTIVES = ("map", "mae", "ar")
_VARIANT = re.compile(r"^(?P<objective>map|mae|ar)(?:-mask(?P<mask>\d*\.\d+))?(?:-(?P<order>aligned|shuffled))?$")
_GRAMMAR = ("map, mae, ar or scratch, optionally with -mask<ratio> and then -shuffled or -aligned "
            "(e.g. map-mask0.25, map-shuffled, mae-mask0.75)")


@dataclass(frozen=True)
class Variant:
    """One arm of the ablation. ``objective`` None: no pretraining; ``mask_ratio`` None: the config's."""
    name: str
    objective: Optional[str]
    mask_ratio: Optional[float] = None
    row_order: str = "aligned"


def parse_variant(name: str) -> Variant:
    if name == "scratch":
        return Variant(name, None)
    m = _VARIANT.match(str(name))
    if not m:
        raise UserError(f"unknown ablation variant {name!r}: use {_GRAMMAR}")
    mask = float(m["mask"]) if m["mask"] else None
    if mask is not None and not 0.0 < mask < 1.0:
        raise UserError(f"ablation variant {name!r}: the mask ratio must be in (0, 1)")
    return Variant(name, m["objective"], mask, m["order"] or "aligned")


@dataclass
class AblationConfig:
    pretrain_cfg: str
    finetune_cfg: str
    name: str = ""  # the file stem by default: <output_dir>/<name>/<exp_name>/
    exp_name: str = "default"
    output_dir: str = "experiments"
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

    @property
    def root(self) -> str:
        return os.path.join(self.output_dir, self.name, self.exp_name)


_TYPES = {"pretrain_cfg": str, "finetune_cfg": str, "name": str, "exp_name": str, "output_dir": str,
          "common": dict, "pretrain": dict, "finetune": dict, "probe": (str, type(None)),
          "probe_overrides": dict, "skip_finetune": bool, "variants": list, "seeds": list, "mask_ratios": list, "row_orders": list}


def load_ablation_config(path: str, overrides=()) -> AblationConfig:
    """Read an ablation yaml (``_base_`` allowed), apply ``key=value`` overrides, check every key."""
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
    acfg = AblationConfig(**data)
    acfg.name = acfg.name or os.path.splitext(os.path.basename(path))[0]
    expand_variants(acfg)  # a bad variant name or sweep value fails here, before anything runs
    return acfg


def expand_variants(acfg: AblationConfig) -> List[Variant]:
    """The listed variants, then the sweeps' MAP variants (a sweep value equal to the default adds nothing)."""
    names = list(acfg.variants)
    for r in acfg.mask_ratios:
        names.append(f"map-mask{float(r):g}")
    for order in acfg.row_orders:
        names.append("map" if order == "aligned" else f"map-{order}")
    out: List[Variant] = []
    for name in names:
        v = parse_variant(name)
        if v.objective and v.mask_ratio is not None and v.mask_ratio == _base_mask_ratio(acfg):
            v = dataclasses.replace(v, name=v.name.replace(f"-mask{v.mask_ratio:g}", ""), mask_ratio=None)
        if v.name not in [o.name for o in out]:
            out.append(v)
    if not out:
        raise UserError("the ablation has no variants")
    return out


def _base_mask_ratio(acfg: AblationConfig) -> float:
    return _stage_config(acfg, acfg.pretrain_cfg, acfg.pretrain, "pretrain").objective.mask_ratio


def _stage_config(acfg: AblationConfig, path: str, section: Dict[str, Any], stage: str) -> Config:
    data = deep_merge(deep_merge(load_yaml(path), acfg.common), section)
    try:
        cfg = config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"ablation {acfg.name}, {stage} config: {e}") from e
    cfg.name = cfg.name or os.path.splitext(os.path.basename(path))[0]
    return cfg


def variant_configs(acfg: AblationConfig, variant: Variant, seed: int,
                    skip_finetune: Optional[bool] = None) -> Dict[str, Config]:
    """The configs of one variant and seed: ``pretrain`` (absent for scratch), ``finetune`` (absent with
    ``skip_finetune``), ``probe`` (absent with ``probe: none``); downstream ``pretrained`` points at the
    pretraining's last checkpoint."""
    run_dir = os.path.join(acfg.root, variant.name, f"seed{seed}")
    out: Dict[str, Config] = {}
    if variant.objective:
        pre = _stage_config(acfg, acfg.pretrain_cfg, acfg.pretrain, "pretrain")
        pre.objective.name = variant.objective
        if variant.mask_ratio is not None:
            pre.objective.mask_ratio = variant.mask_ratio
        if variant.row_order != "aligned":
            pre.objective.args = {**pre.objective.args, "decoder_row_order": variant.row_order}
        out["pretrain"] = pre
    fin = _stage_config(acfg, acfg.finetune_cfg, acfg.finetune, "finetune")
    fin.pretrained = os.path.abspath(os.path.join(run_dir, "pretrain", "ckpt-last.pth")) if variant.objective else None
    if not (acfg.skip_finetune if skip_finetune is None else skip_finetune):
        out["finetune"] = fin
    if acfg.probe:
        probe = _stage_config(acfg, acfg.finetune_cfg, deep_merge(acfg.finetune, acfg.probe_overrides), "probe")
        probe.train.probe, probe.pretrained = acfg.probe, fin.pretrained
        out["probe"] = probe
    for stage, cfg in out.items():
        cfg.train.seed, cfg.exp_name = int(seed), f"{acfg.exp_name}/{variant.name}/seed{seed}/{stage}"
    return out


def _fingerprint(cfgs: Dict[str, Config]) -> str:
    """What the results depend on: the stage configs without paths and run-control flags."""
    plain = {}
    for stage, cfg in cfgs.items():
        d = config_to_dict(cfg)
        d["pretrained"] = bool(d["pretrained"])
        d["train"] = {k: v for k, v in d["train"].items() if k not in ("output_dir", "overwrite", "progress")}
        plain[stage] = d
    return hashlib.sha1(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]


def _finished(metrics_path: str, cfg: Config) -> Optional[Dict[str, Any]]:
    if not os.path.isfile(metrics_path):
        return None
    with open(metrics_path, encoding="utf-8") as f:
        m = json.load(f)
    done = "test" in m if cfg.task != "pretrain" else m.get("epochs_done") == cfg.optim.epochs
    return m if done else None


def _run_stage(cfg: Config, work_dir: str, device: str) -> Dict[str, Any]:
    """A finished stage is read back; a begun one continues from its last checkpoint; else it starts."""
    m = _finished(os.path.join(work_dir, "metrics.json"), cfg)
    if m is not None and (cfg.task != "pretrain" or os.path.isfile(os.path.join(work_dir, "ckpt-last.pth"))):
        return m
    cfg = copy.deepcopy(cfg)
    resume = RunDir(work_dir).has_checkpoint()
    cfg.train.overwrite = not resume  # what a stage left without finishing is redone
    runner = run_pretrain if cfg.task == "pretrain" else run_finetune
    return runner(cfg, device=device, resume=resume, work_dir=work_dir)


def run_variant(acfg: AblationConfig, variant: Variant, seed: int, device: str = "auto") -> Dict[str, Any]:
    """Pretrain -> finetune -> probe one variant/seed into its folder; its ``result.json`` (kept)."""
    run_dir = os.path.join(acfg.root, variant.name, f"seed{seed}")
    result_path = os.path.join(run_dir, "result.json")
    cfgs = variant_configs(acfg, variant, seed)
    fp = _fingerprint(cfgs)
    if os.path.isfile(result_path):
        with open(result_path, encoding="utf-8") as f:
            res = json.load(f)
        # skipping finetuning, a result that also finetuned under the same other settings serves as well
        full = _fingerprint(variant_configs(acfg, variant, seed, skip_finetune=False)) if acfg.skip_finetune else fp
        if res.get("fingerprint") not in (fp, full):
            raise UserError(f"{run_dir} holds a result of other settings than this ablation's: use another "
                             f"--exp-name, or remove that folder")
        logger.info("ablation %s | %s seed %d: done before, skipped", acfg.name, variant.name, seed)
        if variant.objective and "row_losses" not in res:  # a result from before row losses were measured
            res["row_losses"] = row_losses(os.path.join(run_dir, "pretrain"), device=device)
            RunDir(run_dir).write_json(res, "result.json")
        return res
    res: Dict[str, Any] = {"variant": variant.name, "seed": seed, "fingerprint": fp, "pretrain_loss": None,
                           "finetune_acc": None, "probe": acfg.probe, "probe_acc": None, "time_s": {}}
    for stage, cfg in cfgs.items():
        start = time.time()
        m = _run_stage(cfg, os.path.join(run_dir, stage), device)
        res["time_s"][stage] = round(time.time() - start, 1)
        if stage == "pretrain":
            res["pretrain_loss"] = m["history"][-1]["train"]["loss"]
        else:
            res[f"{stage}_acc"], res[f"{stage}_macc"] = m["test"]["acc"], m["test"]["macc"]
        RunDir(acfg.root).attach_log()  # each run detaches its own log at its end
    if variant.objective:
        res["row_losses"] = row_losses(os.path.join(run_dir, "pretrain"), device=device)
    RunDir(run_dir).write_json(res, "result.json")
    logger.info("ablation %s | %s seed %d | pretrain loss %s | finetune acc %s | probe acc %s | %.0fs",
                acfg.name, variant.name, seed, format_value(res["pretrain_loss"]), format_value(res["finetune_acc"]),
                format_value(res["probe_acc"]), sum(res["time_s"].values()))
    return res


def run_ablation(acfg: AblationConfig, device: str = "auto") -> Dict[str, Any]:
    """Every variant × seed (skipping finished ones), then results.json, table.md, chart.png in ``acfg.root``."""
    if du.is_distributed():
        raise UserError("the ablation runs its variants one after another in one process; start it without torchrun")
    variants = expand_variants(acfg)
    for v in variants:  # a stage config its task rejects (a ConfigError) writes nothing
        for stage_cfg in variant_configs(acfg, v, acfg.seeds[0]).values():
            build_task(stage_cfg)
    with driver_run(acfg.root, log=True) as folder:
        logger.info("ablation %s | %d variants (%s) × seeds %s | %s", acfg.name, len(variants),
                    ", ".join(v.name for v in variants), acfg.seeds, acfg.root)
        start = time.time()
        per_variant = {v.name: [run_variant(acfg, v, s, device) for s in acfg.seeds] for v in variants}
        sample = variant_configs(acfg, variants[0], acfg.seeds[0], skip_finetune=False)
        results = {"ablation": acfg.name, "exp_name": acfg.exp_name, "work_dir": folder.abspath,
                   "protocol": sample["finetune"].eval.protocol, "probe": acfg.probe, "seeds": list(acfg.seeds),
                   "machine": machine_description(device), "elapsed_s": round(time.time() - start, 1),
                   "setup": _setup_line(acfg), "variants": [_summarize_variant(acfg, v, per_variant[v.name])
                                                            for v in variants]}
        folder.write_json(results, "results.json")
        folder.write_text(format_table(results) + "\n", "table.md")
        write_chart(results, folder.file("chart.png"))
        logger.info("ablation %s done in %.1f min: %s", acfg.name, results["elapsed_s"] / 60, acfg.root)
    return results


def _summarize_variant(acfg: AblationConfig, v: Variant, runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Mean ± std over seeds of one variant's numbers, the mean loss by row, the minutes per seed."""
    entry: Dict[str, Any] = {"name": v.name, "objective": v.objective, "row_order": v.row_order if v.objective
                             else None, "mask_ratio": (v.mask_ratio if v.mask_ratio is not None else
                                                       _base_mask_ratio(acfg)) if v.objective else None}
    for key in ("pretrain_loss", "finetune_acc", "probe_acc"):
        values = [r[key] for r in runs if r.get(key) is not None]
        entry[key] = {**mean_std(values), "values": values} if values else None
    per_row = [r["row_losses"] for r in runs if r.get("row_losses")]
    entry["row_losses"] = [sum(col) / len(col) for col in zip(*per_row)] if per_row else None
    entry["minutes_per_seed"] = sum(sum(r["time_s"].values()) for r in runs) / len(runs) / 60
    return entry


def _setup_line(acfg: AblationConfig) -> str:
    pre = _stage_config(acfg, acfg.pretrain_cfg, acfg.pretrain, "pretrain")
    fin = _stage_config(acfg, acfg.finetune_cfg, acfg.finetune, "finetune")
    args = pre.model.args
    probe = {"svm": "linear SVM on frozen pooled features, C chosen on the validation split",
             "linear": "linear layer trained on frozen pooled features", None: "none"}[acfg.probe]
    return (f"{pre.model.name} {args.get('layout', '')} C={args.get('embed_dim', '?')}, "
            f"G={args.get('num_group', '?')}×K={args.get('group_size', '?')}; pretrain {pre.data.name} "
            f"{pre.optim.epochs} epochs; finetune {fin.data.name} {fin.optim.epochs} epochs, "
            f"{fin.eval.protocol} protocol (a held-out validation split picks the checkpoint, test scored once); "
            f"probe: {probe}")
