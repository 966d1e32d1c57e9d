"""Training engine: one :class:`Trainer` for every task, task objects, hooks, checkpoints, DDP.

    from pointmap.config import load_config
    from pointmap.engine import Trainer
    results = Trainer(load_config("cfgs/map_demo.yaml")).fit()
"""
from .checkpoint import atomic_save, load_file, unwrap_model
from .hooks import HOOKS, Hook, build_hooks, register_hook
from .metrics import classification_metrics, confusion_matrix, mean_std
from .runner import format_results, run, run_finetune, run_pretrain, run_seeds, shutdown
from .tasks import TASKS, ClassificationTask, PretrainTask, Task, build_task, register_task
from .trainer import NonFiniteLossError, Trainer, seed_everything

__all__ = [
    "Trainer", "NonFiniteLossError", "seed_everything",
    "Task", "PretrainTask", "ClassificationTask", "TASKS", "register_task", "build_task",
    "Hook", "HOOKS", "register_hook", "build_hooks",
    "run", "run_pretrain", "run_finetune", "run_seeds", "format_results", "shutdown",
    "atomic_save", "load_file", "unwrap_model", "confusion_matrix", "classification_metrics", "mean_std",
]
