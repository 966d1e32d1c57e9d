"""Training engine: one :class:`Trainer` for every task, task objects, hooks, checkpoints, DDP.

    from pointmap.config import load_config
    from pointmap.engine import Trainer
    results = Trainer(load_config("cfgs/map_demo.yaml")).fit()
"""
from .checkpoint import atomic_save, load_file, unwrap_model
from .hooks import HOOKS, Hook, build_hooks, register_hook
from .metrics import (classification_metrics, confusion_matrix, mean_std, part_iou_sums, part_mask,
                      part_seg_metrics, restricted_argmax)
from .runner import format_results, run, run_finetune, run_pretrain, run_seeds, shutdown
from .tasks import TASKS, ClassificationTask, PretrainTask, Task, build_task, register_task
from .segmentation import SegmentationTask
from .probe import LinearProbe, run_svm_probe
from .fewshot import run_fewshot
from .trainer import NonFiniteLossError, Trainer, seed_everything

__all__ = [
    "Trainer", "NonFiniteLossError", "seed_everything",
    "Task", "PretrainTask", "ClassificationTask", "SegmentationTask", "TASKS", "register_task", "build_task",
    "LinearProbe", "run_svm_probe", "run_fewshot", "part_mask", "restricted_argmax", "part_iou_sums",
    "part_seg_metrics",
    "Hook", "HOOKS", "register_hook", "build_hooks",
    "run", "run_pretrain", "run_finetune", "run_seeds", "format_results", "shutdown",
    "atomic_save", "load_file", "unwrap_model", "confusion_matrix", "classification_metrics", "mean_std",
]
