"""One Trainer for every task: the loop, optimization and the evaluation protocol's final test.

What differs between pretraining, classification and segmentation lives in a task object
(:mod:`pointmap.engine.tasks`); what happens after an epoch (evaluation, best-epoch selection, the log
line, checkpoints) lives in hooks (:mod:`pointmap.engine.hooks`, the defaults configurable from the
config's ``hooks``); the run folder is a :class:`~pointmap.engine.rundir.RunDir`.
``Trainer(cfg).fit()`` is everything a tool does.

The loop never waits for the device between steps: losses add up on the device, a non-finite loss or
gradient skips its optimizer step there (fused AdamW's ``found_inf``, as GradScaler drives it), and the
sums are read once per ``train.log_every`` steps, where a non-finite loss stops the run.
"""
from __future__ import annotations

import contextlib
import logging
import random
import time
from typing import Any, Callable, Dict, Iterable, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..config import Config, config_to_dict
from ..errors import UserError, one_line
from ..version import __version__
from . import distributed as du
from .checkpoint import get_rng_state, load_file, set_rng_state, unwrap_model
from .datasets import to_device
from .hooks import DEFAULT_HOOKS, Hook, build_hooks
from .logging import RunWriter, format_metrics
from .loop import OptimizerStep, StepMeter, build_loaders
from .metrics import best_round
from .optim import LRSchedule, build_optimizer
from .rundir import InterruptGuard, RunDir, RunInterrupted, command_line
from .tasks import Task, build_task

