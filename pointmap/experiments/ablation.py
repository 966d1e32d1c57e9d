"""Does MAP help? One ablation config -> MAP / MAE / AR pretraining vs no pretraining, over seeds.

For every variant and seed: pretrain (``synthetic_pretrain`` in the demo), finetune the classifier from
the last pretrained checkpoint, and probe the frozen encoder linearly (``train.probe``: a linear SVM by
default); ``scratch`` finetunes and probes a randomly initialised encoder. Every run goes through
:func:`~pointmap.experiments.run_child` into
``<output_dir>/<name>/<exp_name>/<variant>/seed<k>/{pretrain,finetune,probe}/``, and each finished
variant/seed leaves a ``result.json`` there: running the same ablation again skips it, reads back a
finished stage, continues a begun one from its ``ckpt-last.pth`` (redoes one that left none), and
refuses a folder whose results came from other settings (with ``skip_finetune`` a result that also
finetuned, under otherwise equal settings, is reused as it is). At the end: ``results.json``, ``table.md`` (mean ± std over seeds) and ``chart.png``, each written whole.

An ablation config (yaml; paths relative to the file that names them)::

    pretrain_cfg: map_demo.yaml          # the pretraining config (any objective: the variant sets it)
    finetune_cfg: finetune_demo.yaml     # the downstream classification config
    common: {model: {args: {...}}}       # merged into both: one backbone for every variant
    pretrain: {optim: {epochs: 8}}       # merged into the pretraining config
    finetune: {optim: {epochs: 10}}      # merged into the finetuning config
    probe: svm                           # svm | linear | none
    skip_finetune: false                 # true: pretrain + probe only (a cheaper look at the features)
    probe_overrides: {}                  # merged into the probe's config (linear: its epochs, lr)
    variants: [map, mae, ar, scratch]    # see parse_variant; scratch: no pretraining
    seeds: [0, 1, 2]
    mask_ratios: []                      # a sweep of MAP's mask ratio: adds map-mask<r> variants
    row_orders: []                       # [shuffled]: adds map-shuffled (decoder rows off the scan order)
    mask_strategies: []                  # [sequential, diagonal]: adds map-sequential, map-diagonal
    lowdata: {fraction: 0.1, overrides: {}}   # or null: finetune on 10% of the labels (finetune_cfg)
    fewshot: {cfg: fewshot_demo.yaml, way: 5, shot: 10, folds: [0, 1, 2, 3], overrides: {}}   # or null
    reference: mae                       # paired differences (per seed, per seed × fold) against it

``lowdata`` and ``fewshot`` are downstream stages beside ``finetune`` and ``probe``: every variant and
seed finetunes on the same stratified label subset (drawn per seed) and on the same few-shot folds, so
the report can pair each variant's number with the reference variant's of the same seed (and fold)
and give the mean difference with a 95% t interval (:func:`~pointmap.engine.metrics.paired_difference`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any, Dict, List, Optional

from ..config import Config, config_to_dict, deep_merge
from ..engine import RunDir, build_task
from ..engine import distributed as du
from ..engine.logging import format_value
from ..engine.metrics import mean_std
from ..errors import UserError
from .ablation_config import (AblationConfig, Variant, base_mask_ratio, base_objective, stage_config,
                              expand_variants, load_ablation_config, parse_variant)
from .ablation_report import format_table, machine_description, paired_report, row_losses, write_chart
from .runs import driver_run, run_child

__all__ = ["AblationConfig", "Variant", "parse_variant", "expand_variants", "load_ablation_config",
           "variant_configs", "run_ablation", "format_table", "row_losses"]

logger = logging.getLogger(__name__)


def variant_configs(acfg: AblationConfig, variant: Variant, seed: int,
                    skip_finetune: Optional[bool] = None) -> Dict[str, Config]:
    """The configs of one variant and seed: ``pretrain`` (absent for scratch), ``finetune`` (absent with
    ``skip_finetune``), ``probe`` (absent with ``probe: none``); downstream ``pretrained`` points at the
    pretraining's last checkpoint."""
    run_dir = os.path.join(acfg.root, variant.name, f"seed{seed}")
    out: Dict[str, Config] = {}
    if variant.objective:
        pre = stage_config(acfg, acfg.pretrain_cfg, acfg.pretrain, "pretrain")
        pre.objective.name = variant.objective
        if variant.mask_ratio is not None:
            pre.objective.mask_ratio = variant.mask_ratio
        if variant.row_order != "aligned":
            pre.objective.decoder_row_order = variant.row_order
        if variant.mask_strategy is not None:
            pre.objective.mask_strategy = variant.mask_strategy
        if variant.decoder_order is not None:
            pre.objective.decoder_order = variant.decoder_order
        out["pretrain"] = pre
    fin = stage_config(acfg, acfg.finetune_cfg, acfg.finetune, "finetune")
    fin.pretrained = os.path.abspath(os.path.join(run_dir, "pretrain", "ckpt-last.pth")) if variant.objective else None
    if not (acfg.skip_finetune if skip_finetune is None else skip_finetune):
        out["finetune"] = fin
    if acfg.probe:
        probe = stage_config(acfg, acfg.finetune_cfg, deep_merge(acfg.finetune, acfg.probe_overrides), "probe")
        probe.train.probe, probe.pretrained = acfg.probe, fin.pretrained
        out["probe"] = probe
    if acfg.lowdata:
        low = _lowdata_config(acfg)
        low.pretrained = fin.pretrained
        out["lowdata"] = low
    if acfg.fewshot:
        fs = acfg.fewshot
        for fold in fs["folds"]:
            c = _fewshot_config(acfg)
            c.data.options = {**c.data.options, "way": fs["way"], "shot": fs["shot"], "fold": int(fold)}
            c.pretrained = fin.pretrained
            out[f"fewshot/fold{fold}"] = c
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
        m = run_child(cfg, os.path.join(run_dir, stage), resume=True, device=device)
        kind = stage.split("/")[0]
        res["time_s"][kind] = round(res["time_s"].get(kind, 0.0) + time.time() - start, 1)
        if stage == "pretrain":
            res["pretrain_loss"] = m["history"][-1]["train"]["loss"]
        elif kind == "fewshot":  # one accuracy per fold, in the config's fold order
            res.setdefault("fewshot_acc", []).append(m["test"]["acc"])
        else:
            res[f"{stage}_acc"], res[f"{stage}_macc"] = m["test"]["acc"], m["test"]["macc"]
    if variant.objective:
        res["row_losses"] = row_losses(os.path.join(run_dir, "pretrain"), device=device)
    RunDir(run_dir).write_json(res, "result.json")
    fewshot = res.get("fewshot_acc")
    logger.info("ablation %s | %s seed %d | pretrain loss %s | finetune acc %s | probe acc %s | low-data acc %s | "
                "few-shot acc %s | %.0fs", acfg.name, variant.name, seed, format_value(res["pretrain_loss"]),
                format_value(res["finetune_acc"]), format_value(res["probe_acc"]), format_value(res.get("lowdata_acc")),
                format_value(sum(fewshot) / len(fewshot)) if fewshot else "–", sum(res["time_s"].values()))
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
        if acfg.reference:
            results["reference"] = acfg.reference
            results["paired"] = paired_report(per_variant, acfg.reference)
        folder.write_json(results, "results.json")
        folder.write_text(format_table(results) + "\n", "table.md")
        write_chart(results, folder.file("chart.png"))
        logger.info("ablation %s done in %.1f min: %s", acfg.name, results["elapsed_s"] / 60, acfg.root)
    return results


