"""The pieces of the training loop that keep it from waiting on the device: loaders that can start
mid-epoch, the optimizer step that skips non-finite steps on the device, and the meter that adds up
losses there and is read once per log interval (where a non-finite loss stops the run)."""
from __future__ import annotations

import contextlib
import itertools
import logging
import math
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..config import Config
from ..errors import ConfigError, UserError
from . import distributed as du
from .datasets import to_device
from .rng import fixed_rng

__all__ = ["ResumableSampler", "RepeatedAugSampler", "build_loaders", "OptimizerStep", "total_norm", "StepMeter",
           "NonFiniteLossError", "autocast", "evaluate"]

logger = logging.getLogger(__name__)


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """Autocast to ``dtype`` on CUDA (``train.precision``); fp32 elsewhere or without a dtype."""
    if device.type == "cuda" and dtype is not None:
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


class NonFiniteLossError(UserError, FloatingPointError):
    """The loss became NaN/inf (the run diverged); its optimizer step was skipped and training stopped at
    the next log."""

    @classmethod
    def at(cls, bad: Dict[str, Any], steps_per_epoch: int, epoch: int, step: int, kept: str) -> "NonFiniteLossError":
        """The error for :meth:`StepMeter.read`'s ``bad`` found at the log of step ``step`` of epoch ``epoch``
        (0-based), naming the last good checkpoint ``kept``."""
        g = bad["global_step"]
        where = (f"at epoch {(g - 1) // steps_per_epoch + 1}, step {(g - 1) % steps_per_epoch + 1} (global step {g})"
                 if g > 0 else "on another process")
        return cls(f"loss is {bad['loss']} {where}; stopped before applying it (its optimizer step was skipped), "
                   f"at the log of epoch {epoch + 1} step {step}; last good checkpoint: {kept}")


class ResumableSampler(DistributedSampler):
    """DistributedSampler that leaves out the first ``skip`` indices of the epoch (a run resumed
    mid-epoch continues with exactly the batches it had not seen, without loading the others)."""

    skip = 0

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return super().__len__() - self.skip


