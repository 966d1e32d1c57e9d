"""Your own point clouds through a model: class names, features, part labels.

    model = pointmap.load_model("exports/finetune_demo")          # an entry, an export, a run, a checkpoint
    pointmap.predict(model, ["chair.ply", "scan.pcd"], topk=3)     # [{"input", "labels", "classes", "probs"}, ...]
    pointmap.embed(model, ["chair.ply", "scan.pcd"])              # (2, D) float32
    pointmap.segment(segmenter, ["plane.obj"], category="Airplane")   # [(N,) part labels of every point]

Inputs are paths (read by :func:`pointmap.data.io.read_points`), arrays or tensors (N, ≥3) (a 3-D one is a
batch of clouds). Each goes through the model's test-time pipeline (``create_transform(model.pretrained_cfg)``:
the card's transforms, to its number of points) with the randomness seeded, so an answer depends on the file
alone. Clouds go through the model ``batch_size`` at a time (default 1: some presets' outputs depend on the
other clouds of their batch, PointMamba's grid depth and Mamba3D's local norm among them).
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.io import read_points
from ..data.transforms import ScaleTranslate, create_transform
from ..errors import UserError, UserFileNotFoundError
from ..models import HEAD_DEFAULTS, TokenEncoder, create_model, pool_tokens, pooled_features
from ..hub import is_hub_spec
from ..models.pretrained import CARD_FILE, OLD_CARD_FILE, list_pretrained, pretrained_card, read_card, resolve_pretrained

__all__ = ["load_model", "predict", "embed", "segment", "prepare_cloud", "is_segmenter", "input_name"]

Input = Union[str, os.PathLike, np.ndarray, torch.Tensor]


def load_model(spec: str, device: Union[str, torch.device, None] = "cpu") -> nn.Module:
    """The model ``spec`` names, in eval mode, with its card as ``pretrained_cfg``: a published entry
    (:func:`~pointmap.list_pretrained`), a folder written by ``tools/export.py`` (or on the Hugging Face Hub:
    ``hf-hub:owner/repo[@revision]``), a pointmap run folder or one
    of its checkpoints (exported on the fly, so the card is the one ``tools/export.py`` would write)."""
    spec = str(spec)
    if spec in list_pretrained():
        model = create_model(pretrained_card(spec).preset, pretrained=spec)
    elif is_hub_spec(spec):
        model = create_model(resolve_pretrained(spec)[0].preset, pretrained=spec)
    elif os.path.isdir(spec) and any(os.path.isfile(os.path.join(spec, f)) for f in (CARD_FILE, OLD_CARD_FILE)):
        model = create_model(read_card(spec).preset, pretrained=spec)
    elif os.path.exists(spec):
        from .export import export_run

        with tempfile.TemporaryDirectory(prefix="pointmap-model-") as tmp:
            card = export_run(spec, os.path.join(tmp, "export"))
            model = create_model(card.preset, pretrained=os.path.join(tmp, "export"))
        model.pretrained_cfg["file"] = os.path.abspath(spec)
    else:
        raise UserFileNotFoundError(f"model {spec}: not a published entry (pointmap.list_pretrained()), an exported "
                                    f"folder, a run folder or a checkpoint file")
    return model.to(device).eval()


def is_segmenter(model: nn.Module) -> bool:
    return hasattr(model, "num_parts")


def input_name(x: Input, i: int) -> str:
    """How an input is named in results: its path, or ``<input i>`` for an array."""
    return str(x) if isinstance(x, (str, os.PathLike)) else f"<input {i}>"


def _cfg(model: nn.Module) -> Dict[str, Any]:
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is None:
        raise UserError(f"this {type(model).__name__} has no pretrained_cfg (what input it takes): build it with "
                        f"pointmap.create_model or pointmap.load_model")
    return cfg


def _as_list(inputs) -> List[Input]:
    if isinstance(inputs, (str, os.PathLike)):
        return [inputs]
    if isinstance(inputs, (np.ndarray, torch.Tensor)):
        return list(inputs) if inputs.ndim == 3 else [inputs]
    return list(inputs)


def _min_points(model: nn.Module) -> int:
    encoder = getattr(model, "encoder", model)
    return int(getattr(encoder, "group_size", 1))


def _read(x: Input, cfg: Dict[str, Any], model: nn.Module, seed: int) -> torch.Tensor:
    """One input as an (N, 3) float32 tensor (a mesh: sampled with 8× the model's points)."""
    if isinstance(x, (str, os.PathLike)):
        mesh_points = 8 * int(cfg.get("num_points") or 1024)
        return torch.from_numpy(read_points(x, mesh_points=mesh_points, seed=seed, min_points=_min_points(model)))
    arr = torch.as_tensor(np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x), dtype=torch.float32)
    if arr.ndim != 2 or arr.shape[1] < 3 or not torch.isfinite(arr[:, :3]).all() or len(arr) < _min_points(model):
        raise UserError(f"an input cloud of shape {tuple(arr.shape)}: expected (N >= {_min_points(model)}, >= 3) "
                        f"finite coordinates")
    return arr[:, :3].contiguous()


