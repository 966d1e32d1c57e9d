"""What ``--resume`` checks before it continues a run: that it is the same run.

A resumed run compares its config and world size with those its ``ckpt-last.pth`` was trained with. A
difference in anything that alters what is trained (the model, the data and its transforms, batch size,
world size, the objective, the optimizer and its schedule, seeds, the protocol's held-out split) is a
:class:`~pointmap.errors.ConfigError` naming the keys, unless ``force`` (``--resume --force``): then the
run goes on with the new values and its ``meta.json`` records every change (``resume.changed``,
``resume.forced``). The keys a resume may change freely are :data:`RESUME_FREE`; the schedule may be
extended (:data:`RESUME_EXTENDABLE` may grow, never shrink). The run's ``config.yaml`` stays the original's.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Dict, List, Tuple

from ..config import Config, config_to_dict
from ..errors import ConfigError, one_line
from .checkpoint import load_file
from .logging import flatten

__all__ = ["RESUME_FREE", "RESUME_EXTENDABLE", "ResumeCheck", "check_resume", "config_changes", "resumed_step"]

logger = logging.getLogger(__name__)

# Config keys (and every key below them) that alter nothing a run trains: its names and folder, how it
# logs and reports progress, how fast and on what it computes (threads, compile, deterministic kernels, op
# backends, loader workers), what it evaluates at the end (voting) and with what batch, and the hooks that
# only read the run (evaluation every N epochs, checkpoints, pictures); the weights it started from
# (``pretrained``: a resumed run's weights are its checkpoint's). The device (``--device``) is not a key:
# it may change, and where that changes the precision it trains in (bf16 on CUDA, fp32 elsewhere), that
# is ``train.precision``, which is checked.
RESUME_FREE = (
    "name", "exp_name", "pretrained", "pretrained_strict",
    "train.output_dir", "train.progress", "train.log_every", "train.overwrite", "train.cpu_threads", "train.compile",
    "train.deterministic", "train.find_unused_parameters", "train.ema_eval",
    "data.num_workers", "data.eval_batch_size", "data.vote_transforms",
    "eval.vote", "eval.vote_rounds", "eval.vote_view_transforms",
    "ops", "hooks",
)
# May grow on resume (a longer schedule); a smaller value is a change like any other.
RESUME_EXTENDABLE = ("optim.epochs", "optim.extra_epochs")
# Hooks whose settings decide what the run reports as its result: changing them is a change like any other.
_DECIDING_HOOKS = ("best",)


def _free(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUME_FREE)


def _deciding_hooks(hooks: Any) -> Dict[str, Any]:
    """``{"hooks[best]": its spec or None}`` for each hook of :data:`_DECIDING_HOOKS`."""
    specs = {h.get("name"): {k: v for k, v in h.items() if k != "name"} for h in hooks or [] if isinstance(h, dict)}
    return {f"hooks[{name}]": specs.get(name) or None for name in _DECIDING_HOOKS}


def config_changes(saved: Dict[str, Any], now: Dict[str, Any]) -> Tuple[Dict[str, List[Any]], List[str]]:
    """Every difference between two configs (as :func:`~pointmap.config.config_to_dict` writes them) as
    ``{key: [saved, now]}``, and the keys among them that alter what is trained. A key the saved config lacks
    (written by an older pointmap) counts as its default."""
    default = flatten(config_to_dict(Config()))
    old = {**flatten(saved), **_deciding_hooks(saved.get("hooks"))}
    new = {**flatten(now), **_deciding_hooks(now.get("hooks"))}
    changed: Dict[str, List[Any]] = {}
    for key in sorted(set(old) | set(new)):
        if key not in new and not _read_now(key):  # a key this pointmap no longer has
            continue
        before, after = (old[key] if key in old else default.get(key)), new.get(key)
        if before != after:
            changed[key] = [before, after]
    training = [k for k, values in changed.items()
                if not _free(k) and not (k in RESUME_EXTENDABLE and _grows(values))]
    return changed, training


def _read_now(key: str) -> bool:
    """Whether this pointmap's :class:`~pointmap.config.Config` has ``key``: a field, or an entry of a free-form
    mapping (``model.args.embed_dim``)."""
    node: Any = Config()
    for part in key.split("."):
        if not dataclasses.is_dataclass(node):
            return True  # inside a mapping the user fills
        if part not in {f.name for f in dataclasses.fields(node)}:
            return False
        node = getattr(node, part)
    return True


def _grows(values: List[Any]) -> bool:
    before, after = values
    return isinstance(before, int) and isinstance(after, int) and after >= before


def _show(value: Any, limit: int = 40) -> str:
    return one_line(repr(value), limit)


class ResumeCheck:
    """The checkpoint a run resumes from, read once, and what changed since: ``ckpt`` (the file as read),
    ``changed`` (``{key: [saved, now]}``, the world size under ``world_size``), ``forced`` (the keys among
    them that alter what is trained, accepted by ``force``)."""

    def __init__(self, ckpt: Dict[str, Any], changed: Dict[str, List[Any]], forced: List[str]):
        self.ckpt, self.changed, self.forced = ckpt, changed, forced

    @property
    def saved_batch(self) -> int:
        """The ``data.batch_size`` (every process together) the checkpoint was trained with."""
        return int(((self.ckpt.get("config") or {}).get("data") or {}).get("batch_size", 0))

    def record(self) -> Dict[str, Any]:
        """What meta.json keeps of it (None where nothing changed)."""
        return {"changed": self.changed, "forced": self.forced} if self.changed else {}


def check_resume(path: str, cfg: Config, world_size: int, force: bool = False) -> ResumeCheck:
    """Read ``path`` (the run's ``ckpt-last.pth``) and compare what it was trained with to ``cfg`` and
    ``world_size``: a ConfigError naming every key that alters what is trained, unless ``force``."""
    ckpt = load_file(path)
    saved = ckpt.get("config")
    if not isinstance(saved, dict):
        raise ConfigError(f"{path} keeps no config: it is not a pointmap training checkpoint, and cannot be resumed")
    changed, training = config_changes(saved, config_to_dict(cfg))
    saved_world = int((ckpt.get("meta") or {}).get("world_size", 1))
    if saved_world != world_size:
        changed["world_size"] = [saved_world, world_size]
        training.append("world_size")
    if training and not force:
        said = ", ".join(f"{k} ({_show(changed[k][0])} -> {_show(changed[k][1])})" for k in training)
        raise ConfigError(f"--resume: {path} was trained with other settings: {said}; resume with the same ones, "
                          f"or add --force to go on with these (recorded in meta.json)")
    if training:
        logger.warning("resuming with changed settings (--force, recorded in meta.json): %s", ", ".join(training))
    return ResumeCheck(ckpt, changed, training)


def resumed_step(step: int, saved_batch: int, batch: int) -> int:
    """The step of a resumed epoch that follows the ``step * saved_batch`` samples (every process together)
    the checkpoint had trained on, in batches of ``batch``: the same step when the batch is; otherwise the
    last whole batch before that point (its remaining samples are trained on again, and said so)."""
    if step == 0 or saved_batch == batch or saved_batch <= 0:
        return step
    samples = step * saved_batch
    if samples % batch:
        logger.warning("the batch size changed mid-epoch (%d -> %d): the %d samples after step %d of %d are trained "
                       "on again", saved_batch, batch, samples % batch, samples // batch, batch)
    return samples // batch
