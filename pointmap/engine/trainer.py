"""One Trainer for every task: the loop, optimization and the evaluation protocol's final test.

What differs between pretraining, classification and segmentation lives in a task object
(:mod:`pointmap.engine.tasks`); what happens after an epoch (evaluation, best-epoch selection, the log
line, checkpoints) lives in hooks (:mod:`pointmap.engine.hooks`, the defaults configurable from the
config's ``hooks``), which read the run's :class:`~pointmap.engine.state.TrainState` and return decisions
the Trainer applies; checkpoints are a :class:`~pointmap.engine.checkpoint.Checkpointer`'s; the run folder
is a :class:`~pointmap.engine.rundir.RunDir`; signals and process-wide settings belong to the session's
:class:`~pointmap.engine.scope.ProcessScope`. ``Trainer(cfg).fit()`` is everything a tool does.

The loop never waits for the device between steps: losses add up on the device, a non-finite loss or
gradient skips its optimizer step there (fused AdamW's ``found_inf``, as GradScaler drives it), and the
sums are read once per ``train.log_every`` steps, where a non-finite loss stops the run.
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

import torch

from ..config import Config, as_trained, config_to_dict
from ..version import __version__
from . import distributed as du
from .checkpoint import Checkpointer, backend_record, load_best_weights, load_weights, set_rng_state
from .datasets import to_device
from .ema import build_ema
from .hooks import DEFAULT_HOOKS, Decision, Hook, build_hooks
from .logging import Progress, RunWriter, format_metrics
from .loop import NonFiniteLossError, OptimizerStep, StepMeter, autocast, build_loaders, evaluate
from .metrics import best_round, protocol_note
from .optim import LRSchedule, build_optimizer
from .resume import check_resume, resumed_step
from .rng import evaluation_seed, kept_rng, seed_everything
from .rundir import RunDir, RunInterrupted, command_line
from .scope import ProcessScope
from .state import TrainState
from .tasks import Task, build_task

__all__ = ["Trainer", "NonFiniteLossError", "seed_everything"]

logger = logging.getLogger(__name__)


class Trainer:
    """Runs ``cfg`` with ``task`` (built from ``cfg.task`` when None) into ``work_dir`` (default
    ``<cfg.train.output_dir>/<cfg.name>/<cfg.exp_name>``). ``resume=True`` continues from
    ``ckpt-last.pth`` there. Works the same in one process and under torchrun (DDP; rank 0 writes).

    Three handles on the one model: ``module`` is the model itself (its weights and the optimizer's
    parameters, what checkpoints hold and hooks read); ``eval_model`` is ``module`` as evaluation runs it,
    compiled by torch.compile under ``train.compile``; ``train_model`` is ``eval_model`` as training steps
    run it, wrapped in DDP under torchrun. How far the run has come is ``state``."""

    def __init__(self, cfg: Config, task: Optional[Task] = None, *, work_dir: Optional[str] = None,
                 device: str = "auto", resume: bool = False, force: bool = False, hooks: Iterable[Hook] = ()):
        self.device = du.resolve_device(device)
        self.cfg = cfg = as_trained(cfg, self.device.type)  # config.yaml says the precision the run trains in
        du.init_distributed(self.device)
        self.rank, self.world_size = du.get_rank(), du.get_world_size()
        self.is_main = self.rank == 0
        self.task = task if task is not None else build_task(cfg)
        kw = dict(resume=resume, overwrite=cfg.train.overwrite, main=self.is_main)
        self.run = RunDir(work_dir, **kw) if work_dir else RunDir.of(cfg, **kw)
        self.resume, self.force = resume, force  # force: resume even where the config changed what is trained
        self.hooks = build_hooks(cfg.hooks, DEFAULT_HOOKS) + list(hooks)
        self.state = TrainState()
        self.scope = ProcessScope()  # entered by fit() / score(): signals, ops overrides, determinism, logs
        self.writer: Optional[RunWriter] = None
        self._stop = False  # under DDP: a stop request every rank has agreed on at a log point
        self._epoch_start = time.time()

    # ------------------------------------------------------------------ what hooks read (and state)
    @property
    def work_dir(self) -> str:
        return self.run.path

    def epoch_time(self) -> float:
        return time.time() - self._epoch_start

    # ------------------------------------------------------------------ setup
    def setup(self, train: bool = True, weights: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """Build everything and resume; fit() and score() call it in the run's process scope (called alone, what
        it sets for the process, ``ops`` and determinism, stays). Every input is read before the run folder is
        made; ``weights`` (score()'s checkpoint) too: every tensor of the model from it, the file returned."""
        cfg, state = self.cfg, self.state
        self.task.check_inputs()
        self.run.check(can_resume=self.task.trains)
        self.run.hold_log()  # every input is read before the folder is made; log.txt still gets these lines
        resumed = (check_resume(self.run.ckpt_last, cfg, self.world_size, self.force)
                   if self.resume and self.task.trains else None)
        self.scope.configure(cfg.ops, cfg.train.deterministic, cfg.train.cpu_threads)
        seed_everything(cfg.train.seed)
        self.datasets = self.task.build_datasets()
        seed_everything(cfg.train.seed)  # the same initial weights on every rank
        self.module = self.task.build_model(self.datasets)
        if cfg.pretrained and not self.resume:
            self.task.load_pretrained(self.module, cfg.pretrained)
        raw = load_weights(self.module, weights) if weights else None  # a file, an exported folder, an entry
        self.module.to(self.device)
        self.eval_model = torch.compile(self.module) if cfg.train.compile else self.module
        self.train_model = (du.wrap_ddp(self.eval_model, self.device, cfg.train.find_unused_parameters)
                            if self.task.trains else self.eval_model)
        # where the checkpoint is chosen: val (clean), test (peer: its "val" split is the test set, and says so),
        # or on the train metrics; select_split is the loader that evaluation runs
        self.select_split = "val" if "val" in self.datasets else None
        label = "test" if self.datasets.get("val") is self.datasets.get("test") else "val"
        state.selection = {"split": label if self.select_split else "train", "metric": self.task.monitor,
                           "mode": self.task.monitor_mode}
        trains = self.task.trains and train  # score() (--eval) trains nothing: no train loader
        self.loaders, self.train_sampler = build_loaders(self.datasets, cfg, self.device, trains)
        self.steps_per_epoch = len(self.loaders["train"]) if trains else 0
        self.ema = build_ema(self.module, cfg.train.ema_decay)  # train.ema_decay: the averaged weights, or None
        self.optimizer = build_optimizer(self.module, cfg.optim, cfg.data.batch_size)
        self.scheduler = LRSchedule(self.optimizer, cfg.optim, self.steps_per_epoch)
        cuda = self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=cuda and cfg.train.precision == "fp16")
        self.optimizer_step = OptimizerStep(self.optimizer, self.scaler, self.module.parameters(),
                                            cfg.optim.grad_clip, cfg.optim.steps_per_batch)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.precision)
        du.barrier()  # every rank has read its inputs before rank 0 writes anything
        self.run.open(cfg, device=self.device, world_size=self.world_size, check=False,
                      resumed=resumed.record() if resumed is not None else None)
        state.meter = StepMeter(self.device)
        self.writer = RunWriter(self.work_dir, enabled=self.is_main)
        meta = {"task": self.task.name, "model": cfg.model.name, "protocol": cfg.eval.protocol,
                "pointmap_version": __version__, "world_size": self.world_size}
        self.checkpointer = Checkpointer(self.run, self.module, self.optimizer, self.scheduler, self.scaler,
                                         config=config_to_dict(cfg), meta=meta, rank=self.rank, world_size=self.world_size,
                                         ema=self.ema)
        seed_everything(cfg.train.seed + self.rank)  # augmentations and masks differ between ranks
        if resumed is not None:
            self.checkpointer.resume(state, resumed.ckpt)
            # --force with another batch size: the epoch goes on after the samples trained so far
            state.step_in_epoch = resumed_step(state.step_in_epoch, resumed.saved_batch, cfg.data.batch_size)
        n_params = sum(p.numel() for p in self.module.parameters())
        sizes = ", ".join(f"{len(ds)} {split}" for split, ds in self.datasets.items() if split != "vote")
        does = (f"{self.steps_per_epoch} steps/epoch" if trains else  # --eval, or a probe fitted in closed form
                "no training: scores the test split" if self.task.trains else "no training loop: fits on features")
        logger.info("task %s | model %s (%.2fM parameters) | samples %s | %s | world %d on %s | protocol %s | %s",
                    self.task.name, cfg.model.name, n_params / 1e6, sizes, does, self.world_size, self.device,
                    cfg.eval.protocol, self.work_dir)
        return raw

    # ------------------------------------------------------------------ sessions
    def fit(self) -> Dict[str, Any]:
        """Train for ``optim.loop_epochs``, pick the checkpoint by the protocol, score the test set once."""
        return self._session(self._fit)

    def score(self, ckpt: str) -> Dict[str, Any]:
        """Score the weights of pointmap checkpoint ``ckpt`` on the test split (with the config's voting),
        into this trainer's run folder: what ``--eval`` does."""
        return self._session(lambda: self._score(ckpt))

    def _session(self, body: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
        """Run ``body`` in the run's process scope; meta.json records how it ended and the backends that ran."""
        with self.scope, self.run.closing(lambda: {"steps": self.state.global_step, **backend_record()}):
            try:
                return body()
            finally:
                if self.writer is not None:
                    self.writer.close()

    def _fit(self) -> Dict[str, Any]:
        self.setup()
        state, epochs = self.state, self.cfg.optim.loop_epochs
        if not self.task.trains:  # a closed-form task (the SVM probe): no loop
            results = self.task.solve(self)
            self._honour_stop("after the probe's fit")
            self.run.write_json(results)
        else:
            self._call_hooks("before_train")
            for epoch in range(state.epoch, epochs):
                state.epoch, self._epoch_start = epoch, time.time()
                self._call_hooks("before_epoch")
                entry = {"epoch": epoch + 1, "lr": self.scheduler.epoch_lr(epoch),  # its first and last step's
                         "lr_last": self.scheduler.epoch_lr(epoch, last=True), "train": self.train_one_epoch()}
                self.scheduler.after_epoch(epoch)
                state.history.append(entry)
                self._call_hooks("after_epoch", entry)  # evaluate, best, log, checkpoint, then the rest
                state.epoch = epoch + 1
                self.run.write_json(self.summary())
                self._honour_stop(f"at epoch {epoch + 2} step 0" if epoch + 1 < epochs else "before the final test",
                                  save_at=(epoch + 1, 0))
            results = self.test()
        if self.writer is not None:
            self.writer.hparams(config_to_dict(self.cfg), results)
        self._call_hooks("after_train", results)
        return results

    def _score(self, ckpt: str) -> Dict[str, Any]:
        raw = self.setup(train=False, weights=ckpt)
        if self.ema is not None and isinstance(raw.get("model_ema"), dict):  # train.ema_eval: the file's averaged weights
            self.ema.load_state_dict(raw["model_ema"])
        elif self.ema is not None:  # a file without them: nothing averaged to score
            self.ema = None
        results = self.test(use_best=False, tested_epoch=raw.get("epoch"))  # the epochs behind those weights
        results["evaluated"] = ckpt
        self.run.write_json(results)
        return results

    def _call_hooks(self, event: str, *args) -> None:
        # what hooks draw outside the steps (a picture's sample, a user's hook) leaves training's RNGs as they were
        with contextlib.nullcontext() if event in ("after_step", "after_log") else kept_rng(self.module):
            for hook in self.hooks:
                if self.is_main or not hook.main_process_only:
                    self._apply(getattr(hook, event)(self, *args), after_epoch=event == "after_epoch")

    def _apply(self, decision: Optional[Decision], after_epoch: bool) -> None:
        """A hook's decision: its record entries, selection, best epoch; checkpoints of the state reached."""
        if decision is None:
            return
        state = self.state
        if decision.record:
            state.history[-1].update(decision.record)
        state.selection.update(decision.selection)
        state.best = decision.best if decision.best is not None else state.best
        if decision.save_last or decision.save_best:
            self.checkpointer.save(state, state.epoch + after_epoch, last=decision.save_last, best=decision.save_best)

    def _honour_stop(self, where: str, save_at: Optional[Tuple[int, int]] = None) -> None:
        """If a stop was requested (under DDP: on any rank; one collective), ckpt-last.pth at ``save_at``
        (epoch, step) unless it holds that point already, then RunInterrupted saying ``where``."""
        stop = self._stop or self.scope.stop_requested is not None
        if self.world_size > 1:
            stop = bool(du.all_reduce_sum(torch.tensor(float(stop), device=self.device)).item())
        if not stop:
            return
        if save_at is not None and self.state.last_saved != save_at:
            self.checkpointer.save(self.state, *save_at)
        raise RunInterrupted(where, command_line(resume=True), self.scope.stop_requested)

    # ------------------------------------------------------------------ loop
    def train_one_epoch(self) -> Dict[str, float]:
        cfg, state, steps = self.cfg, self.state, self.steps_per_epoch
        self.train_model.train()
        first, state.step_in_epoch = state.step_in_epoch, 0
        self.train_sampler.set_epoch(state.epoch)
        self.train_sampler.skip = first * self.loaders["train"].batch_size
        batches = iter(self.loaders["train"])
        if state.rng_after_iter is not None:  # resumed mid-epoch: the state when it stopped, after this draw
            set_rng_state(state.rng_after_iter, self.module)
            state.rng_after_iter = None
        bar = Progress(steps, first, f"epoch {state.epoch + 1}/{cfg.optim.loop_epochs}", self.is_main and cfg.train.progress)
        for step in range(first, steps):
            if self._stop or (self.world_size == 1 and self.scope.stop_requested is not None):
                self._interrupt(step, bar)
            self.scheduler.before_step(state.global_step)
            batch = to_device(next(batches), self.device)
            with autocast(self.device, self.amp_dtype):
                loss, logs = self.task.train_step(self.train_model, batch)
            finite_loss, applied = self.optimizer_step(loss)
            if self.ema is not None:
                self.ema.update(self.module)
            state.global_step += 1
            state.meter.add(loss.detach(), logs, finite_loss, applied, state.global_step)
            self._call_hooks("after_step", {"loss": loss.detach(), "lr": self.optimizer.param_groups[0]["lr"], **logs})
            bar.update()
            if (step + 1) % cfg.train.log_every == 0 or step + 1 == steps:
                self._log(step + 1, bar)
        bar.close()
        du.broadcast_buffers(self.module)
        return state.meter.end_epoch(steps)

    def _log(self, step: int, bar: Any) -> None:
        """The one read of the device per log interval: the interval's means, then the NaN stop."""
        state = self.state
        logs, bad = state.meter.read(step, self.scope.stop_requested is not None if self.world_size > 1 else None)
        if bad is not None:
            kept = self.run.ckpt_last if self.run.has_checkpoint() else "none written yet"
            raise NonFiniteLossError.at(bad, self.steps_per_epoch, state.epoch, step, kept)
        self._stop = self._stop or bool(logs.pop("stop", 0.0))
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        bar.show(logs["loss"], logs["lr"])
        if self.writer is not None:
            self.writer.scalars(logs, state.global_step, "train/")
        self._call_hooks("after_log", logs)

    def _interrupt(self, step: int, bar: Any) -> None:
        """Stop before ``step``: check the sums, save the exact point reached, say how to continue."""
        if step % self.cfg.train.log_every:
            self._log(step, bar)
        bar.close()
        self.checkpointer.save(self.state, self.state.epoch, step, rng_after_iter=True)
        raise RunInterrupted(f"at epoch {self.state.epoch + 1} step {step}", command_line(resume=True),
                             self.scope.stop_requested)

    def evaluate(self, split: str, views: int = 1, index: int = 0, ema: bool = False) -> Dict[str, float]:
        """The task's metrics of ``split`` (every rank its shard), with ``views`` per cloud (voting); its draws come
        from pass ``index``'s fixed seed and leave training's RNGs as they were (:func:`~.rng.evaluation_seed`);
        ``ema``: of the averaged weights (``train.ema_decay``) instead of the model's."""
        seed = evaluation_seed(self.cfg.train.seed, self.rank, index)
        model = self.ema.module if ema else self.eval_model
        return evaluate(model, self.task, self.loaders[split], self.device, self.amp_dtype, views, seed)

    # ------------------------------------------------------------------ results
    def test(self, use_best: bool = True, tested_epoch: Optional[int] = None) -> Dict[str, Any]:
        """Score the test split once (with the best epoch's weights when ``use_best`` and one was saved)."""
        results, state, e = self.summary(), self.state, self.cfg.eval
        if "test" in self.loaders:  # the weights scored: the last epoch's, the best's, or a checkpoint's
            results["tested_epoch"] = len(state.history) if tested_epoch is None else tested_epoch
            if use_best and state.best_saved is not None:
                load_best_weights(self.module, self.run.ckpt_best)
                results["tested_epoch"] = state.best_saved
            results["test"] = self.evaluate("test")
            if self.ema is not None and self.cfg.train.ema_eval:  # the averaged weights as the last step left them
                results["test_ema"] = self.evaluate("test", ema=True)
            self._honour_stop("during the final test")
            if e.vote > 1:  # one pass, or the best of vote_rounds passes (the peer protocol's --test)
                split, rounds = "vote" if "vote" in self.loaders else "test", []
                for i in range(e.vote_rounds):
                    rounds.append(self.evaluate(split, views=e.vote, index=i))
                    self._honour_stop("during the final test")
                results["test_vote"] = {**best_round(rounds, self.task.monitor, self.task.monitor_mode), "views": e.vote}
            results["protocol_note"] = protocol_note(e.protocol, "checkpoint", self.task.monitor)
            logger.info("test %s%s | epoch %s | protocol %s: %s", format_metrics(results["test"]),
                        f" | vote x{e.vote} {format_metrics(results['test_vote'])}" if "test_vote" in results else "",
                        results["tested_epoch"], e.protocol, results["protocol_note"])
        self.run.write_json(results)
        return results

    def summary(self) -> Dict[str, Any]:
        s, cfg = self.state, self.cfg
        return {"protocol": cfg.eval.protocol, "task": self.task.name, "config": cfg.name, "exp_name": cfg.exp_name,
                "work_dir": self.run.abspath, "epochs_done": len(s.history), "selection": dict(s.selection),
                "best": s.best, "history": s.history, **({"probe": cfg.train.probe} if cfg.train.probe else {})}
