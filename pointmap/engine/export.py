"""A run's weights for sharing: a folder ready for the Hugging Face Hub with ``model.safetensors``,
``config.json`` (the card pointmap reads, a :class:`~pointmap.models.ModelCard`: preset, arguments, head,
classes, input transforms, metrics, protocol, licence, versions and commits), ``README.md`` (the Hub's model
card: YAML metadata, then how to load it and the card's facts) and the run's ``config.yaml``, loadable with
``create_model(card.preset, pretrained=FOLDER)`` (and ``--ckpt FOLDER``), and once uploaded with
``pretrained="hf-hub:owner/repo"``. What ``pointmap export`` does::

    card = export_run("experiments/finetune_demo/default", "exports/finetune_demo")
    push_to_hub("exports/finetune_demo", "me/finetune-demo")

With ``onnx=True`` the folder also holds ``model.onnx`` (:mod:`pointmap.engine.onnx_export`: the whole
classifier, grouping included; onnxruntime's logits checked against PyTorch's before the folder is kept) and
the card's ``provenance["onnx"]`` says what the check found.

Everything is checked before anything is written (the checkpoint is pointmap's, its config builds a model
its weights fill whole); the folder is written under a temporary name and renamed into place, so a failed
export leaves nothing behind.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from torch import nn

import yaml

from ..atomic import atomic_write
from ..config import Config, config_from_dict, save_config
from ..errors import UserError, UserFileNotFoundError, one_line
from ..models import CheckpointError, ModelCard
from ..models.pretrained import CARD_FILE, WEIGHTS_FILE, named_classes, read_card
from .checkpoint import load_file
from .rundir import environment
from .tasks import build_task, pretrainer_args

__all__ = ["export_run", "hub_model_card", "push_to_hub", "input_transforms", "AUGMENTATIONS", "LICENCE"]

LICENCE = "apache-2.0"  # an export's default licence: pointmap's (SPDX id, as the Hub's metadata spells it)

AUGMENTATIONS = ("scale_translate", "rotate", "jitter", "dropout")  # random, training only
_METRICS = ("test", "test_vote", "best", "selection", "tested_epoch", "epochs_done", "protocol_note")
_PROVENANCE = ("pointmap_version", "git_commit", "git_dirty", "torch_version")


def input_transforms(cfg: Config) -> Tuple[List[Dict[str, Any]], Optional[int]]:
    """(transforms, points) a model of ``cfg`` expects at inference: the test transforms, or for pretraining
    without a test split the train transforms less the random augmentations; points: the last ``sample``'s
    count, else ``data.options.num_points`` (None: the data set's own clouds)."""
    d = cfg.data
    if cfg.task == "pretrain" and not d.test_split:
        transforms = [t for t in d.train_transforms if t.get("name") not in AUGMENTATIONS]
    else:
        transforms = list(d.test_transforms or [])
    counts = [t["num_points"] for t in transforms if t.get("name") == "sample" and "num_points" in t]
    return transforms, counts[-1] if counts else d.options.get("num_points")


def _checkpoint_of(source: str) -> str:
    """The file to export: ``source`` itself, or a run folder's ckpt-best.pth (ckpt-last.pth without one)."""
    if os.path.isdir(source):
        for name in ("ckpt-best.pth", "ckpt-last.pth"):
            if os.path.isfile(os.path.join(source, name)):
                return os.path.abspath(os.path.join(source, name))
        raise UserFileNotFoundError(f"{os.path.abspath(source)} holds no ckpt-best.pth or ckpt-last.pth: not a "
                                    f"pointmap run folder")
    if not os.path.isfile(source):
        raise UserFileNotFoundError(f"no such run folder or checkpoint: {os.path.abspath(source)}")
    return os.path.abspath(source)


def _head(model: nn.Module, cfg: Config) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """(``create_model`` head arguments, ``create_pretrainer`` objective arguments or None) of a task's model."""
    from ..models import MAP2DPretrainer, MAPPretrainer
    from ..models.linear_probe import LinearProbe

    if isinstance(model, (MAPPretrainer, MAP2DPretrainer)):
        return {}, pretrainer_args(cfg)
    if isinstance(model, LinearProbe):
        raise UserError("a linear-probe run is a frozen encoder and a linear layer, not a preset: export the "
                        "pretraining run whose encoder it probes")
    if hasattr(model, "num_parts"):
        return {"num_parts": model.num_parts, "num_categories": model.num_categories}, None
    return {"num_classes": model.num_classes}, None


def _classes(task, cfg: Config) -> Optional[Any]:
    """The class names of the run's data set (read from it), else the name of a list the card knows."""
    if cfg.task == "pretrain":
        return None
    try:
        return list(task.build_base(cfg.data.test_split or cfg.data.train_split).classes)
    except (UserError, AttributeError):  # the data is not on this machine: name the list if it is a known one
        return cfg.data.name if named_classes(cfg.data.name) else None


def _read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _card(ckpt: str, cfg: Config, task, model: nn.Module, licence: str) -> ModelCard:
    folder = os.path.dirname(ckpt)
    metrics = _read_json(os.path.join(folder, "metrics.json"))
    scored = os.path.basename(ckpt) == "ckpt-best.pth" or not os.path.isfile(os.path.join(folder, "ckpt-best.pth"))
    notes = "" if scored or not metrics else "metrics.json scored ckpt-best.pth, not this file: no metrics here"
    head, pretrainer = _head(model, cfg)
    transforms, points = input_transforms(cfg)
    trained = _read_json(os.path.join(folder, "meta.json"))
    here = environment()
    return ModelCard(
        name=f"{cfg.name}/{cfg.exp_name}", preset=cfg.model.name, what=f"{cfg.task} on {cfg.data.name}",
        args=dict(cfg.model.args), head=head, pretrainer=pretrainer, format="pointmap", weights=WEIGHTS_FILE,
        source=ckpt, config=cfg.name, data={"name": cfg.data.name, "options": dict(cfg.data.options)},
        classes=_classes(task, cfg), num_points=points, transforms=transforms,
        metrics={k: metrics[k] for k in _METRICS if k in metrics} if scored else {},
        protocol=metrics.get("protocol", cfg.eval.protocol) if cfg.task != "pretrain" else None, notes=notes,
        licence=licence,
        provenance={"trained": {k: trained.get(k) for k in _PROVENANCE},
                    "exported": {k: here.get(k) for k in _PROVENANCE}})


def hub_model_card(card: ModelCard, repo_id: Optional[str] = None) -> str:
    """The ``README.md`` of an export: the Hub's YAML metadata (library, licence, tags, data sets, metrics),
    then how to load it and the card's facts (``config.json`` holds them all)."""
    task = "part-segmentation" if "num_parts" in card.head else "classification" if card.head else "pretraining"
    metrics = sorted({k for split in ("test", "test_vote") for k in card.metrics.get(split, {})
                      if k in ("acc", "macc", "ins_miou", "cls_miou")})
    meta = {"library_name": "pointmap", "license": card.licence,
            "tags": ["pointmap", "point-cloud", "3d", card.preset, task],
            "datasets": [card.data.get("name")] if card.data.get("name") else [],
            "metrics": metrics}
    name = f"hf-hub:{repo_id}" if repo_id else "FOLDER"
    rows = [("preset", f"`{card.preset}` {card.args}"), ("head", card.head or "none (the encoder and its decoder)"),
            ("trained", f"{card.what}, config `{card.config}`"), ("input", f"{card.num_points} points, transforms "
                                                                           f"{card.transforms}"),
            ("selection protocol", card.protocol or "-"), ("licence", card.licence)]
    rows += [(f"{split} {k}", f"{v:.2f}") for split in ("test", "test_vote") for k, v in card.metrics.get(split, {}).items()
             if k in metrics]
    load = f'model = pointmap.create_model("{card.preset}", pretrained="{name}")' + (
        "  # the encoder (the whole pretrainer: pointmap.models.load_pretrained(..., whole=True))"
        if card.pretrainer is not None else "  # points (B, N, 3) -> logits")
    return "\n".join([
        "---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "", f"# {card.name}", "",
        f"A [pointmap](https://arxiv.org/abs/2410.00871) model: {card.what}.", "", "```python", "import pointmap",
        "", load, "```", "", "| | |", "| --- | --- |", *[f"| {k} | {v} |" for k, v in rows], "",
        "`config.json` is the card pointmap reads (preset, arguments, classes, input transforms, metrics, "
        "provenance); `config.yaml` the run's training config.", ""])


def push_to_hub(folder: str, repo_id: str, private: bool = False, revision: Optional[str] = None) -> str:
    """Upload an export ``folder`` to the model repository ``repo_id`` (created when absent) with
    ``huggingface_hub`` (``HF_ENDPOINT``, ``HF_TOKEN`` or ``hf auth login``); returns the commit's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from ..hub import hub_endpoint

    card = read_card(folder)
    atomic_write(os.path.join(os.path.abspath(folder), "README.md"), lambda f: f.write(hub_model_card(card, repo_id)),
                 binary=False)  # the card's loading line names the repository
    api = HfApi(endpoint=hub_endpoint())
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="model", revision=revision,
                                 commit_message=f"pointmap export of {card.name}")
    except (HfHubHTTPError, OSError) as e:
        raise UserError(f"--push-to-hub {repo_id}: the upload to {hub_endpoint()} failed: {one_line(e, 300)}") from e
    return str(getattr(info, "commit_url", info))


def export_run(source: str, out: str, overwrite: bool = False, licence: str = LICENCE,
               onnx: bool = False) -> ModelCard:
    """Export ``source`` (a run folder or one of its ``ckpt-*.pth``) to the folder ``out``; returns the card.
    ``out`` must not hold files unless ``overwrite``; ``licence``: the weights' (the Hub's id, e.g. ``mit``);
    ``onnx``: add ``model.onnx`` (see the module docstring).
    One-line :class:`~pointmap.errors.UserError` on a bad input, with nothing written."""
    from safetensors.torch import save_file

    from ..download import sha256_of

    ckpt = _checkpoint_of(source)
    raw = load_file(ckpt)
    if not isinstance(raw.get("model"), dict) or not isinstance(raw.get("config"), dict):
        raise CheckpointError(f"{ckpt} is not a pointmap run's checkpoint (no 'model' and 'config' entries); a "
                              f"peer's file needs no export: --ckpt takes it as it is")
    cfg = config_from_dict(raw["config"])
    task = build_task(cfg)
    model = task.build_model(None)
    try:
        model.load_state_dict(raw["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt} does not fit the {cfg.model.name} its config builds: {one_line(e, 300)}") from e
    card = _card(ckpt, cfg, task, model, licence)
    out = os.path.abspath(out)
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise UserError(f"{out} already holds files: pass --overwrite to replace them")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"{out} is a file, not a folder")
    if onnx:
        from .onnx_export import check_exportable

        check_exportable(model)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=os.path.dirname(out))
    umask = os.umask(0)
    os.umask(umask)
    try:
        weights = os.path.join(tmp, WEIGHTS_FILE)
        save_file({k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}, weights,
                  metadata={"format": "pt", "pointmap_preset": card.preset})
        os.chmod(tmp, 0o777 & ~umask)  # a folder to share: the usual permissions, not mkdtemp's private ones
        os.chmod(weights, 0o666 & ~umask)
        card.sha256 = sha256_of(weights)
        if onnx:
            _add_onnx(model, card, tmp, umask)
        with open(os.path.join(tmp, CARD_FILE), "w", encoding="utf-8") as f:
            json.dump(card.to_dict(), f, indent=2)
        with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
            f.write(hub_model_card(card))
        save_config(cfg, os.path.join(tmp, "config.yaml"))
        if os.path.isdir(out) and os.listdir(out):  # --overwrite: the old folder goes only once the new is whole
            old = tempfile.mkdtemp(prefix=".tmp-old-export-", dir=os.path.dirname(out))
            os.replace(out, os.path.join(old, "x"))
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return card


def _add_onnx(model: nn.Module, card: ModelCard, folder: str, umask: int) -> None:
    """``model.onnx`` in ``folder``, checked, and what the check found in ``card``."""
    from .onnx_export import ONNX_FILE, export_onnx

    path = os.path.join(folder, ONNX_FILE)
    report = export_onnx(model, path, num_points=card.num_points or 1024)
    os.chmod(path, 0o666 & ~umask)
    card.provenance["onnx"] = {"file": ONNX_FILE, "opset": report.opset, "input": f"points (B, {report.num_points}, 3)",
                               "checked_on": f"{report.batch} random clouds",
                               "max_abs_diff": report.max_abs_diff, "bound": report.bound}