__all__ = ["Trainer", "NonFiniteLossError", "seed_everything"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(UserError, FloatingPointError):
    """The loss became NaN/inf (the run diverged); its optimizer step was skipped and training stopped at
    the next log."""


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
        kw = dict(resume=resume, overwrite=cfg.train.overwrite, main=self.is_main)
        self.run = RunDir(work_dir, **kw) if work_dir else RunDir.of(cfg, **kw)
        self.resume = resume
        self.hooks = build_hooks(cfg.hooks, DEFAULT_HOOKS) + list(hooks)
        self.epoch = 0
        self.start_step = 0  # steps of ``epoch`` already done (a run interrupted mid-epoch)
        self.global_step = 0
        self.best: Dict[str, Any] = {"epoch": None, "value": None, "metrics": {}}
        self.best_saved: Optional[int] = None  # the epoch ckpt-best.pth holds
        self.history: list = []
        self.writer: Optional[RunWriter] = None
        self.selection: Dict[str, Any] = {}
        self._guard: Optional[InterruptGuard] = None
        self._stop = False
        self._rng_after_iter: Optional[Dict[str, Any]] = None
        self._epoch_start = time.time()

    # ------------------------------------------------------------------ setup
    @property
    def work_dir(self) -> str:
        return self.run.path

    @property
    def ckpt_last(self) -> str:
        return self.run.ckpt_last

    @property
    def ckpt_best(self) -> str:
        return self.run.ckpt_best

    @property
    def select_split(self) -> Optional[str]:
        """Where the checkpoint is chosen: val (clean), test (peer), or None (train metrics)."""
        return "val" if "val" in self.datasets else None

    def split_label(self, split: str) -> str:
        """The peer protocol selects on the test set (its "val" split is the test set): label it ``test``."""
        return "test" if split == "val" and self.datasets.get("val") is self.datasets.get("test") else split

    def setup(self) -> None:
        cfg = self.cfg
        self.run.check(can_resume=self.task.trains)
        du.barrier()  # every rank has checked before rank 0 writes anything
        self.run.open(cfg, device=self.device, world_size=self.world_size, check=False)
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
        if self.world_size > 1 and self.task.trains:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids,
                                                 find_unused_parameters=cfg.train.find_unused_parameters)
        split = self.select_split
        self.selection = {"split": self.split_label(split) if split else "train", "metric": self.task.monitor,
                          "mode": self.task.monitor_mode}
        self.loaders, self.train_sampler = build_loaders(self.datasets, cfg, self.device, self.task.trains)
        self.steps_per_epoch = len(self.loaders["train"]) if self.task.trains else 0
        self.optimizer = build_optimizer(self.module, cfg.optim)
        self.scheduler = LRSchedule(self.optimizer, cfg.optim, self.steps_per_epoch)
        cuda = self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=cuda and cfg.train.precision == "fp16")
        self.optimizer_step = OptimizerStep(self.optimizer, self.scaler, self.module.parameters(),
                                            cfg.optim.grad_clip, cfg.optim.steps_per_batch)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.precision)
        self.meter = StepMeter(self.device)
        self.writer = RunWriter(self.work_dir, enabled=self.is_main)
        seed_everything(cfg.train.seed + self.rank)  # augmentations and masks differ between ranks
        if self.resume and self.task.trains:
            self._load_resume()
        n_params = sum(p.numel() for p in self.module.parameters())
        logger.info("task %s | model %s (%.2fM parameters) | %d train samples, %d steps/epoch | world %d on %s"
                    " | protocol %s | %s", self.task.name, cfg.model.name, n_params / 1e6,
                    len(self.datasets["train"]), self.steps_per_epoch, self.world_size, self.device,
                    cfg.eval.protocol, self.work_dir)

    # ------------------------------------------------------------------ sessions
    def fit(self) -> Dict[str, Any]:
        """Train for ``optim.loop_epochs``, pick the checkpoint by the protocol, score the test set once."""
        return self._session(self._fit)

    def score(self, ckpt: str) -> Dict[str, Any]:
        """Score the weights of pointmap checkpoint ``ckpt`` on the test split (with the config's voting),
        into this trainer's run folder: what ``--eval`` does."""
        return self._session(lambda: self._score(ckpt))

    def _session(self, body: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
        """Run ``body`` with SIGINT/SIGTERM turned into a clean stop; meta.json records how it ended."""
        try:
            with InterruptGuard() as self._guard:
                results = body()
            self.run.close("finished", steps=self.global_step)
            return results
        except KeyboardInterrupt:
            self.run.close("interrupted", steps=self.global_step)
            raise
        except BaseException as e:
            if self.run.opened:
                self.run.close("failed", e, steps=self.global_step)
            raise
        finally:
            self._guard = None
            if self.writer is not None:
                self.writer.close()

    def _fit(self) -> Dict[str, Any]:
        self.setup()
        if not self.task.trains:  # a closed-form task (the SVM probe): no loop
            results = self.task.solve(self)
            self.run.write_json(results)
        else:
            self._call_hooks("before_train")
            for epoch in range(self.epoch, self.cfg.optim.loop_epochs):
                self.epoch = epoch
                self._epoch_start = time.time()
                self._call_hooks("before_epoch")
                entry = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                         "train": self.train_one_epoch()}
                self.scheduler.after_epoch(epoch)
                self.history.append(entry)
                self._call_hooks("after_epoch", entry)  # evaluate, best, log, checkpoint, then the rest
            results = self.test()
        if self.writer is not None:
            self.writer.hparams(config_to_dict(self.cfg), results)
        self._call_hooks("after_train", results)
        return results

    def _score(self, ckpt: str) -> Dict[str, Any]:
        from ..models import checkpoint_state, load_state, read_checkpoint, resolve_pretrained

        self.setup()
        card, path = resolve_pretrained(ckpt)  # a file, an exported folder or a published entry
        raw = read_checkpoint(path)  # every tensor of the model must come from it, the head too
        load_state(self.module, checkpoint_state(raw, path), path, card.format if card else "auto", whole=True)
        results = self.test(use_best=False)
        results.update(evaluated=ckpt, tested_epoch=raw.get("epoch"))  # the epochs behind those weights
        self.run.write_json(results)
        return results

    def _call_hooks(self, event: str, *args) -> None:
        for hook in self.hooks:
            if self.is_main or not hook.main_process_only:
                getattr(hook, event)(self, *args)

    def epoch_time(self) -> float:
        return time.time() - self._epoch_start

    # ------------------------------------------------------------------ loop
    def _autocast(self):
        if self.device.type == "cuda" and self.amp_dtype is not None:
            return torch.autocast("cuda", dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def train_one_epoch(self) -> Dict[str, float]:
        cfg, steps = self.cfg, self.steps_per_epoch
        self.model.train()
        first, self.start_step = self.start_step, 0
        self.train_sampler.set_epoch(self.epoch)
        self.train_sampler.skip = first * self.loaders["train"].batch_size
        batches = iter(self.loaders["train"])
        if self._rng_after_iter is not None:  # resumed mid-epoch: the state when it stopped, after this draw
            set_rng_state(self._rng_after_iter, self.module)
            self._rng_after_iter = None
        bar = tqdm(total=steps, initial=first, desc=f"epoch {self.epoch + 1}/{cfg.optim.loop_epochs}", leave=False,
                   dynamic_ncols=True, disable=not (self.is_main and cfg.train.progress))
        for step in range(first, steps):
            if self._stop or (self.world_size == 1 and self._guard is not None and self._guard.received):
                self._interrupt(step, bar)
            self.scheduler.before_step(self.global_step)
            batch = to_device(next(batches), self.device)
            with self._autocast():
                loss, logs = self.task.train_step(self.model, batch)
            finite_loss, applied = self.optimizer_step(loss)
            self.global_step += 1
            self.meter.add(loss.detach(), logs, finite_loss, applied, self.global_step)
            self._call_hooks("after_step", {"loss": loss.detach(), "lr": self.optimizer.param_groups[0]["lr"], **logs})
            bar.update()
            if (step + 1) % cfg.train.log_every == 0 or step + 1 == steps:
                self._log(step + 1, bar)
        bar.close()
        du.broadcast_buffers(self.module)
        return self.meter.end_epoch(steps)

    def _log(self, step: int, bar: Any) -> None:
        """The one read of the device per log interval: the interval's means, then the NaN stop."""
        stop = self._guard is not None and self._guard.received is not None
        logs, bad = self.meter.read(step, stop if self.world_size > 1 else None)
        if bad is not None:
            g = bad["global_step"]
            where = (f"at epoch {(g - 1) // self.steps_per_epoch + 1}, step {(g - 1) % self.steps_per_epoch + 1} "
                     f"(global step {g})") if g > 0 else "on another process"
            kept = self.ckpt_last if self.run.has_checkpoint() else "none written yet"
            raise NonFiniteLossError(
                f"loss is {bad['loss']} {where}; stopped before applying it (its optimizer step was skipped), "
                f"at the log of epoch {self.epoch + 1} step {step}; last good checkpoint: {kept}")
        self._stop = self._stop or bool(logs.pop("stop", 0.0))
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        bar.set_postfix(loss=f"{logs['loss']:.4g}", lr=f"{logs['lr']:.2e}")
        if self.writer is not None:
            self.writer.scalars(logs, self.global_step, "train/")
        self._call_hooks("after_log", logs)

    def _interrupt(self, step: int, bar: Any) -> None:
        """Stop before ``step``: check the sums, save the exact point reached, say how to continue."""
        if step % self.cfg.train.log_every:
            self._log(step, bar)
        bar.close()
        self.save_checkpoint(epoch=self.epoch, step=step, rng_after_iter=True)
        raise RunInterrupted(self.epoch + 1, step, command_line(resume=True))

    @torch.no_grad()
    def evaluate(self, split: str, views: int = 1) -> Dict[str, float]:
        """Score ``split`` (every rank its shard; sums gathered, then the task's summary)."""
        self.net.eval()
        sums: Dict[str, torch.Tensor] = {}
        for batch in self.loaders[split]:
            batch = to_device(batch, self.device)
            with self._autocast():
                out = self.task.eval_step(self.net, batch, views=views)
            du.add_sums(sums, {k: v.detach().double() if v.is_floating_point() else v.detach().long()
                            for k, v in out.items()})
        sums = {k: v.cpu() for k, v in sums.items()}  # one read of the device per evaluation
        return self.task.summarize(du.gather_sums(sums))

    # ------------------------------------------------------------------ results
    def test(self, use_best: bool = True) -> Dict[str, Any]:
        """Score the test split once (with the best epoch's weights when ``use_best`` and one was saved)."""
        results = self.summary()
        if "test" in self.loaders:
            results["tested_epoch"] = len(self.history)  # the weights scored: the last epoch's, or the best's
            if use_best and self.best_saved is not None:
                self._load_best_weights()
                results["tested_epoch"] = self.best_saved
            results["test"] = self.evaluate("test")
            e = self.cfg.eval
            if e.vote > 1:  # one pass, or the best of vote_rounds passes (the peer protocol's --test)
                split = "vote" if "vote" in self.loaders else "test"
                results["test_vote"] = best_round([self.evaluate(split, views=e.vote) for _ in range(e.vote_rounds)],
                                                  self.task.monitor, self.task.monitor_mode)
                results["test_vote"]["views"] = e.vote
            how = {"clean": f"checkpoint chosen on {self.task.monitor} of a validation split held out of train",
                   "peer": f"checkpoint chosen on test {self.task.monitor} (the peers' habit)"}
            results["protocol_note"] = how[self.cfg.eval.protocol]
            logger.info("test %s%s | epoch %s | protocol %s: %s", format_metrics(results["test"]),
                        f" | vote x{self.cfg.eval.vote} {format_metrics(results['test_vote'])}"
                        if "test_vote" in results else "", results["tested_epoch"], self.cfg.eval.protocol,
                        results["protocol_note"])
        self.run.write_json(results)
        return results

    def summary(self) -> Dict[str, Any]:
        return {"protocol": self.cfg.eval.protocol, "task": self.task.name, "config": self.cfg.name,
                "exp_name": self.cfg.exp_name, "work_dir": self.run.abspath, "epochs_done": len(self.history),
                "selection": dict(self.selection), "best": self.best, "history": self.history,
                **({"probe": self.cfg.train.probe} if self.cfg.train.probe else {})}

    def _load_best_weights(self) -> None:
        """Rank 0 reads ckpt-best.pth and hands the weights to every rank (no shared disk needed)."""
        state = [load_file(self.ckpt_best)["model"] if self.is_main else None]
        if du.is_distributed():
            dist.broadcast_object_list(state, src=0)
        self.module.load_state_dict(state[0])

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, epoch: int, step: int = 0, last: bool = True, best: bool = False,
                        rng_after_iter: bool = False) -> None:
        """The state before step ``step`` of epoch ``epoch`` (0-based; step 0: the epoch's start), on
        every rank's call; rank 0 writes it to ckpt-last.pth (``last``) and ckpt-best.pth (``best``).
        ``rng_after_iter``: saved inside the epoch, after its loader iterator drew its seed."""
        rng = get_rng_state(self.module)
        rngs = [rng]
        if self.world_size > 1:
            rngs = [None] * self.world_size
            dist.all_gather_object(rngs, rng)
        if best:
            self.best_saved = self.best["epoch"]
        ckpt = {
            "model": unwrap_model(self.module).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "step_in_epoch": step,
            "rng_after_iter": rng_after_iter,
            "epoch_sums": self.meter.state() if step else None,
            "global_step": self.global_step,
            "best": self.best,
            "best_saved": self.best_saved,
            "history": self.history,
            "rng": rngs,
            "config": config_to_dict(self.cfg),
            "meta": {"task": self.task.name, "model": self.cfg.model.name, "protocol": self.cfg.eval.protocol,
                     "pointmap_version": __version__, "world_size": self.world_size},
        }
        self.run.save_checkpoint(ckpt, last=last, best=best)

    def _load_resume(self) -> None:
        ckpt = load_file(self.ckpt_last)
        self.module.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.global_step = ckpt["epoch"], ckpt["global_step"]
        self.start_step = ckpt.get("step_in_epoch", 0)
        self.best, self.history = ckpt["best"], ckpt["history"]
        self.best_saved = ckpt.get("best_saved", self.best["epoch"])
        if ckpt.get("epoch_sums") is not None:
            self.meter.load(ckpt["epoch_sums"])
        rngs = ckpt["rng"]
        rng = rngs[self.rank] if len(rngs) == self.world_size else rngs[0]
        set_rng_state(rng, self.module)
        if ckpt.get("rng_after_iter"):
            self._rng_after_iter = rng  # the epoch's loader iterator draws once more before it applies
        logger.info("resumed %s at epoch %d step %d (global step %d)", self.ckpt_last, self.epoch + 1,
                    self.start_step, self.global_step)
