"""Training engine: one :class:`Trainer` for every task, its run folder (:class:`RunDir`), task objects,
hooks, checkpoints, DDP. Drivers that compose runs (seeds, few-shot folds, the ablation) live in
:mod:`pointmap.experiments`.

    from pointmap.config import load_config
    from pointmap.engine import Trainer
    results = Trainer(load_config("cfgs/map_demo.yaml")).fit()
"""
from ..models.linear_probe import LinearProbe
from .checkpoint import Checkpointer, atomic_save, load_file, unwrap_model
from .distributed import shutdown
from .export import export_run, hub_model_card, input_transforms, push_to_hub
from .hooks import DEFAULT_HOOKS, HOOKS, Decision, Hook, build_hooks, register_hook
from .metrics import (classification_metrics, confusion_matrix, mean_std, part_iou_sums, part_mask,
                      part_seg_metrics, restricted_argmax)
from .rundir import RunDir, RunInterrupted
from .scope import ProcessScope, raise_if_stopped, stop_requested
from .state import TrainState
from .tasks import TASKS, ClassificationTask, PretrainTask, Task, build_task, register_task
from .segmentation import SegmentationTask
from .probe import SvmProbeTask
from .trainer import NonFiniteLossError, Trainer, seed_everything

__all__ = [
    "Trainer", "TrainState", "Checkpointer", "NonFiniteLossError", "seed_everything", "RunDir", "RunInterrupted",
    "ProcessScope", "stop_requested", "raise_if_stopped", "Decision",
    "Task", "PretrainTask", "ClassificationTask", "SegmentationTask", "SvmProbeTask", "TASKS", "register_task",
    "build_task", "LinearProbe", "part_mask", "restricted_argmax", "part_iou_sums", "part_seg_metrics",
    "Hook", "HOOKS", "DEFAULT_HOOKS", "register_hook", "build_hooks", "shutdown",
    "atomic_save", "load_file", "unwrap_model", "confusion_matrix", "classification_metrics", "mean_std",
    "export_run", "hub_model_card", "input_transforms", "push_to_hub",
]