class RepeatedAugSampler(ResumableSampler):
    """Repeated augmentation (``data.repeated_aug``), DeiT's RASampler as timm's RepeatAugSampler spells it: the
    epoch's shuffled order (seeded by ``seed + epoch``) with every index ``repeats`` times in a row, padded by
    wrapping to a multiple of the processes, dealt out round-robin (so a sample's copies go to different
    processes, each augmenting its own), and each process keeps its first ``floor(len / round_to) * round_to /
    world`` (``round_to`` 0: ``ceil(len / world)``): an epoch sees about ``1 / repeats`` of the distinct samples,
    each ``repeats`` times. Starts mid-epoch like :class:`ResumableSampler` (``skip``)."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, repeats: int, round_to: int, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        n = len(dataset)
        self.repeats = int(repeats)
        self.num_samples = math.ceil(n * self.repeats / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.num_selected = (n // round_to * round_to // num_replicas) if round_to else math.ceil(n / num_replicas)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=g).repeat_interleave(self.repeats).tolist()
        order += order[:self.total_size - len(order)]
        mine = order[self.rank:self.total_size:self.num_replicas][:self.num_selected]
        return itertools.islice(iter(mine), self.skip, None)

    def __len__(self) -> int:
        return self.num_selected - self.skip


def build_loaders(datasets: Dict[str, Dataset], cfg: Config, device: torch.device, train: bool = True
                  ) -> Tuple[Dict[str, DataLoader], Optional[ResumableSampler]]:
    """Train loader (shuffled per epoch, split over processes, last partial batch dropped) and
    val/test loaders (each process its shard, no padding); ``train=False``: no train loader."""
    d, world, rank = cfg.data, du.get_world_size(), du.get_rank()
    for name, size in (("data.batch_size", d.batch_size), ("data.eval_batch_size", d.eval_batch_size)):
        if size is not None and size % world:
            raise ConfigError(f"{name}={size} does not split evenly over {world} processes")
    per_rank = d.batch_size // world
    eval_per_rank = (d.eval_batch_size or d.batch_size) // world
    common = dict(num_workers=d.num_workers, pin_memory=device.type == "cuda", persistent_workers=d.num_workers > 0)
    loaders: Dict[str, DataLoader] = {}
    sampler = None
    if train:
        ds = datasets["train"]
        if d.repeated_aug > 1:
            sampler = RepeatedAugSampler(ds, world, rank, d.repeated_aug, d.repeated_aug_round, seed=cfg.train.seed)
        else:
            sampler = ResumableSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.train.seed)
        loaders["train"] = DataLoader(ds, batch_size=per_rank, sampler=sampler, drop_last=True, **common)
        if len(loaders["train"]) == 0:
            rounded = " once data.repeated_aug_round has rounded them down" if d.repeated_aug > 1 else ""
            raise ConfigError(f"the train split has {len(ds)} samples, fewer than one batch of {per_rank} "
                             f"per process{rounded}: lower data.batch_size")
        dropped = (len(sampler) - len(loaders["train"]) * per_rank) * world
        if dropped:  # full batches only (BatchNorm, equal steps on every rank): say what that costs
            logger.warning("the train split has %d samples: batches of %d leave out %d of them each epoch (others "
                           "every epoch, as the order is shuffled); a data.batch_size dividing %d uses them all",
                           len(ds), d.batch_size, dropped, len(ds))
    for split in ("val", "test", "vote"):
        if split in datasets:
            ds = datasets[split]
            # workers started anew by each pass, from its base seed: a pass draws the same in every epoch
            loaders[split] = DataLoader(ds, batch_size=eval_per_rank, sampler=du.ShardSampler(len(ds)),
                                        **{**common, "persistent_workers": False})
    return loaders, sampler


class OptimizerStep:
    """Backward, clip, step — skipped on the device when the loss or the gradient norm is not finite.
    Calling it returns (loss finite, step applied) as device booleans; nothing here waits for the device.

    ``steps_per_batch=2`` is Point-MAE part segmentation's habit: one step on the raw gradients, then clip
    and a second step on the same, clipped gradients."""

    def __init__(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, params: Sequence[torch.Tensor],
                 grad_clip: Optional[float] = None, steps_per_batch: int = 1):
        if steps_per_batch not in (1, 2):
            raise ConfigError(f"optim.steps_per_batch must be 1 or 2, got {steps_per_batch}")
        if steps_per_batch == 2 and scaler.is_enabled():
            raise ConfigError("optim.steps_per_batch=2 does not combine with fp16 loss scaling (train.precision: "
                              "fp16 on CUDA): use bf16 or fp32")
        self.optimizer, self.scaler, self.params = optimizer, scaler, list(params)
        self.grad_clip, self.steps_per_batch = grad_clip, steps_per_batch

    def __call__(self, loss: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        opt, scaler = self.optimizer, self.scaler
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)  # a no-op unless fp16 scaling is on
        grads = [p.grad for p in self.params if p.grad is not None]
        if self.grad_clip and self.steps_per_batch == 1:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        else:
            norm = total_norm(grads)
        finite_loss = torch.isfinite(loss.detach())
        ok = finite_loss & torch.isfinite(norm).to(finite_loss.device)
        if self.steps_per_batch == 2:
            self._step(ok)
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self._step(ok)
        return finite_loss, ok

    def _step(self, ok: torch.Tensor) -> None:
        opt, scaler = self.optimizer, self.scaler
        if scaler.is_enabled():  # fp16: the scaler skips steps with non-finite gradients itself
            scaler.step(opt)
            scaler.update()
        elif getattr(opt, "_step_supports_amp_scaling", False):  # fused AdamW: skips where found_inf is set
            opt.found_inf = (~ok).to(torch.float32)
            try:
                opt.step()
            finally:
                del opt.found_inf
        elif bool(ok):  # an optimizer that cannot skip on the device: decided here, one wait per step
            opt.step()


def total_norm(tensors) -> torch.Tensor:
    """The 2-norm of all ``tensors`` together, on their device (torch's ``get_total_norm`` where it exists)."""
    fn = getattr(torch.nn.utils, "get_total_norm", None)
    if fn is not None:
        return fn(tensors)
    if not tensors:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors]))


