"""Task objects: what differs between pretraining, classification, segmentation, few-shot.

The :class:`~pointmap.engine.Trainer` owns the loop, optimizer, protocol, checkpoints and logs; a task
supplies the data sets, the model, the loss of one training step and the metrics of evaluation. A new
task is a subclass registered by name, switched on with ``task: normals`` in a config (part segmentation,
``task: partseg``, is :class:`~pointmap.engine.segmentation.SegmentationTask`, built this way)::

    @register_task("normals")
    class NormalsTask(Task):
        monitor, monitor_mode = "angle", "min"   # the metric that picks ckpt-best.pth
        def build_datasets(self): ...            # {"train": ..., "val": ..., "test": ...}
        def build_model(self, datasets): ...     # datasets None: sized without data (tools/recipe.py)
        def train_step(self, model, batch): ...  # (loss, {"angle": ...})
        def eval_step(self, model, batch, views=1): ...  # sums, e.g. {"angle_sum": ..., "count": ...}
        def summarize(self, sums): ...           # {"angle": ..., "loss": ...}

Evaluation works on *sums*: ``eval_step`` returns tensors that add up over batches and processes
(counts, loss × batch size, a confusion matrix), ``summarize`` turns the totals into metrics. That makes
DDP evaluation exact without padding.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..config import Config
from ..objective import objective_settings
from ..ops._precision import upcast
from ..errors import ConfigError, accepted_kwargs, check_kwargs, one_line
from ..registry import Registry
from .datasets import SplitView, dataset_labels, stratified_split, stratified_subset
from .metrics import classification_metrics, confusion_matrix

__all__ = ["Task", "PretrainTask", "ClassificationTask", "TASKS", "register_task", "build_task", "model_inputs",
           "pretrainer_args"]

logger = logging.getLogger(__name__)

TASKS = Registry("task")


def register_task(name: str, override: bool = False) -> Callable[[Type["Task"]], Type["Task"]]:
    def wrap(cls: Type["Task"]) -> Type["Task"]:
        cls.name = name
        return TASKS.register(name, cls, override=override)
    return wrap


def build_task(cfg: Config) -> "Task":
    """The task ``cfg.task`` names (``train.probe: svm`` on classification is the ``svm_probe`` task), with
    the config's free-form sections checked (:meth:`Task.validate`): a ConfigError before anything is built."""
    name = cfg.task
    if cfg.train.probe == "svm":
        if cfg.task != "classification":
            raise ConfigError(f"train.probe=svm needs task: classification, not {cfg.task!r}")
        name = "svm_probe"
    cls = TASKS.get(name)
    check_kwargs("task_args", f"task {name!r}", cfg.task_args, accepted_kwargs(cls), fixed=("cfg",))
    try:
        task = cls(cfg, **cfg.task_args)
    except TypeError as e:  # a required argument left out, or a value the task cannot take
        raise ConfigError(f"task {name!r}: bad task_args {cfg.task_args}: {one_line(e)}") from e
    task.validate()
    return task


def pretrainer_args(cfg: Config) -> Dict[str, Any]:
    """``create_pretrainer``'s keywords for the config's objective: its name (as ``objective``), every setting of
    :class:`~pointmap.config.ObjectiveConfig` (the encoder's are ``model.args``): what a pretraining run builds,
    and what an exported card records."""
    o = cfg.objective
    return {"objective": o.name, **{k: getattr(o, k) for k in objective_settings()}}


def model_inputs(batch: Dict[str, Any]) -> torch.Tensor:
    """The model input of a batch: ``points`` (B, N, 3) for point clouds, ``image`` (B, C, H, W) for images."""
    return batch["points"] if "points" in batch else batch["image"]


def _transform(entries):
    if not entries:
        return None
    from ..data import build_transforms

    return build_transforms(entries)


