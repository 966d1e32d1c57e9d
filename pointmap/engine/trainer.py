"""One Trainer for every task: the loop, optimization, evaluation protocol, checkpoints and logging.

What differs between pretraining, classification and segmentation lives in a task object
(:mod:`pointmap.engine.tasks`); extra behaviour at fixed points of the loop lives in hooks
(:mod:`pointmap.engine.hooks`). ``Trainer(cfg).fit()`` is everything a tool does.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from typing import Any, Dict, Iterable, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from ..config import Config, config_to_dict, save_config
from ..version import __version__
from . import distributed as du
from .checkpoint import atomic_save, get_rng_state, load_file, set_rng_state, unwrap_model
from .datasets import to_device
from .hooks import Hook, build_hooks
from .logging import RunWriter, close_log_file, format_metrics, setup_logging
from .optim import build_optimizer, build_scheduler
from .tasks import Task, build_task

__all__ = ["Trainer", "NonFiniteLossError", "seed_everything"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; training stopped before the step was applied."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Runs ``cfg`` with ``task`` (built from ``cfg.task`` when None) into ``work_dir`` (default
    ``<cfg.train.output_dir>/<cfg.name>/<cfg.exp_name>``). ``resume=True`` continues from
    ``ckpt-last.pth`` there. Works the same in one process and under torchrun (DDP; rank 0 writes)."""

    def __init__(self, cfg: Config, task: Optional[Task] = None, *, work_dir: Optional[str] = None,
                 device: str = "auto", resume: bool = False, hooks: Iterable[Hook] = ()):
        self.cfg = cfg
        self.device = du.resolve_device(device)
        du.init_distributed(self.device)
        self.rank, self.world_size = du.get_rank(), du.get_world_size()
        self.is_main = self.rank == 0
        self.task = task if task is not None else build_task(cfg)
        self.work_dir = work_dir or os.path.join(cfg.train.output_dir, cfg.name or "run", cfg.exp_name)
        self.resume = resume
        self.hooks = list(hooks) + build_hooks(cfg.hooks)
        self.epoch = 0
        self.global_step = 0
        self.best: Dict[str, Any] = {"epoch": None, "value": None, "metrics": {}}
        self.history: list = []
        self.writer: Optional[RunWriter] = None

    # ------------------------------------------------------------------ setup
    @property
    def ckpt_last(self) -> str:
        return os.path.join(self.work_dir, "ckpt-last.pth")

    @property
    def ckpt_best(self) -> str:
        return os.path.join(self.work_dir, "ckpt-best.pth")

    @property
    def select_split(self) -> Optional[str]:
        """Where the checkpoint is chosen: val (clean), test (peer), or None (train loss)."""
        return "val" if "val" in self.loaders else None

    def setup(self) -> None:
        cfg = self.cfg
        if self.resume and not os.path.isfile(self.ckpt_last):
            raise FileNotFoundError(f"nothing to resume: {self.ckpt_last} not found")
        if not self.resume and not cfg.train.overwrite and os.path.isfile(self.ckpt_last):
            raise ValueError(f"{self.work_dir} already holds a run: pass --resume to continue it, "
                             f"--exp-name NAME for a new one, or train.overwrite=true")
        du.barrier()  # every rank has checked before rank 0 writes anything
        setup_logging(os.path.join(self.work_dir, "log.txt"), self.is_main)
        if self.is_main:
            save_config(cfg, os.path.join(self.work_dir, "config.yaml"))
        if cfg.ops:
            from ..ops import set_backend

            for op, backend in cfg.ops.items():
                set_backend(op, backend)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

        seed_everything(cfg.train.seed)
        self.datasets = self.task.build_datasets()
        seed_everything(cfg.train.seed)  # the same initial weights on every rank
        self.module = self.task.build_model(self.datasets)
        if cfg.pretrained and not self.resume:
            self.task.load_pretrained(self.module, cfg.pretrained)
        self.module.to(self.device)
        self.net = torch.compile(self.module) if cfg.train.compile else self.module
        self.model = self.net
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids,
                                                 find_unused_parameters=cfg.train.find_unused_parameters)
        self.loaders = self._build_loaders()
        self.steps_per_epoch = len(self.loaders["train"])
        self.optimizer = build_optimizer(self.module, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, self.steps_per_epoch)
        cuda = self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=cuda and cfg.train.precision == "fp16")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.precision)
        self.writer = RunWriter(self.work_dir, enabled=self.is_main)
        seed_everything(cfg.train.seed + self.rank)  # augmentations and masks differ between ranks
        if self.resume:
            self._load_resume()
        n_params = sum(p.numel() for p in self.module.parameters())
        logger.info("task %s | model %s (%.2fM parameters) | %d train samples, %d steps/epoch | world %d on %s"
                    " | protocol %s | %s", self.task.name, cfg.model.name, n_params / 1e6,
                    len(self.datasets["train"]), self.steps_per_epoch, self.world_size, self.device,
                    cfg.eval.protocol, self.work_dir)

    def _build_loaders(self) -> Dict[str, DataLoader]:
        cfg = self.cfg.data
        for name, size in (("data.batch_size", cfg.batch_size), ("data.eval_batch_size", cfg.eval_batch_size)):
            if size is not None and size % self.world_size:
                raise ValueError(f"{name}={size} does not split evenly over {self.world_size} processes")
        per_rank = cfg.batch_size // self.world_size
        eval_per_rank = (cfg.eval_batch_size or cfg.batch_size) // self.world_size
        pin = self.device.type == "cuda"
        common = dict(num_workers=cfg.num_workers, pin_memory=pin, persistent_workers=cfg.num_workers > 0)
        train: Dataset = self.datasets["train"]
        self.train_sampler = DistributedSampler(train, num_replicas=self.world_size, rank=self.rank,
                                                shuffle=True, seed=self.cfg.train.seed)
        loaders = {"train": DataLoader(train, batch_size=per_rank, sampler=self.train_sampler,
                                       drop_last=True, **common)}
        if len(loaders["train"]) == 0:
            raise ValueError(f"the train split has {len(train)} samples, fewer than one batch of {per_rank} "
                             f"per process: lower data.batch_size")
        for split in ("val", "test"):
            if split in self.datasets:
                ds = self.datasets[split]
                loaders[split] = DataLoader(ds, batch_size=eval_per_rank, sampler=du.ShardSampler(len(ds)),
                                            **common)
        return loaders

    # ------------------------------------------------------------------ loop
    def _autocast(self):
        if self.device.type == "cuda" and self.amp_dtype is not None:
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def _call_hooks(self, event: str, *args) -> None:
        for hook in self.hooks:
            if self.is_main or not hook.main_process_only:
                getattr(hook, event)(self, *args)

    def fit(self) -> Dict[str, Any]:
        """Train for ``optim.epochs``, pick the checkpoint by the protocol, score the test set once."""
        self.setup()
        try:
            self._call_hooks("before_train")
            for epoch in range(self.epoch, self.cfg.optim.epochs):
                self.epoch = epoch
                self._run_epoch()
            results = self._final_test()
            self._call_hooks("after_train", results)
            return results
        finally:
            if self.writer is not None:
                self.writer.close()
            close_log_file()

    def _run_epoch(self) -> None:
        cfg, epoch = self.cfg, self.epoch
        start = time.time()
        self._call_hooks("before_epoch")
        train_metrics = self.train_one_epoch()
        entry: Dict[str, Any] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                                 "train": train_metrics}
        split, value = self.select_split, None
        last = epoch + 1 == cfg.optim.epochs
        if split is None:
            value = train_metrics.get(self.task.monitor)
        elif (epoch + 1) % cfg.train.eval_every == 0 or last:
            entry[self._split_label(split)] = self.evaluate(split)
            value = entry[self._split_label(split)][self.task.monitor]
        improved = value is not None and (self.best["value"] is None or (
            value > self.best["value"] if self.task.monitor_mode == "max" else value < self.best["value"]))
        if improved:
            self.best = {"epoch": epoch + 1, "value": value, "metrics": dict(entry)}
        entry["time_s"] = round(time.time() - start, 2)
        self.history.append(entry)
        self.epoch = epoch + 1  # the checkpoint records the next epoch to run
        self.save_checkpoint(best=improved)
        self.epoch = epoch
        if self.writer is not None:
            self.writer.scalars(train_metrics, epoch + 1, "epoch/train_")
            for k in ("val", "test"):
                self.writer.scalars(entry.get(k, {}), epoch + 1, f"epoch/{k}_")
            self.writer.write_json(self._summary())
        evals = " ".join(format_metrics(entry[k], f"{k}_") for k in ("val", "test") if k in entry)
        logger.info("epoch %d/%d | %s %s | lr %.3g | best %s %s at epoch %s | %.1fs | protocol %s",
                    epoch + 1, cfg.optim.epochs, format_metrics(train_metrics, "train_"), evals, entry["lr"],
                    self.task.monitor, _fmt(self.best["value"]), self.best["epoch"], entry["time_s"],
                    cfg.eval.protocol)
        self._call_hooks("after_epoch", entry)

    def _split_label(self, split: str) -> str:
        """The peer protocol selects on the test set (its "val" split is the test set): label it ``test``."""
        return "test" if split == "val" and self.datasets.get("val") is self.datasets.get("test") else split

    def train_one_epoch(self) -> Dict[str, float]:
        cfg = self.cfg
        self.model.train()
        self.train_sampler.set_epoch(self.epoch)
        totals: Dict[str, float] = {}
        bar = tqdm(self.loaders["train"], desc=f"epoch {self.epoch + 1}/{cfg.optim.epochs}", leave=False,
                   dynamic_ncols=True, disable=not (self.is_main and cfg.train.progress))
        for step, batch in enumerate(bar):
            self.scheduler.step_update(self.global_step)
            batch = to_device(batch, self.device)
            with self._autocast():
                loss, logs = self.task.train_step(self.model, batch)
            loss_value = du.all_reduce_mean(loss.detach().float()).item()
            if not math.isfinite(loss_value):
                kept = self.ckpt_last if os.path.isfile(self.ckpt_last) else "none written yet"
                raise NonFiniteLossError(
                    f"loss is {loss_value} at epoch {self.epoch + 1}, step {step + 1} (global step "
                    f"{self.global_step + 1}); stopped before applying it; last good checkpoint: {kept}")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.optim.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.module.parameters(), cfg.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.global_step += 1
            step_logs = {"loss": loss_value, "lr": self.optimizer.param_groups[0]["lr"],
                         **{k: float(v) for k, v in logs.items()}}
            for k, v in step_logs.items():
                totals[k] = totals.get(k, 0.0) + v
            bar.set_postfix(loss=f"{loss_value:.4g}", lr=f"{step_logs['lr']:.2e}")
            if self.writer is not None:
                self.writer.scalars(step_logs, self.global_step, "train/")
            self._call_hooks("after_step", step_logs)
        du.broadcast_buffers(self.module)
        n = max(len(self.loaders["train"]), 1)
        return {k: v / n for k, v in totals.items() if k != "lr"}

    @torch.no_grad()
    def evaluate(self, split: str, views: int = 1) -> Dict[str, float]:
        """Score ``split`` (every rank its shard; sums gathered, then the task's summary)."""
        self.net.eval()
        sums: Dict[str, torch.Tensor] = {}
        for batch in self.loaders[split]:
            batch = to_device(batch, self.device)
            with self._autocast():
                out = self.task.eval_step(self.net, batch, views=views)
            for k, v in out.items():
                v = v.detach().cpu()
                v = v.double() if v.is_floating_point() else v.long()
                sums[k] = sums[k] + v if k in sums else v
        if self.world_size > 1:
            gathered = [None] * self.world_size
            dist.all_gather_object(gathered, sums)
            sums = {}
            for part in gathered:
                for k, v in part.items():
                    sums[k] = sums[k] + v if k in sums else v
        return self.task.summarize(sums)

    # ------------------------------------------------------------------ results
    def _final_test(self) -> Dict[str, Any]:
        results = self._summary()
        if "test" in self.loaders:
            if self.best["epoch"] is not None:
                self._load_best_weights()
            results["test"] = self.evaluate("test")
            if self.cfg.eval.vote > 1:
                results["test_vote"] = self.evaluate("test", views=self.cfg.eval.vote)
                results["test_vote"]["views"] = self.cfg.eval.vote
            how = {"clean": f"checkpoint chosen on {self.task.monitor} of a validation split held out of train",
                   "peer": f"checkpoint chosen on test {self.task.monitor} (the peers' habit)"}
            results["protocol_note"] = how[self.cfg.eval.protocol]
            logger.info("test %s%s | epoch %s | protocol %s: %s", format_metrics(results["test"]),
                        f" | vote x{self.cfg.eval.vote} {format_metrics(results['test_vote'])}"
                        if "test_vote" in results else "", self.best["epoch"], self.cfg.eval.protocol,
                        results["protocol_note"])
        if self.writer is not None:
            self.writer.write_json(results)
        return results

    def _summary(self) -> Dict[str, Any]:
        return {"protocol": self.cfg.eval.protocol, "task": self.task.name, "config": self.cfg.name,
                "exp_name": self.cfg.exp_name, "work_dir": os.path.abspath(self.work_dir),
                "epochs_done": len(self.history), "selection": {
                    "split": self._split_label(self.select_split) if self.select_split else "train",
                    "metric": self.task.monitor, "mode": self.task.monitor_mode},
                "best": self.best, "history": self.history,
                **({"probe": self.cfg.train.probe} if self.cfg.train.probe else {})}

    def _load_best_weights(self) -> None:
        """Rank 0 reads ckpt-best.pth and hands the weights to every rank (no shared disk needed)."""
        state = [load_file(self.ckpt_best)["model"] if self.is_main else None]
        if du.is_distributed():
            dist.broadcast_object_list(state, src=0)
        self.module.load_state_dict(state[0])

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, best: bool = False) -> None:
        rng = get_rng_state(self.module)
        rngs = [rng]
        if self.world_size > 1:
            rngs = [None] * self.world_size
            dist.all_gather_object(rngs, rng)
        if not self.is_main:
            return
        ckpt = {
            "model": unwrap_model(self.module).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best": self.best,
            "history": self.history,
            "rng": rngs,
            "config": config_to_dict(self.cfg),
            "meta": {"task": self.task.name, "model": self.cfg.model.name, "protocol": self.cfg.eval.protocol,
                     "pointmap_version": __version__, "world_size": self.world_size},
        }
        atomic_save(ckpt, self.ckpt_last)
        if best:
            atomic_save(ckpt, self.ckpt_best)

    def _load_resume(self) -> None:
        ckpt = load_file(self.ckpt_last)
        self.module.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.global_step = ckpt["epoch"], ckpt["global_step"]
        self.best, self.history = ckpt["best"], ckpt["history"]
        rngs = ckpt["rng"]
        set_rng_state(rngs[self.rank] if len(rngs) == self.world_size else rngs[0], self.module)
        logger.info("resumed %s at epoch %d (global step %d)", self.ckpt_last, self.epoch, self.global_step)


def _fmt(v: Optional[float]) -> str:
    return "-" if v is None else (f"{v:.2f}" if abs(v) >= 1 else f"{v:.4g}")
