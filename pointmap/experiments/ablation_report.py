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
from ..engine.tasks import model_inputs
from ..models import load_checkpoint
from ..models.pretrainer import resolve_row_size

__all__ = ["row_losses", "machine_description", "format_table", "write_chart"]

_LABELS = {"map": "MAP", "mae": "MAE", "ar": "AR", None: "none (scratch)"}


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
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