class Task:
    """Base class. ``monitor`` (a key of :meth:`summarize`'s result, or of the train metrics when there is
    no validation split) picks ``ckpt-best.pth``; ``monitor_mode`` says whether higher is better."""

    name = "task"
    monitor = "loss"
    monitor_mode = "min"
    trains = True  # False: a closed-form task; the Trainer calls solve() instead of its loop
    model_fixed: Tuple[str, ...] = ("num_classes",)  # preset arguments the task sets itself (from the data)

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def validate(self) -> None:
        """Check the config's free-form sections against the signatures they are passed to (``data.options``:
        the data set's, the transform entries: their classes', ``model.args``: the preset's, ``hooks``: the
        hooks'); a ConfigError naming the section and the key. Called by :func:`build_task`, before any file
        is written."""
        from ..data import check_dataset_options, check_transforms
        from ..models import check_model_args
        from .hooks import DEFAULT_HOOKS, build_hooks

        build_hooks(self.cfg.hooks, DEFAULT_HOOKS)

        d, e = self.cfg.data, self.cfg.eval
        check_dataset_options(d.name, d.options)
        check_transforms(d.train_transforms, "data.train_transforms")
        check_transforms(d.test_transforms, "data.test_transforms")
        check_transforms(d.vote_transforms, "data.vote_transforms")
        check_transforms(e.vote_view_transforms, "eval.vote_view_transforms")
        if e.vote_rounds > 1 and (e.protocol != "peer" or e.vote == 1):
            raise ConfigError(f"eval.vote_rounds={e.vote_rounds} reports the best of {e.vote_rounds} voting passes on "
                              f"the test set, a selection on test that only --protocol peer makes, with eval.vote > 1 "
                              f"(here protocol {e.protocol}, vote {e.vote}); set eval.vote_rounds=1")
        check_model_args(self.cfg.model.name, self.cfg.model.args,
                         fixed={k: f"task {self.name!r}" for k in self.model_fixed})

    def check_inputs(self) -> None:
        """The paths a run reads exist: ``data.root`` for a data set on disk, ``pretrained`` (``--ckpt``) as a
        file, a folder or a published entry. Called before a run (or a driver's) folder is made; not by
        :func:`build_task`, so a recipe is described without its data."""
        from ..data import check_data_root
        from ..models import check_pretrained

        check_data_root(self.cfg.data.name, self.cfg.data.root)
        if self.cfg.pretrained:
            check_pretrained(self.cfg.pretrained)

    # data + model
    def build_base(self, split: str) -> Dataset:
        """The configured data set's ``split`` without transforms (views add them, see :class:`SplitView`)."""
        from ..data import build_dataset

        d = self.cfg.data
        return build_dataset(d.name, d.root, split, **d.options)

    def build_datasets(self) -> Dict[str, Dataset]:
        raise NotImplementedError

    def label_space(self) -> Dict[str, int]:
        """The configured data set's label counts (``num_classes``; part segmentation also ``num_categories``,
        ``num_parts``) as it declares them, without reading its files; a data set that declares nothing
        (the generated ones) is built and asked."""
        from ..data import label_space

        d = self.cfg.data
        declared = label_space(d.name, d.options)
        if declared is not None:
            return declared
        base = self.build_base(d.train_split)
        out = {"num_classes": base.num_classes}
        if getattr(base, "num_parts", None):
            out.update(num_categories=len(base.classes), num_parts=int(base.num_parts))
        return out

    def build_model(self, datasets: Optional[Dict[str, Dataset]]) -> nn.Module:
        """The model to train; ``datasets`` None: sized from :meth:`label_space` (``tools/recipe.py``)."""
        raise NotImplementedError

    def load_pretrained(self, model: nn.Module, spec: str):
        """Load ``--ckpt`` weights into ``model``: a file (pointmap's, Point-MAE's, PointMamba's or MAP 3D's), a
        folder written by ``tools/export.py``, or an entry of ``pointmap.list_pretrained()`` (downloaded once).
        Every encoder tensor must come from the file unless ``pretrained_strict`` is false; a file that
        does not fit is a ValueError naming its format and what is missing (pointmap.models.load_checkpoint)."""
        from ..models import load_pretrained

        quiet = not self.cfg.train.progress  # no download bar either
        return load_pretrained(model, spec, strict=self.cfg.pretrained_strict, progress=False if quiet else None)

    # steps
    def train_step(self, model: nn.Module, batch: Dict[str, Any]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Forward one batch in train mode: (scalar loss to backpropagate, extra scalars to log)."""
        raise NotImplementedError

    def eval_step(self, model: nn.Module, batch: Dict[str, Any], views: int = 1) -> Dict[str, torch.Tensor]:
        """Forward one batch in eval mode (no grad): tensors that add up over batches and processes."""
        raise NotImplementedError

    def summarize(self, sums: Dict[str, torch.Tensor]) -> Dict[str, float]:
        raise NotImplementedError

    def solve(self, trainer) -> Dict[str, Any]:
        """A task with ``trains = False``: fit in closed form from ``trainer.module`` / ``trainer.datasets``
        and return what metrics.json holds."""
        raise NotImplementedError


@register_task("pretrain")
class PretrainTask(Task):
    """Self-supervised pretraining (MAP / MAE / AR): the model's output carries its own ``.loss``.

    No labels are used. With ``data.test_split`` set, that split's loss picks ckpt-best; otherwise the
    epoch's mean train loss does. ``mixup`` (timm's Mixup arguments, :mod:`~pointmap.engine.mixup`): every
    training batch of images is mixed before the model sees it, as the MAP 2D release's ``engine.py`` does."""

    monitor, monitor_mode = "loss", "min"
    model_fixed = ()

    def __init__(self, cfg: Config, mixup: Optional[Dict[str, Any]] = None):
        super().__init__(cfg)
        self.mixup_args = dict(mixup or {})
        self.mixup = None

    def validate(self) -> None:
        super().validate()
        from .mixup import check_mixup

        check_mixup(self.mixup_args, self.cfg.data.batch_size)

    def build_datasets(self) -> Dict[str, Dataset]:
        d = self.cfg.data
        out = {"train": SplitView(self.build_base(d.train_split), None, _transform(d.train_transforms))}
        if d.test_split:
            out["val"] = SplitView(self.build_base(d.test_split), None, _transform(d.test_transforms))
        return out

    def build_model(self, datasets: Dict[str, Dataset]) -> nn.Module:
        from ..models import create_pretrainer

        return create_pretrainer(self.cfg.model.name, **pretrainer_args(self.cfg), **self.cfg.model.args)

    def train_step(self, model, batch):
        x = model_inputs(batch)
        if self.mixup_args:
            from .mixup import build_mixup

            self.mixup = self.mixup or build_mixup(self.mixup_args, num_classes=1)
            x, _ = self.mixup(x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))  # the targets go unused
        return model(x).loss, {}

    def eval_step(self, model, batch, views=1):
        x = model_inputs(batch)
        loss = upcast(model(x).loss)
        return {"loss_sum": loss * x.shape[0], "count": torch.tensor(x.shape[0])}

    def summarize(self, sums):
        return {"loss": (sums["loss_sum"] / sums["count"].clamp_min(1)).item()}