def prepare_cloud(points: torch.Tensor, cfg: Dict[str, Any], seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(the model's input (num_points, 3), the index of each of its points in ``points``): ``points`` (N, 3)
    through ``create_transform(cfg)`` with torch's randomness seeded by ``seed`` (and put back after)."""
    item = {"points": points, "seg": torch.arange(len(points))}  # the point indices ride along as a per-point label
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = create_transform(cfg)(item)
    return out["points"].float(), out["seg"]


def _batches(model: nn.Module, inputs, seed: int, batch_size: int, on_error: Optional[Callable], progress):
    """Yields (indices, names, raw clouds, prepared (B, n, 3), kept indices) over the readable inputs; an input
    that fails goes to ``on_error(name, error)`` when given (else the error is raised)."""
    cfg = _cfg(model)
    items = _as_list(inputs)
    device = next(model.parameters()).device
    todo: List[tuple] = []
    for i, x in enumerate(progress(items) if progress else items):
        name = input_name(x, i)
        try:
            raw = _read(x, cfg, model, seed)
            pts, kept = prepare_cloud(raw, cfg, seed)
        except UserError as e:
            if on_error is None:
                raise
            on_error(name, e)
            continue
        todo.append((i, name, raw, pts, kept))
        if len(todo) == batch_size:
            yield _stack(todo, device)
            todo = []
    if todo:
        yield _stack(todo, device)


def _stack(todo, device):
    idx, names, raws, pts, kept = zip(*todo)
    return list(idx), list(names), list(raws), torch.stack(pts).to(device), list(kept)


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if hasattr(model, "forward_head"):
        return pooled_features(model, x)
    encoder = model if isinstance(model, TokenEncoder) else model.encoder
    return pool_tokens(encoder(x).tokens, None, HEAD_DEFAULTS["global_pool"])


@torch.no_grad()
def predict(model: nn.Module, inputs, topk: int = 5, vote: int = 1, batch_size: int = 1, seed: int = 0,
            on_error: Optional[Callable[[str, Exception], None]] = None, progress=None) -> List[Dict[str, Any]]:
    """Per readable input ``{"input", "labels", "classes", "probs"}``: the ``topk`` most probable classes (names
    from ``model.pretrained_cfg["class_names"]``, else the label numbers as text), most probable first.
    ``vote``: the softmax of the logits averaged over that many randomly scaled and shifted views (the
    engine's default voting view), seeded. ``on_error(name, error)``: called for an input that cannot be read
    (default: the error is raised)."""
    if is_segmenter(model) or not getattr(model, "num_classes", None):
        raise UserError(f"{_cfg(model).get('name')}: predict needs a classifier; this model gives "
                        f"{'part labels (pointmap.segment)' if is_segmenter(model) else 'features (pointmap.embed)'}")
    model.eval()
    names = _cfg(model).get("class_names")
    if not names or len(names) != model.num_classes:  # no names, or a head that is not the card's (reset_classifier)
        names = [str(c) for c in range(model.num_classes)]
    k = max(1, min(int(topk), model.num_classes))
    out = []
    for _, inames, _, x, _ in _batches(model, inputs, seed, batch_size, on_error, progress):
        logits = model(x).float()
        if vote > 1:
            view = ScaleTranslate()
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                torch.manual_seed(seed)
                logits = torch.stack([model(view(x)).float() for _ in range(vote)]).mean(0)
        probs, labels = F.softmax(logits, dim=-1).topk(k, dim=-1)
        for name, p, lab in zip(inames, probs.tolist(), labels.tolist()):
            out.append({"input": name, "labels": lab, "classes": [names[c] for c in lab], "probs": p})
    return out


@torch.no_grad()
def embed(model: nn.Module, inputs, batch_size: int = 1, seed: int = 0,
          on_error: Optional[Callable[[str, Exception], None]] = None, progress=None) -> np.ndarray:
    """Features (M, D) float32 of the readable inputs, in input order (an input ``on_error`` took has no row):
    a classifier's pooled
    features (``forward_head(tokens, pre_logits=True)``), or an encoder's tokens pooled
    ([max; mean], :data:`~pointmap.models.HEAD_DEFAULTS`)."""
    model.eval()
    feats = [_features(model, x).float().cpu()
             for _, _, _, x, _ in _batches(model, inputs, seed, batch_size, on_error, progress)]
    dim = getattr(model, "num_features", None) or 2 * getattr(model, "embed_dim", 0)
    return torch.cat(feats).numpy() if feats else np.zeros((0, dim), np.float32)


def _category_index(model: nn.Module, category: Union[int, str]) -> int:
    names = model.pretrained_cfg.get("class_names")
    if isinstance(category, str):
        if names and category in names:
            return names.index(category)
        if category.isdigit():
            category = int(category)
        else:
            raise UserError(f"category {category!r} is not one of the model's categories "
                            f"({', '.join(names) if names else f'numbers 0..{model.num_categories - 1}'})")
    if not 0 <= int(category) < model.num_categories:
        raise UserError(f"category {category} is out of range: the model has {model.num_categories} categories")
    return int(category)


@torch.no_grad()
def segment(model: nn.Module, inputs, category: Union[int, str, Sequence[Union[int, str]]] = 0,
            batch_size: int = 1, seed: int = 0, on_error: Optional[Callable[[str, Exception], None]] = None,
            progress=None) -> List[Dict[str, Any]]:
    """Per readable input ``{"input", "points" (N, 3), "parts" (N,)}``: every point of the input with the part
    label of the nearest point the model saw, among the category's own parts where the card's data set names
    them (``pretrained_cfg["category_parts"]``). ``category``: the shape category (a name of
    ``pretrained_cfg["class_names"]`` or an index), one for all inputs or one per input."""
    from ..ops import knn

    if not is_segmenter(model):
        raise UserError(f"{_cfg(model).get('name')}: segment needs a part-segmentation model")
    model.eval()
    items = _as_list(inputs)
    cats = list(category) if isinstance(category, (list, tuple)) else [category] * len(items)
    if len(cats) != len(items):
        raise UserError(f"{len(cats)} categories for {len(items)} inputs")
    cats = [_category_index(model, c) for c in cats]
    table, names = _cfg(model).get("category_parts"), _cfg(model).get("class_names")
    allowed = None
    if table and names:
        allowed = torch.zeros(model.num_categories, model.num_parts, dtype=torch.bool)
        for i, name in enumerate(names):
            allowed[i, table[name]] = True
        allowed = allowed.to(next(model.parameters()).device)
    out = []
    for idx, inames, raws, x, kept in _batches(model, items, seed, batch_size, on_error, progress):
        cat = torch.tensor([cats[i] for i in idx], device=x.device)
        logits = model(x, cat)
        if allowed is not None:  # a category's own parts only, as ShapeNetPart is scored
            logits = logits.masked_fill(~allowed[cat].unsqueeze(1), float("-inf"))
        parts = logits.argmax(-1).cpu()                                         # (B, n)
        for name, raw, k, p in zip(inames, raws, kept, parts):
            nearest = knn(raw.unsqueeze(0), raw[k].unsqueeze(0), 1)[1][0, :, 0]   # each point's nearest seen point
            out.append({"input": name, "points": raw.numpy(), "parts": p[nearest].numpy().astype(np.int64)})
    return out
