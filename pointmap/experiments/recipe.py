"""What a config will train, read off the same builders the Trainer uses, without data and without a run
folder: ``tools/recipe.py``. Users check a recipe before a long GPU run; the tests compare the peers'
recipes (``cfgs/point_mae/`` ...) with the records made from the peers' own code.

    describe_recipe(load_config("cfgs/point_mae/finetune_modelnet.yaml"))["lr_per_epoch"][:3]
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Sequence

from ..config import Config, config_to_dict
from ..engine import build_task
from ..engine.optim import build_optimizer, lr_per_epoch, param_groups, scaled_lr

__all__ = ["describe_recipe", "describe_transforms", "format_recipe", "model_settings"]


def describe_transforms(entries: Optional[Sequence[Dict[str, Any]]]) -> Optional[List[Dict[str, Any]]]:
    """Transform config entries with every option spelled out (the class's defaults filled in); None stays
    None (a setting left at its fallback)."""
    if entries is None:
        return None
    from ..data.transforms import TRANSFORMS, check_transforms

    check_transforms(entries)
    out = []
    for entry in entries:
        cls = TRANSFORMS.get(entry["name"])
        params = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
                  if k != "self" and p.default is not inspect.Parameter.empty}
        out.append({"name": entry["name"], **params, **{k: v for k, v in entry.items() if k != "name"}})
    return out


def _sampling(entries: Optional[List[Dict[str, Any]]]) -> Optional[List[Dict[str, Any]]]:
    return None if entries is None else [e for e in entries if e["name"] == "sample"]


def model_settings(model) -> Dict[str, Any]:
    """The encoder's grouping, token orders, layout and per-block regularisation, read off the built model."""
    enc = getattr(model, "encoder", model)
    rates = []
    for blk in getattr(enc, "blocks", []):
        drop = getattr(blk, "drop_path1", None)
        rates.append(float(getattr(drop, "drop_prob", 0.0)))
    out = {k: getattr(enc, k) for k in ("num_group", "group_size", "layout", "pos_mode", "grid_depth",
                                        "skip_near_origin") if hasattr(enc, k)}
    if hasattr(enc, "orders"):
        out["orders"] = list(enc.orders)
    out["drop_path"] = rates
    drop = getattr(enc, "block_drop", None)
    out["block_dropout"] = float(drop.p) if drop is not None else 0.0
    if hasattr(model, "global_pool"):
        out["global_pool"] = model.global_pool
    return out


def describe_recipe(cfg: Config) -> Dict[str, Any]:
    """The model (name, arguments, parameters), the optimizer's parameter groups (weight decay, lr, tensor
    names, ``n_params``, ``n_tensors``), the epochs the loop runs, ``lr`` (as written, and scaled by the batch
    under ``optim.lr_base_size``), ``lr_per_epoch`` (group 0's lr at the first step of each epoch),
    ``batch_size`` (total), ``grad_clip``, ``precision``, the weight ``ema``, ``mixup``, ``repeated_aug`` (None:
    off), the train / test / voting transforms and the ``sampling`` among them, the ``protocol`` and the
    ``voting``."""
    task = build_task(cfg)
    model = task.build_model(None)
    o, d, e = cfg.optim, cfg.data, cfg.eval
    groups = param_groups(model, o.weight_decay, o.weight_decay_rule)
    shapes = dict(model.named_parameters())
    train = describe_transforms(d.train_transforms)
    test = describe_transforms(d.test_transforms)
    vote = describe_transforms(d.vote_transforms)
    views = describe_transforms(e.vote_view_transforms)
    return {
        "config": cfg.name,
        "task": task.name,
        "model": {"name": cfg.model.name, "args": dict(cfg.model.args), "class": type(model).__name__,
                  "parameters": sum(p.numel() for p in model.parameters()),
                  "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                  "settings": model_settings(model)},
        "objective": config_to_dict(cfg)["objective"] if task.name == "pretrain" else None,
        "param_groups": [{"weight_decay": g["weight_decay"], "lr": scaled_lr(o, d.batch_size), "n_params": sum(shapes[n].numel() for n in g["names"]),
                          "n_tensors": len(g["names"]), "names": sorted(g["names"])} for g in groups],
        "weight_decay_rule": o.weight_decay_rule,
        "epochs": o.loop_epochs,
        "schedule": {"cosine_epochs": o.epochs, "warmup_epochs": o.warmup_epochs, "warmup_lr": o.warmup_lr,
                     "min_lr": o.min_lr, "schedule_step": o.schedule_step, "extra_epochs": o.extra_epochs},
        "lr": {"base": o.lr, "base_size": o.lr_base_size, "batch_size": d.batch_size, "scaled": scaled_lr(o, d.batch_size)},
        "lr_per_epoch": lr_per_epoch(build_optimizer(model, o, d.batch_size), o),
        "batch_size": d.batch_size,
        "grad_clip": o.grad_clip,
        "optimizer_steps_per_batch": o.steps_per_batch,
        "precision": cfg.train.precision,
        "ema": {"decay": cfg.train.ema_decay, "evaluated": cfg.train.ema_eval} if cfg.train.ema_decay else None,
        "mixup": dict(getattr(task, "mixup_args", None) or {}) or None,
        "repeated_aug": {"repeats": d.repeated_aug, "round_to": d.repeated_aug_round} if d.repeated_aug > 1 else None,
        "data": {"name": d.name, "options": dict(d.options), "train_split": d.train_split, "test_split": d.test_split},
        "transforms": {"train": train, "test": test, "vote": vote, "vote_view": views},
        "sampling": {"train": _sampling(train), "test": _sampling(test), "vote": _sampling(vote),
                     "vote_view": _sampling(views)},
        "protocol": e.protocol,
        "voting": {"views": e.vote, "rounds": e.vote_rounds, "reported": (
            "none" if e.vote == 1 else "one pass" if e.vote_rounds == 1 else
            f"the best of {e.vote_rounds} passes on the test set (the peers' --test)")},
        "hooks": [dict(h) for h in cfg.hooks],
    }


def format_recipe(r: Dict[str, Any]) -> str:
    """A short human-readable account of :func:`describe_recipe`'s result."""
    lr = r["lr_per_epoch"]
    peak = max(range(len(lr)), key=lr.__getitem__)
    groups = "; ".join(f"wd {g['weight_decay']:g}: {g['n_tensors']} tensors, {g['n_params']:,} parameters"
                       for g in r["param_groups"])

    def pipeline(entries):
        if entries is None:
            return "-"
        return " -> ".join(e["name"] + "(" + ", ".join(f"{k}={v}" for k, v in e.items() if k != "name") + ")"
                           for e in entries) or "none"

    lr_line = (f"{r['lr']['base']:g} x batch {r['lr']['batch_size']} / {r['lr']['base_size']} = {r['lr']['scaled']:.4g}"
               if r["lr"]["base_size"] else f"{r['lr']['scaled']:g}")
    every = ", ".join(f"{lr[i]:.3g}" for i in range(min(len(lr), 7))) + (f", ... {lr[-1]:.3g}" if len(lr) > 7 else "")
    extras = [f"ema decay {r['ema']['decay']:g}" + (" (evaluated)" if r["ema"]["evaluated"] else "") if r["ema"] else "",
              "mixup " + ", ".join(f"{k}={v}" for k, v in r["mixup"].items()) if r["mixup"] else "",
              f"repeated augmentation x{r['repeated_aug']['repeats']} (epoch rounded to {r['repeated_aug']['round_to']})"
              if r["repeated_aug"] else ""]
    lines = [
        f"config      {r['config']} (task {r['task']})",
        f"model       {r['model']['name']} {r['model']['args']} -> {r['model']['class']}, "
        f"{r['model']['parameters']:,} parameters ({r['model']['trainable_parameters']:,} trainable)",
        f"optimizer   AdamW, weight-decay rule {r['weight_decay_rule']}: {groups}",
        f"schedule    {r['epochs']} epochs run; cosine over {r['schedule']['cosine_epochs']} "
        f"({r['schedule']['warmup_epochs']} warmup), stepped per {r['schedule']['schedule_step']}; lr epoch 0 "
        f"{lr[0]:.3g}, peak {lr[peak]:.4g} at epoch {peak}, last {lr[-1]:.3g}",
        f"lr          {lr_line}; per epoch {every}",
        f"batch       {r['batch_size']} (total), grad clip {r['grad_clip']}, "
        f"{r['optimizer_steps_per_batch']} optimizer step(s) per batch, precision {r['precision']}",
        f"train       {pipeline(r['transforms']['train'])}",
        *([f"also        {'; '.join(e for e in extras if e)}"] if any(extras) else []),
        f"test        {pipeline(r['transforms']['test'])}",
        f"protocol    {r['protocol']}; voting {r['voting']['views']} views, {r['voting']['reported']}",
    ]
    if r["voting"]["views"] > 1:
        lines.append(f"vote views  from {pipeline(r['transforms']['vote'])}, each {pipeline(r['transforms']['vote_view'])}")
    return "\n".join(lines)