def _summarize_variant(acfg: AblationConfig, v: Variant, runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Mean ± std over seeds of one variant's numbers, the mean loss by row, the minutes per seed."""
    entry: Dict[str, Any] = {"name": v.name, "objective": v.objective, "row_order": v.row_order if v.objective
                             else None, "mask_ratio": (v.mask_ratio if v.mask_ratio is not None else
                                                       base_mask_ratio(acfg)) if v.objective else None}
    for key in ("pretrain_loss", "finetune_acc", "probe_acc", "lowdata_acc"):
        values = [r[key] for r in runs if r.get(key) is not None]
        entry[key] = {**mean_std(values), "values": values} if values else None
    folds = [a for r in runs for a in r.get("fewshot_acc") or []]  # seed-major, then fold
    entry["fewshot_acc"] = {**mean_std(folds), "values": folds} if folds else None
    entry["mask_strategy"] = (v.mask_strategy or base_objective(acfg).mask_strategy) if v.objective else None
    entry["decoder_order"] = (v.decoder_order or base_objective(acfg).decoder_order) if v.objective else None
    per_row = [r["row_losses"] for r in runs if r.get("row_losses")]
    entry["row_losses"] = [sum(col) / len(col) for col in zip(*per_row)] if per_row else None
    entry["minutes_per_seed"] = sum(sum(r["time_s"].values()) for r in runs) / len(runs) / 60
    return entry


def _setup_line(acfg: AblationConfig) -> str:
    pre = stage_config(acfg, acfg.pretrain_cfg, acfg.pretrain, "pretrain")
    fin = stage_config(acfg, acfg.finetune_cfg, acfg.finetune, "finetune")
    args = pre.model.args
    probe = {"svm": "linear SVM on frozen pooled features, C chosen on the validation split",
             "linear": "linear layer trained on frozen pooled features", None: "none"}[acfg.probe]
    return (f"{pre.model.name} {args.get('layout', '')} C={args.get('embed_dim', '?')}, "
            f"G={args.get('num_group', '?')}×K={args.get('group_size', '?')}; pretrain {pre.data.name} "
            f"{pre.optim.epochs} epochs; finetune {fin.data.name} {fin.optim.epochs} epochs, "
            f"{fin.eval.protocol} protocol (a held-out validation split picks the checkpoint, test scored once)"
            f"{' (skipped)' if acfg.skip_finetune else ''}; probe: {probe}" + _downstream_line(acfg))


def _lowdata_config(acfg: AblationConfig) -> Config:
    """The finetuning config on ``lowdata.fraction`` of the labels (``pretrained`` not set)."""
    low = stage_config(acfg, acfg.finetune_cfg, deep_merge(acfg.finetune, acfg.lowdata.get("overrides", {})),
                       "lowdata")
    low.data.label_fraction = float(acfg.lowdata["fraction"])
    return low


def _fewshot_config(acfg: AblationConfig) -> Config:
    """The few-shot config with its overrides (the fold and ``pretrained`` not set)."""
    return stage_config(acfg, acfg.fewshot["cfg"], acfg.fewshot.get("overrides", {}), "fewshot")


def _downstream_line(acfg: AblationConfig) -> str:
    out = ""
    if acfg.lowdata:
        low = _lowdata_config(acfg)
        out += (f"; low-data: finetuning on {100 * acfg.lowdata['fraction']:g}% of the labelled train shapes "
                f"(stratified, drawn per seed), {low.optim.epochs} epochs")
    if acfg.fewshot:
        fs = acfg.fewshot
        c = _fewshot_config(acfg)
        out += (f"; few-shot: {fs['way']}-way {fs['shot']}-shot {c.data.name} folds {fs['folds']} (the same for "
                f"every variant and seed), {c.optim.epochs} epochs")
    return out