class StepMeter:
    """Per-epoch running sums on the device (the loss, the task's scalars, non-finite steps), read with
    one transfer at each log point; the interval means and the epoch means come from those reads."""

    def __init__(self, device: torch.device):
        self.device = device
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.reset()

    def reset(self) -> None:
        self.sums: Dict[str, torch.Tensor] = {}
        zero = torch.zeros((), dtype=self.dtype, device=self.device)
        # [steps with a non-finite loss, steps skipped for non-finite gradients, first such global step, its loss]
        self.bad = torch.stack([zero, zero, zero, zero])
        self._last: Dict[str, float] = {}
        self._last_step = 0

    def add(self, loss: torch.Tensor, logs: Dict[str, Any], finite_loss: torch.Tensor, applied: torch.Tensor,
            global_step: int) -> None:
        for k, v in {"loss": loss, **logs}.items():
            v = torch.as_tensor(v).detach().to(self.device, self.dtype)
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        nonfinite = ~finite_loss
        first = nonfinite & (self.bad[0] == 0)
        self.bad = torch.stack([self.bad[0] + nonfinite, self.bad[1] + (finite_loss & ~applied),
                                torch.where(first, float(global_step), self.bad[2]),
                                torch.where(first, loss.detach().to(self.dtype), self.bad[3])])

    def read(self, step: int, stop: Optional[bool] = None) -> Tuple[Dict[str, float], Optional[Dict[str, Any]]]:
        """Means over the steps since the last read (summed over processes when ``stop`` is given, the
        flag added up with them as ``stop``) and, if a loss was not finite, {"global_step", "loss"}."""
        keys = list(self.sums)
        shared = torch.stack([*self.sums.values(), self.bad[0], self.bad[1]])
        world = 1
        if stop is not None:
            shared = du.all_reduce_sum(torch.cat([shared, shared.new_tensor([float(stop)])]))
            world = du.get_world_size()
        values = torch.cat([shared, self.bad[2:]]).tolist()  # the one wait for the device
        n = len(keys)
        cum = {k: v / world for k, v in zip(keys, values[:n])}
        nonfinite, skipped = values[n], values[n + 1]
        if nonfinite:
            return {}, {"global_step": int(values[-2]), "loss": values[-1]}
        span = max(step - self._last_step, 1)
        logs = {k: (cum[k] - self._last.get(k, 0.0)) / span for k in keys}
        if stop is not None:
            logs["stop"] = values[n + 2]
        if skipped > self._last.get("_skipped", 0.0):
            logger.warning("%d optimizer steps skipped so far this epoch: non-finite gradients", int(skipped))
        self._last, self._last_step = {**cum, "_skipped": skipped}, step
        return logs, None

    def end_epoch(self, steps: int) -> Dict[str, float]:
        """The epoch's means (from the read at its last step), then a fresh meter for the next one."""
        means = {k: v / max(steps, 1) for k, v in self._last.items() if not k.startswith("_")}
        self.reset()
        return means

    def state(self) -> Dict[str, Any]:
        """What a mid-epoch checkpoint keeps, so the resumed epoch's means equal an uninterrupted one's."""
        return {"sums": {k: v.detach().cpu() for k, v in self.sums.items()}, "bad": self.bad.detach().cpu(),
                "last": dict(self._last), "last_step": self._last_step}

    def load(self, state: Dict[str, Any]) -> None:
        self.sums = {k: v.to(self.device, self.dtype) for k, v in state["sums"].items()}
        self.bad = state["bad"].to(self.device, self.dtype)
        self._last, self._last_step = dict(state["last"]), int(state["last_step"])


@torch.no_grad()
def evaluate(model: torch.nn.Module, task: Any, loader: DataLoader, device: torch.device,
             amp_dtype: Optional[torch.dtype] = None, views: int = 1, seed: int = 0) -> Dict[str, float]:
    """``task``'s metrics of ``model`` on ``loader`` (each rank its shard): ``task.eval_step``'s sums of every
    batch, added up over the ranks after one read of the device, then ``task.summarize``.

    Its random draws (masks, voting views, the loader's base seed and its workers') come from RNGs seeded
    with ``seed`` (:func:`fixed_rng`): the same weights score the same, and the RNGs are left as they were."""
    model.eval()
    sums: Dict[str, torch.Tensor] = {}
    with fixed_rng(seed, model):
        for batch in loader:
            batch = to_device(batch, device)
            with autocast(device, amp_dtype):
                out = task.eval_step(model, batch, views=views)
            du.add_sums(sums, {k: v.detach().double() if v.is_floating_point() else v.detach().long()
                            for k, v in out.items()})
    return task.summarize(du.gather_sums({k: v.cpu() for k, v in sums.items()}))
