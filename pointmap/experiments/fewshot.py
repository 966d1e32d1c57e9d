"""Few-shot classification: the classification task run once per fold, then mean ± std over folds.

Each fold is its own run in ``<exp>/<way>way_<shot>shot/fold<k>/`` (the data set options ``way``,
``shot`` and ``fold`` set per run); ``<exp>/<way>way_<shot>shot/fewshot.json`` holds every fold's test
metrics and their mean ± std. Fold files of ``modelnet40_fewshot`` come from
``ModelNetFewshot/{way}way_{shot}shot/{fold}.pkl`` (Point-BERT's, or written by
``tools/prepare_data.py fewshot``); ``synthetic_fewshot`` draws its folds from a seed.
"""
from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence

from ..errors import UserError, UserFileNotFoundError
from ..config import Config
from ..engine import Hook, RunDir
from ..engine import distributed as du
from ..engine.metrics import summarize_seeds
from .runs import driver_run, read_inputs, run_child

__all__ = ["run_fewshot", "missing_folds", "parse_folds"]

logger = logging.getLogger(__name__)


def parse_folds(text: str) -> List[int]:
    """``"0-9"`` -> [0, ..., 9]; ``"0,3,5-6"`` -> [0, 3, 5, 6]."""
    folds: List[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            folds += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    except ValueError as e:
        raise UserError(f"--folds {text!r}: expected fold numbers like 0-9 or 0,2,4") from e
    if not folds or min(folds) < 0 or len(set(folds)) != len(folds):
        raise UserError(f"--folds {text!r}: expected distinct non-negative fold numbers")
    return folds


def missing_folds(root: str, way: int, shot: int, folds: Sequence[int]) -> List[Path]:
    """The fold pickles of ``modelnet40_fewshot`` that are not under ``root``."""
    from ..data.fewshot import FEWSHOT_DIR
    from ..data.io import find_dir

    paths = []
    for fold in folds:
        found = find_dir(root, f"{FEWSHOT_DIR}/{way}way_{shot}shot", f"{fold}.pkl") if root else None
        if found is None:
            paths.append(Path(root or "data") / FEWSHOT_DIR / f"{way}way_{shot}shot" / f"{fold}.pkl")
    return paths


def _ensure_folds(cfg: Config, way: int, shot: int, folds: Sequence[int], prepare: bool) -> None:
    if cfg.data.name != "modelnet40_fewshot":
        return
    missing = missing_folds(cfg.data.root, way, shot, folds)
    if not missing:
        return
    if not prepare:
        raise UserFileNotFoundError(
            f"few-shot fold file {missing[0]} not found ({len(missing)} missing): download Point-BERT's folds, "
            f"or draw them from ModelNet40 with python tools/prepare_data.py fewshot --root {cfg.data.root} "
            f"--ways {way} --shots {shot} (or pass --prepare-folds)")
    if du.is_main_process():
        from ..data import write_modelnet_fewshot

        logger.warning("drawing %d missing %d-way %d-shot folds from ModelNet40 (pointmap's seeded draw, "
                       "not Point-BERT's published folds)", len(missing), way, shot)
        write_modelnet_fewshot(cfg.data.root, ways=(way,), shots=(shot,), folds=max(folds) + 1)
    du.barrier()


def run_fewshot(cfg: Config, way: int, shot: int, folds: Sequence[int], *, device: str = "auto",
                resume: bool = False, force: bool = False, hooks: Iterable[Hook] = (), prepare: bool = False
                ) -> Dict[str, Any]:
    """Run ``cfg`` (a classification config on a few-shot data set) on every fold; returns what
    ``fewshot.json`` holds: per-fold test metrics and their mean ± std."""
    if cfg.task != "classification":
        raise UserError(f"{cfg.name}: few-shot runs task 'classification', the config has {cfg.task!r}")
    if not folds:
        raise UserError("few-shot: no folds to run")
    _ensure_folds(cfg, way, shot, folds, prepare)
    setting = f"{way}way_{shot}shot"
    base = os.path.join(RunDir.of(cfg).path, setting)
    fold_cfgs = [copy.deepcopy(cfg) for _ in folds]
    for c, fold in zip(fold_cfgs, folds):
        c.data.options = {**c.data.options, "way": int(way), "shot": int(shot), "fold": int(fold)}
    read_inputs(fold_cfgs[0])  # a config its task rejects, a missing path, a fold that does not open: no driver folder
    with driver_run(base) as folder:
        runs: List[Dict[str, Any]] = []
        for c, fold in zip(fold_cfgs, folds):
            runs.append(run_child(c, os.path.join(base, f"fold{fold}"), resume=resume, device=device, hooks=hooks,
                                  force=force))
            logger.info("fold %d: test acc %.2f", fold, runs[-1]["test"]["acc"])
        per_fold = [{"fold": int(f), **r["test"]} for f, r in zip(folds, runs)]
        results: Dict[str, Any] = {
            "protocol": cfg.eval.protocol, "task": runs[0]["task"], "config": cfg.name, "exp_name": cfg.exp_name,
            "work_dir": folder.abspath, "way": int(way), "shot": int(shot), "folds": [int(f) for f in folds],
            "runs": [os.path.join(base, f"fold{f}") for f in folds], "per_fold": per_fold,
            # the spread over folds: the sample std (ddof 1); the peer protocol reports numpy's (ddof 0), as the peers do
            "test": summarize_seeds([r["test"] for r in runs], ddof=0 if cfg.eval.protocol == "peer" else 1)}
        if cfg.train.probe:
            results["probe"] = cfg.train.probe
        folder.write_json(results, "fewshot.json")
    acc = results["test"]["acc"]
    logger.info("%d-way %d-shot, %d folds | test acc %.2f ± %.2f (std ddof %d) | protocol %s", way, shot, len(folds),
                acc["mean"], acc["std"], acc["ddof"], cfg.eval.protocol)
    return results
