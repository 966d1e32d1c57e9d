"""Drivers that compose runs, each a thin layer over :class:`~pointmap.engine.Trainer` and
:class:`~pointmap.engine.RunDir`: one run or one per seed (:mod:`.runs`), scoring a checkpoint
(``--eval``), few-shot folds (:mod:`.fewshot`), the MAP / MAE / AR ablation (:mod:`.ablation`); what a
config will train, without running it (:mod:`.recipe`).
Probes are tasks (``train.probe``: a linear layer trained by the Trainer, or the SVM probe task).
"""
from .runs import (driver_run, evaluate_checkpoint, format_results, run, run_child, run_finetune, run_pretrain,
                   run_seeds)
from .fewshot import missing_folds, parse_folds, run_fewshot
from .recipe import describe_recipe, format_recipe

__all__ = ["run", "run_pretrain", "run_finetune", "run_seeds", "run_child", "driver_run", "evaluate_checkpoint",
           "format_results", "run_fewshot", "missing_folds", "parse_folds", "describe_recipe", "format_recipe"]