@register_task("classification")
class ClassificationTask(Task):
    """Shape classification with cross-entropy (``label_smoothing`` via ``task_args``; ``head_classes``: a head
    wider than the data set's classes, as the peers' few-shot recipes build).

    Splits follow ``eval.protocol``: ``clean`` holds a stratified, seeded ``eval.val_fraction`` of train
    out as the validation split that picks the checkpoint; ``peer`` selects on the test set. Voting
    (``views`` > 1) is one pass of N views, each with a random scale and translation, logits averaged."""

    monitor, monitor_mode = "acc", "max"

    def __init__(self, cfg: Config, label_smoothing: float = 0.0, vote_scale: Tuple[float, float] = (2 / 3, 1.5),
                 vote_translate: float = 0.2, head_classes: Optional[int] = None,
                 mixup: Optional[Dict[str, Any]] = None):
        super().__init__(cfg)
        self.label_smoothing = float(label_smoothing)
        # Mixup / CutMix of images (timm's arguments): soft targets, timm's SoftTargetCrossEntropy
        self.mixup_args, self.mixup = dict(mixup or {}), None
        # outputs of the classifier when not the data set's class count: the peers' few-shot configs build a
        # 40-way head (ModelNet40's) for 5- and 10-way folds
        self.head_classes = None if head_classes is None else int(head_classes)
        self.vote_scale, self.vote_translate = tuple(vote_scale), float(vote_translate)
        self.num_classes: Optional[int] = None

    def validate(self) -> None:
        super().validate()
        from .mixup import check_mixup

        check_mixup(self.mixup_args, self.cfg.data.batch_size)

    def build_datasets(self) -> Dict[str, Dataset]:
        cfg, d = self.cfg, self.cfg.data
        if not d.test_split:
            raise ConfigError("classification needs data.test_split")
        train_tf, test_tf = _transform(d.train_transforms), _transform(d.test_transforms)
        base_train, base_test = self.build_base(d.train_split), self.build_base(d.test_split)
        self.num_classes = base_train.num_classes
        test = SplitView(base_test, None, test_tf)
        # a voting pass draws its views from the test split as data.vote_transforms leave it
        vote = {} if d.vote_transforms is None else {"vote": SplitView(base_test, None, _transform(d.vote_transforms))}
        labels = dataset_labels(base_train)
        if cfg.eval.protocol == "peer":
            keep = self._label_subset(labels, list(range(len(labels))))
            return {"train": SplitView(base_train, keep, train_tf), "val": test, "test": test, **vote}
        keep, held = stratified_split(labels, cfg.eval.val_fraction, cfg.eval.split_seed)
        keep = self._label_subset(labels, keep)
        logger.info("clean protocol: %d train / %d validation (held out of %s, seed %d) / %d test",
                    len(keep), len(held), d.train_split, cfg.eval.split_seed, len(test))
        return {"train": SplitView(base_train, keep, train_tf), "val": SplitView(base_train, held, test_tf),
                "test": test, **vote}

    def _label_subset(self, labels: torch.Tensor, indices: List[int]) -> List[int]:
        """``data.label_fraction`` of ``indices``, stratified by class (rounded, at least one shape of each),
        drawn with ``data.label_seed`` (default ``train.seed``); all of them at fraction 1."""
        d = self.cfg.data
        if d.label_fraction == 1.0:
            return indices
        seed = self.cfg.train.seed if d.label_seed is None else d.label_seed
        picked = [indices[i] for i in stratified_subset(labels[indices], d.label_fraction, seed)]
        logger.info("data.label_fraction %g: training on %d of %d labelled shapes (seed %d)",
                    d.label_fraction, len(picked), len(indices), seed)
        return picked

    def build_model(self, datasets: Dict[str, Dataset]) -> nn.Module:
        from ..models import create_model

        num_classes = self.num_classes or (datasets["train"].num_classes if datasets else self.label_space()["num_classes"])
        if self.head_classes is not None:
            if self.head_classes < num_classes:
                raise ConfigError(f"task_args.head_classes={self.head_classes} is fewer than the {num_classes} classes "
                                  f"of data set {self.cfg.data.name!r}")
            num_classes = self.head_classes
        if self.cfg.train.probe:  # frozen encoder, a linear layer on its pooled features
            from ..models.linear_probe import LinearProbe

            return LinearProbe(create_model(self.cfg.model.name, **self.cfg.model.args), num_classes)
        return create_model(self.cfg.model.name, num_classes=num_classes, **self.cfg.model.args)

    def train_step(self, model, batch):
        label = batch["label"].reshape(-1)
        if self.mixup_args:  # soft targets: no accuracy to report
            from timm.loss import SoftTargetCrossEntropy

            from .mixup import build_mixup

            self.mixup = self.mixup or build_mixup(self.mixup_args, self.head_classes or self.num_classes,
                                                   self.label_smoothing)
            x, target = self.mixup(model_inputs(batch), label)
            return SoftTargetCrossEntropy()(upcast(model(x)), target), {}
        logits = model(model_inputs(batch))
        loss = F.cross_entropy(upcast(logits), label, label_smoothing=self.label_smoothing)
        acc = (logits.argmax(-1) == label).float().mean() * 100.0
        return loss, {"acc": acc.detach()}

    def view_transform(self) -> Callable:
        """What makes one view of a voting pass from a batch: ``eval.vote_view_transforms``, or by default a
        random scale and translation (``vote_scale``, ``vote_translate``)."""
        from ..data.transforms import ScaleTranslate

        views = self.cfg.eval.vote_view_transforms
        if views is not None:
            return _transform(views) or (lambda x: x)
        return ScaleTranslate(*self.vote_scale, translate=self.vote_translate)

    def logits(self, model: nn.Module, batch: Dict[str, Any], views: int = 1) -> torch.Tensor:
        x = model_inputs(batch)
        if views <= 1:
            return upcast(model(x))
        aug = self.view_transform()
        return torch.stack([upcast(model(aug(x))) for _ in range(views)]).mean(0)

    def eval_step(self, model, batch, views=1):
        logits = self.logits(model, batch, views)
        label = batch["label"].reshape(-1)
        loss = F.cross_entropy(logits, label, reduction="sum")
        return {"loss_sum": loss, "count": torch.tensor(label.numel()),
                "confusion": confusion_matrix(logits.argmax(-1), label, logits.shape[-1])}

    def summarize(self, sums):
        out = classification_metrics(sums["confusion"])
        out["loss"] = (sums["loss_sum"] / sums["count"].clamp_min(1)).item()
        out["count"] = int(sums["count"])  # samples scored: every one exactly once, under DDP too
        return out
