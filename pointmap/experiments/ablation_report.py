"""The ablation's analysis and report: held-out loss by decoder row, the machine line, the markdown
table and the chart (:mod:`pointmap.experiments.ablation` runs the variants and calls these)."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

import torch

from ..atomic import atomic_write
from ..config import load_config
from ..engine import PretrainTask
from ..engine import distributed as du
from ..engine.rundir import cpu_name
from ..engine.metrics import paired_difference
from ..engine.tasks import model_inputs
from ..models import load_checkpoint
from ..models.pretrainer import resolve_row_size

__all__ = ["row_losses", "machine_description", "format_table", "format_paired", "paired_report", "write_chart"]

_LABELS = {"map": "MAP", "mae": "MAE", "ar": "AR", "local_mae": "local-MAE", None: "none (scratch)"}
# downstream numbers: key in result.json / results.json, column title
METRICS = (("finetune_acc", "finetune acc (%)"), ("probe_acc", "linear probe acc (%)"),
           ("lowdata_acc", "low-data finetune acc (%)"), ("fewshot_acc", "few-shot acc (%)"))


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
    import platform

    dev = du.resolve_device(device)
    if dev.type == "cuda":
        where = f"GPU {torch.cuda.get_device_name(dev)}"
    else:
        n = torch.get_num_threads()
        where = f"CPU {cpu_name()}, {n} thread{'s' * (n != 1)}"
    return f"{where}; torch {torch.__version__}, Python {platform.python_version()}"


# ----------------------------------------------------------------------------- report

def _num(v: Optional[float]) -> str:
    return "–" if v is None else (f"{v:.2f}" if abs(v) >= 1 else f"{v:.4g}")


def _pm(stat: Optional[Dict[str, float]], digits: Optional[int] = None) -> str:
    if not stat:
        return "–"
    if digits is None:
        return f"{stat['mean']:.4g} ± {stat['std']:.2g}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def paired_report(per_variant: Dict[str, List[Dict[str, Any]]], reference: str) -> Dict[str, Dict[str, Any]]:
    """Each variant's downstream numbers minus the reference variant's, paired by seed (few-shot: by seed
    and fold): {variant: {metric: paired_difference}}, for the metrics both have for every seed."""
    ref = {r["seed"]: r for r in per_variant[reference]}
    out: Dict[str, Dict[str, Any]] = {}
    for name, runs in per_variant.items():
        if name == reference:
            continue
        out[name] = {}
        for key, _ in METRICS:
            a, b = [], []
            for r in runs:
                mine, theirs = r.get(key), ref.get(r["seed"], {}).get(key)
                if mine is None or theirs is None:
                    continue
                mine, theirs = (mine, theirs) if isinstance(mine, list) else ([mine], [theirs])
                if len(mine) != len(theirs):
                    raise ValueError(f"ablation: {name} and {reference} ran different few-shot folds for seed {r['seed']}")
                a += mine
                b += theirs
            if a:
                out[name][key] = paired_difference(a, b)
    return out


def _metric_keys(results: Dict[str, Any]) -> List[tuple]:
    return [(k, t) for k, t in METRICS if any(v.get(k) for v in results["variants"])]


def format_table(results: Dict[str, Any]) -> str:
    """The markdown table: one row per variant, mean ± std over the seeds, and what it ran on; then, with
    a reference variant, the paired differences against it (:func:`format_paired`)."""
    metrics = _metric_keys(results)
    objective_cols = [("mask_strategy", "masking", "random"), ("decoder_order", "decoder order", "inplace")]
    objective_cols = [(k, t) for k, t, default in objective_cols  # shown where some variant changes them
                      if any(v.get(k) not in (None, default) for v in results["variants"])]
    head = (["variant", "pretraining", "mask ratio"] + [t for _, t in objective_cols] +
            ["decoder rows", "final pretrain loss"] + [t for _, t in metrics] +
            ["held-out loss by row, first → last (×10⁻³)", "min / seed"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in results["variants"]:
        cells = ([v["name"], _LABELS[v["objective"]], _num(v["mask_ratio"])] +
                 [v.get(k) or "–" for k, _ in objective_cols] + [v["row_order"] or "–", _pm(v["pretrain_loss"])] +
                 [_pm(v.get(k), 1) for k, _ in metrics] + [_rows(v.get("row_losses")), f"{v['minutes_per_seed']:.1f}"])
        lines.append("| " + " | ".join(cells) + " |")
    n = len(results["seeds"])
    lines += ["", f"Mean ± sample std over {n} seed{'s' * (n > 1)} {results['seeds']}; {results['setup']}. "
              f"Pretraining losses of different objectives are not comparable with each other "
              f"(AR and MAE pose different problems). Loss by row: the masked patches' loss on the pretraining "
              f"data's held-out split, binned by MAP's rows (also for MAE and AR), same masks for every "
              f"checkpoint, mean over seeds. Ran on {results['machine']}, "
              f"{results['elapsed_s'] / 60:.1f} min in this invocation, "
              f"{sum(v['minutes_per_seed'] for v in results['variants']) * n:.0f} min of runs in all."]
    if results.get("paired"):
        lines += ["", format_paired(results)]
    return "\n".join(lines)


def _diff(d: Optional[Dict[str, Any]]) -> str:
    if not d:
        return "–"
    ci = f" [{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]" if d["ci"] else ""
    return f"{d['mean']:+.1f}{ci} (n={d['n']}, {d['positive']}+/{d['negative']}−)"


def format_paired(results: Dict[str, Any]) -> str:
    """Markdown: each variant minus the reference, paired by seed (few-shot: seed × fold), in points."""
    ref = results["reference"]
    metrics = [(k, t) for k, t in _metric_keys(results)
               if any(k in p for p in results["paired"].values())]
    lines = [f"| variant − {ref} | " + " | ".join(t.replace(" (%)", "") for _, t in metrics) + " |",
             "|" + "---|" * (len(metrics) + 1)]
    for name, diffs in results["paired"].items():
        lines.append(f"| {name} | " + " | ".join(_diff(diffs.get(k)) for k, _ in metrics) + " |")
    conf = next((d["confidence"] for p in results["paired"].values() for d in p.values()), 0.95)
    lines += ["", f"Accuracy points, mean of the paired differences against {ref} (same seed; few-shot: same "
                  f"seed and fold) with its {100 * conf:.0f}% Student-t interval, the number of pairs, and how "
                  f"many pairs are above / below {ref}. An interval that excludes 0 is a difference these runs "
                  f"resolve; one that straddles 0 is not."]
    return "\n".join(lines)


def _rows(values: Optional[List[float]]) -> str:
    return "–" if not values else " / ".join(f"{1e3 * v:.2f}" for v in values)


def write_chart(results: Dict[str, Any], path: str) -> None:
    """Bars of each downstream accuracy per variant (mean, std error bars, seeds / folds as dots; a variant
    without a number gets no bar); with a reference variant, a second panel of the paired differences
    against it with their confidence intervals."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    variants = results["variants"]
    keys = [(key, title.replace(" acc (%)", "")) for key, title in _metric_keys(results)]
    paired = results.get("paired")
    width = 0.8 / len(keys)
    size = (1.2 + 1.3 * len(variants), 3.6)
    fig, axes = plt.subplots(2 if paired else 1, 1, figsize=(size[0], size[1] * (1.9 if paired else 1)), squeeze=False)
    ax = axes[0][0]
    lowest = 100.0
    for i, (key, label) in enumerate(keys):
        shown = [(j + (i - (len(keys) - 1) / 2) * width, v[key]) for j, v in enumerate(variants) if v.get(key)]
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
    if paired:
        ax = axes[1][0]
        names = list(paired)
        for i, (key, label) in enumerate(keys):
            pts = [(j + (i - (len(keys) - 1) / 2) * width, paired[n][key]) for j, n in enumerate(names) if key in paired[n]]
            lo = [d["mean"] - d["ci"][0] if d["ci"] else 0.0 for _, d in pts]
            hi = [d["ci"][1] - d["mean"] if d["ci"] else 0.0 for _, d in pts]
            ax.errorbar([x for x, _ in pts], [d["mean"] for _, d in pts], yerr=[lo, hi], fmt="o", capsize=3,
                        label=label, markersize=4)
        ax.axhline(0.0, color="k", linewidth=0.8)
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_ylabel(f"minus {results['reference']} (points)")
        ax.set_title(f"paired differences against {results['reference']}, "
                     f"{100 * next(iter(next(iter(paired.values())).values()))['confidence']:.0f}% t intervals",
                     fontsize=9)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
