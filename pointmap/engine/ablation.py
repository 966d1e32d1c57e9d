"""Does MAP help? One ablation config -> MAP / MAE / AR pretraining vs no pretraining, over seeds.

For every variant and seed: pretrain (``synthetic_pretrain`` in the demo), finetune the classifier from
the last pretrained checkpoint, and probe the frozen encoder linearly (``train.probe``: a linear SVM by
default); ``scratch`` finetunes and probes a randomly initialised encoder. Every run goes through the
runner (:func:`~pointmap.engine.run_pretrain`, :func:`~pointmap.engine.run_finetune`) into
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
import platform
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from ..config import Config, apply_overrides, config_from_dict, config_to_dict, deep_merge, load_config, load_yaml
from ..models import load_checkpoint
from ..models.pretrainer import resolve_row_size
from . import distributed as du
from .logging import RunWriter, setup_logging
from .metrics import mean_std
from .runner import run_finetune, run_pretrain
from .tasks import PretrainTask, model_inputs

__all__ = ["AblationConfig", "Variant", "parse_variant", "expand_variants", "load_ablation_config",
           "variant_configs", "run_ablation", "format_table"]

logger = logging.getLogger(__name__)

OBJECTIVES = ("map", "mae", "ar")
_VARIANT = re.compile(r"^(?P<objective>map|mae|ar)(?:-mask(?P<mask>\d*\.\d+))?(?:-(?P<order>aligned|shuffled))?$")
_GRAMMAR = ("map, mae, ar or scratch, optionally with -mask<ratio> and then -shuffled or -aligned "
            "(e.g. map-mask0.25, map-shuffled, mae-mask0.75)")
_LABELS = {"map": "MAP", "mae": "MAE", "ar": "AR", None: "none (scratch)"}


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
        raise ValueError(f"unknown ablation variant {name!r}: use {_GRAMMAR}")
    mask = float(m["mask"]) if m["mask"] else None
    if mask is not None and not 0.0 < mask < 1.0:
        raise ValueError(f"ablation variant {name!r}: the mask ratio must be in (0, 1)")
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
            raise ValueError(f"{path}: unknown ablation key {key!r}; valid keys: {', '.join(_TYPES)}")
        if not isinstance(value, _TYPES[key]):
            raise ValueError(f"{path}: ablation key {key!r} has the wrong type ({value!r})")
    for key in ("pretrain_cfg", "finetune_cfg"):
        if key not in data:
            raise ValueError(f"{path}: the ablation needs {key}")
        if not os.path.isabs(data[key]):
            data[key] = os.path.join(os.path.dirname(os.path.abspath(path)), data[key])
    if data.get("probe") == "none":
        data["probe"] = None
    if data.get("probe") not in ("svm", "linear", None):
        raise ValueError(f"{path}: probe must be svm, linear or none; got {data['probe']!r}")
    if data.get("skip_finetune") and data.get("probe", "svm") is None:
        raise ValueError(f"{path}: skip_finetune with probe none leaves nothing to measure downstream")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in data.get("seeds", [0])) or not data.get(
            "seeds", [0]):
        raise ValueError(f"{path}: seeds must be a non-empty list of integers; got {data.get('seeds')!r}")
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
        raise ValueError("the ablation has no variants")
    return out


def _base_mask_ratio(acfg: AblationConfig) -> float:
    return _stage_config(acfg, acfg.pretrain_cfg, acfg.pretrain, "pretrain").objective.mask_ratio


def _stage_config(acfg: AblationConfig, path: str, section: Dict[str, Any], stage: str) -> Config:
    data = deep_merge(deep_merge(load_yaml(path), acfg.common), section)
    try:
        cfg = config_from_dict(data)
    except ValueError as e:
        raise ValueError(f"ablation {acfg.name}, {stage} config: {e}") from None
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
    resume = cfg.train.probe != "svm" and os.path.isfile(os.path.join(work_dir, "ckpt-last.pth"))
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
            raise ValueError(f"{run_dir} holds a result of other settings than this ablation's: use another "
                             f"--exp-name, or remove that folder")
        logger.info("ablation %s | %s seed %d: done before, skipped", acfg.name, variant.name, seed)
        if variant.objective and "row_losses" not in res:  # a result from before row losses were measured
            res["row_losses"] = row_losses(os.path.join(run_dir, "pretrain"), device=device)
            RunWriter(run_dir).write_json(res, "result.json")
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
        setup_logging(os.path.join(acfg.root, "log.txt"))  # each run detaches its own log at its end
    if variant.objective:
        res["row_losses"] = row_losses(os.path.join(run_dir, "pretrain"), device=device)
    RunWriter(run_dir).write_json(res, "result.json")
    logger.info("ablation %s | %s seed %d | pretrain loss %s | finetune acc %s | probe acc %s | %.0fs",
                acfg.name, variant.name, seed, _num(res["pretrain_loss"]), _num(res["finetune_acc"]),
                _num(res["probe_acc"]), sum(res["time_s"].values()))
    return res


def row_losses(pretrain_dir: str, split: Optional[str] = None, batch_size: int = 64, seed: int = 0,
               device: str = "cpu") -> List[float]:
    """Where in the sequence the reconstruction is hard: the mean loss of the masked patches of each row
    of MAP's decoder (rows of MAP's length, √G for points, also for an MAE or AR checkpoint, so objectives
    compare position by position), for the pretraining in ``pretrain_dir`` (its config.yaml and
    ckpt-last.pth) on ``split`` of its data set (default: its ``test_split``, else ``val``), with masks from a
    generator seeded with ``seed``: every checkpoint of one setting gets the same masks."""
    cfg = load_config(os.path.join(pretrain_dir, "config.yaml"))
    cfg.data.test_split = split or cfg.data.test_split or "val"
    task = PretrainTask(cfg)
    data = task.build_datasets()["val"]
    dev = du.resolve_device(device)
    model = task.build_model({})
    load_checkpoint(model, os.path.join(pretrain_dir, "ckpt-last.pth"))
    model.to(dev).eval()
    g = model.encoder.num_tokens
    row = resolve_row_size("map", None, g, model.encoder.natural_row_size(), "inplace")
    sums = torch.zeros(g // row, dtype=torch.float64)
    counts = torch.zeros(g // row, dtype=torch.float64)
    gen = torch.Generator(device=dev).manual_seed(seed)
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(data, batch_size=batch_size):
            out = model(model_inputs(batch).to(dev), generator=gen)
            rows = (out.mask.nonzero()[:, 1] // row).cpu()  # row-major: the masked positions in pred's order
            sums.index_add_(0, rows, model.patch_losses(out).reshape(-1).double().cpu())
            counts.index_add_(0, rows, torch.ones_like(rows, dtype=torch.float64))
    return (sums / counts.clamp_min(1)).tolist()


def machine_description(device: str = "auto") -> str:
    """Where the ablation ran, for the table: the processor (or GPU), the threads torch uses, versions."""
    dev = du.resolve_device(device)
    if dev.type == "cuda":
        where = f"GPU {torch.cuda.get_device_name(dev)}"
    else:
        cpu = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
        except OSError:
            pass
        n = torch.get_num_threads()
        where = f"CPU {cpu}, {n} thread{'s' * (n != 1)}"
    return f"{where}; torch {torch.__version__}, Python {platform.python_version()}"


def run_ablation(acfg: AblationConfig, device: str = "auto") -> Dict[str, Any]:
    """Every variant × seed (skipping finished ones), then results.json, table.md, chart.png in ``acfg.root``."""
    if du.is_distributed():
        raise ValueError("the ablation runs its variants one after another in one process; start it without torchrun")
    variants = expand_variants(acfg)
    setup_logging(os.path.join(acfg.root, "log.txt"))
    logger.info("ablation %s | %d variants (%s) × seeds %s | %s", acfg.name, len(variants),
                ", ".join(v.name for v in variants), acfg.seeds, acfg.root)
    start = time.time()
    per_variant = {v.name: [run_variant(acfg, v, s, device) for s in acfg.seeds] for v in variants}
    sample = variant_configs(acfg, variants[0], acfg.seeds[0], skip_finetune=False)
    results = {"ablation": acfg.name, "exp_name": acfg.exp_name, "work_dir": os.path.abspath(acfg.root),
               "protocol": sample["finetune"].eval.protocol, "probe": acfg.probe, "seeds": list(acfg.seeds),
               "machine": machine_description(device), "elapsed_s": round(time.time() - start, 1),
               "setup": _setup_line(acfg), "variants": []}
    for v in variants:
        runs = per_variant[v.name]
        entry: Dict[str, Any] = {"name": v.name, "objective": v.objective, "row_order": v.row_order if v.objective
                                 else None, "mask_ratio": (v.mask_ratio if v.mask_ratio is not None else
                                                           _base_mask_ratio(acfg)) if v.objective else None}
        for key in ("pretrain_loss", "finetune_acc", "probe_acc"):
            values = [r[key] for r in runs if r.get(key) is not None]
            entry[key] = {**mean_std(values), "values": values} if values else None
        per_row = [r["row_losses"] for r in runs if r.get("row_losses")]
        entry["row_losses"] = [sum(col) / len(col) for col in zip(*per_row)] if per_row else None
        entry["minutes_per_seed"] = sum(sum(r["time_s"].values()) for r in runs) / len(runs) / 60
        results["variants"].append(entry)
    writer = RunWriter(acfg.root)
    writer.write_json(results, "results.json")
    _write_text(os.path.join(acfg.root, "table.md"), format_table(results) + "\n")
    write_chart(results, os.path.join(acfg.root, "chart.png"))
    logger.info("ablation %s done in %.1f min: %s", acfg.name, results["elapsed_s"] / 60, acfg.root)
    return results


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


# ----------------------------------------------------------------------------- report

def _num(v: Optional[float]) -> str:
    return "–" if v is None else (f"{v:.2f}" if abs(v) >= 1 else f"{v:.4g}")


def _pm(stat: Optional[Dict[str, float]], digits: Optional[int] = None) -> str:
    if not stat:
        return "–"
    if digits is None:
        return f"{stat['mean']:.4g} ± {stat['std']:.2g}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def format_table(results: Dict[str, Any]) -> str:
    """The markdown table: one row per variant, mean ± std over the seeds, and what it ran on."""
    probe = "linear probe acc (%)" if results["probe"] else "probe"
    lines = [f"| variant | pretraining | mask ratio | decoder rows | final pretrain loss | finetune acc (%) "
             f"| {probe} | held-out loss by row, first → last (×10⁻³) | min / seed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for v in results["variants"]:
        lines.append(f"| {v['name']} | {_LABELS[v['objective']]} | {_num(v['mask_ratio'])} | "
                     f"{v['row_order'] or '–'} | {_pm(v['pretrain_loss'])} | {_pm(v['finetune_acc'], 1)} | "
                     f"{_pm(v['probe_acc'], 1)} | {_rows(v.get('row_losses'))} | {v['minutes_per_seed']:.1f} |")
    n = len(results["seeds"])
    lines += ["", f"Mean ± sample std over {n} seed{'s' * (n > 1)} {results['seeds']}; {results['setup']}. "
              f"Pretraining losses of different objectives are not comparable with each other "
              f"(AR and MAE pose different problems). Loss by row: the masked patches' loss on the pretraining "
              f"data's held-out split, binned by MAP's rows (also for MAE and AR), same masks for every "
              f"checkpoint, mean over seeds. Ran on {results['machine']}, "
              f"{results['elapsed_s'] / 60:.1f} min in this invocation, "
              f"{sum(v['minutes_per_seed'] for v in results['variants']) * n:.0f} min of runs in all."]
    return "\n".join(lines)


def _rows(values: Optional[List[float]]) -> str:
    return "–" if not values else " / ".join(f"{1e3 * v:.2f}" for v in values)


def write_chart(results: Dict[str, Any], path: str) -> None:
    """Bars of finetune and linear-probe accuracy per variant (mean, std error bars, seeds as dots); a
    variant without a number (finetuning skipped) gets no bar."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    variants = results["variants"]
    keys = [(key, label) for key, label in (("finetune_acc", "finetune"), ("probe_acc", "linear probe"))
            if any(v[key] for v in variants)]
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(1.2 + 1.3 * len(variants), 3.6))
    lowest = 100.0
    for i, (key, label) in enumerate(keys):
        shown = [(j + (i - (len(keys) - 1) / 2) * width, v[key]) for j, v in enumerate(variants) if v[key]]
        ax.bar([x for x, _ in shown], [st["mean"] for _, st in shown], width, yerr=[st["std"] for _, st in shown],
               capsize=3, label=label, alpha=0.85)
        for x, st in shown:
            ax.plot([x] * len(st["values"]), st["values"], "k.", markersize=3)
            lowest = min(lowest, *st["values"])
    ax.set_xticks(range(len(variants)), [v["name"] for v in variants], fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(max(0.0, 10 * (lowest // 10) - 10), 100)  # the differences are a few points: zoom in
    ax.set_title(f"{results['ablation']}: {len(results['seeds'])} seeds, {results['protocol']} protocol", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    tmp = path + ".tmp"
    fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def _write_text(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
