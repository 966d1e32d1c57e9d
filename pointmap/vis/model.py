"""A pretrainer with trained weights, from a config and a checkpoint, the way the engine builds it."""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
from torch import nn

from pointmap.config import Config, config_from_dict

from ..errors import UserError, UserFileNotFoundError

__all__ = ["load_pretrainer"]


def load_pretrainer(ckpt: str, cfg: Optional[Config] = None, device: str = "cpu") -> Tuple[nn.Module, Config]:
    """(model in eval mode on ``device``, config). ``cfg`` None: the config saved in the checkpoint (or in the
    folder written by ``tools/export.py``).

    Every tensor of the model must come from the checkpoint (a pointmap run's ``ckpt-*.pth``, its export, a
    peer's pretraining file or a published entry such as ``pointmae.shapenet55``): a picture of a
    half-initialized decoder would be a lie.
    """
    from pointmap.config import load_config
    from pointmap.engine import build_task, load_file
    from pointmap.models import load_checkpoint, resolve_pretrained

    card, path = resolve_pretrained(ckpt)
    # an export (a folder, or its snapshot from the Hub) keeps the run's config beside its weights
    exported = os.path.join(os.path.dirname(path), "config.yaml") if card is not None and card.weights else None
    if cfg is None and exported and os.path.isfile(exported):
        cfg = load_config(exported)
    elif cfg is None:
        saved = None if card is not None else load_file(path).get("config")
        if not isinstance(saved, dict):
            hint = f" (its recipe: cfgs/{card.config})" if card is not None and card.config else ""
            raise UserError(f"{ckpt} holds no config (not written by pointmap's Trainer): pass --cfg{hint}")
        cfg = config_from_dict(saved)
    if cfg.task != "pretrain":
        raise UserError(f"config {cfg.name or '?'} is a {cfg.task!r} config; reconstructions need a pretraining "
                         f"config (task: pretrain)")
    model = build_task(cfg).build_model({})
    try:
        report = load_checkpoint(model, path, source=card.format if card else "auto")
    except FileNotFoundError as e:
        raise UserFileNotFoundError(f"checkpoint not found: {ckpt}") from e
    if report.missing_keys or report.unexpected_keys:
        key = (report.missing_keys or report.unexpected_keys)[0]
        what = "is not in the checkpoint" if report.missing_keys else "has no place in the model"
        raise UserError(f"{ckpt} does not fit the config's {cfg.model.name} pretrainer: {key!r} {what} "
                         f"({len(report.missing_keys)} missing, {len(report.unexpected_keys)} unexpected keys)")
    return model.to(torch.device(device)).eval(), cfg
