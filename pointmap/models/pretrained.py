"""Pretrained weights by name: the peers' published files and folders written by ``tools/export.py``, each
described by one :class:`ModelCard`, downloaded once (:mod:`pointmap.download`) and loaded strictly.

    pointmap.list_pretrained("pointmae.*")                              # the entries of pretrained.yaml
    model = pointmap.create_model("pointmae", pretrained="pointmae.scan_hardest")   # Point-MAE's 15-class model
    model = pointmap.create_model("pointmamba", num_classes=40, pretrained=True)    # its ShapeNet encoder, new head
    model = pointmap.create_model("hybridnet_s", pretrained="exports/finetune_demo")  # an exported run
    model = pointmap.create_model("hybridnet_s", pretrained="hf-hub:me/map-demo@v1")   # an export on the Hub
    load_pretrained(pretrainer, "pointmae.shapenet55")                 # into any model, as --ckpt does

What ``pretrained`` may be (:func:`resolve_pretrained`): ``True`` (the preset's default entry), an entry name
of :func:`list_pretrained`, a folder with ``config.json`` (the card) and ``model.safetensors`` (an export), the
same on the Hugging Face Hub (``hf-hub:owner/repo[@revision]``, :mod:`pointmap.hub`), or a checkpoint file
(format detected from its keys). An entry name wins over a file of the same name (``./name`` for the file).
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple, Union

from torch import nn

from ..download import fetch, fetch_by_hand, sha256_of
from ..errors import ConfigError, UserError, UserFileNotFoundError, one_line
from ..hub import hub_file, is_hub_spec, parse_hub_spec
from .checkpoint import LoadResult, load_checkpoint

__all__ = ["ModelCard", "absolute_spec", "check_pretrained", "list_pretrained", "pretrained_card", "resolve_pretrained",
           "load_pretrained", "read_card", "named_classes", "pretrained_cfg", "CARD_FILE", "WEIGHTS_FILE",
           "DEFAULT_NUM_POINTS"]

logger = logging.getLogger(__name__)

CARD_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
OLD_CARD_FILE = "card.json"  # what exports of pointmap 0.1 named the card
DEFAULT_NUM_POINTS = 1024  # a preset's input without a card: ModelNet40's and ShapeNet's 1024 points
TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained.yaml")


@dataclasses.dataclass
class ModelCard:
    """What a weight file is and how to use it: a peer's published file (an entry of ``pretrained.yaml``) or
    a pointmap run exported with ``pointmap export`` (its ``config.json``). ``preset``, ``args`` and ``head``
    build the model the file fills whole: ``create_model(preset, **args, **head)``; ``pretrainer``, for a
    pretraining file, the objective arguments of ``create_pretrainer`` (its decoder). ``num_points`` points
    of a ``data`` cloud after ``transforms`` (config vocabulary: ``data.test_transforms``) are the input.
    ``metrics``: ``reported`` (the peer's number) or the run's ``test`` / ``test_vote``; ``protocol``: how
    the checkpoint was chosen (``peer``: on the test set; ``clean``: on a held-out validation split)."""

    name: str
    preset: str
    what: str = ""
    args: Dict[str, Any] = dataclasses.field(default_factory=dict)
    head: Dict[str, Any] = dataclasses.field(default_factory=dict)
    pretrainer: Optional[Dict[str, Any]] = None
    format: str = "pointmap"
    url: Optional[str] = None  # a published file: https://..., or hf-hub:owner/repo/path on the Hugging Face Hub
    revision: Optional[str] = None  # a Hub-hosted file: the revision (branch, tag or commit) it is read at
    page: Optional[str] = None  # a published file shared through a web page only (OneDrive): fetched by hand,
    by_hand: Optional[str] = None  # to $POINTMAP_HOME/by_hand/<by_hand> (pointmap.download.fetch_by_hand)
    weights: Optional[str] = None  # an export: the file beside the card
    sha256: Optional[str] = None  # an export: of ``weights``
    source: str = ""  # where the file is linked (README line), or the run it was exported from
    licence: str = "not stated"
    config: Optional[str] = None  # the recipe, cfgs/<config> (an export: the run's config name)
    data: Dict[str, Any] = dataclasses.field(default_factory=dict)
    classes: Union[None, str, List[str]] = None  # a data set's name (its class list) or the names
    num_points: Optional[int] = None
    transforms: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    metrics: Dict[str, Any] = dataclasses.field(default_factory=dict)
    protocol: Optional[str] = None
    default: bool = False
    notes: str = ""
    provenance: Dict[str, Any] = dataclasses.field(default_factory=dict)  # an export: versions and commits

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str) -> "ModelCard":
        fields = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in fields:
                match = difflib.get_close_matches(str(key), fields, n=1)
                hint = f" (did you mean {match[0]!r}?)" if match else ""
                raise ConfigError(f"{where}: unknown card field {key!r}{hint}")
        missing = [k for k in ("name", "preset") if not data.get(k)]
        if data.get("page") and not data.get("by_hand"):
            missing.append("by_hand (where a file of a page goes)")
        if missing:
            raise ConfigError(f"{where}: the card has no {' and no '.join(missing)}")
        return cls(**data)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def class_names(self) -> Optional[List[str]]:
        """The class (or, for part segmentation, category) names, in label order."""
        if not isinstance(self.classes, str):
            return self.classes
        names = named_classes(self.classes)
        if names is None:
            raise ConfigError(f"card {self.name}: classes {self.classes!r} names no class list pointmap knows")
        return names

    def model_kwargs(self, num_classes: Optional[int] = None, **overrides) -> Dict[str, Any]:
        """``create_model`` arguments: the card's ``args`` and ``head``, then ``overrides``; ``num_classes`` or
        ``num_parts`` given replace the card's head (its tensors are then set aside by the load)."""
        head = {} if num_classes is not None or "num_parts" in overrides else dict(self.head)
        out = {**self.args, **head, **overrides}
        if num_classes is not None:
            out["num_classes"] = num_classes
        return out


def named_classes(dataset: str) -> Optional[List[str]]:
    """The class names of a data set with a fixed list (``modelnet40``, ``scanobjectnn``; ``shapenetpart``: its
    categories), in label order; None for another name."""
    from ..data.modelnet import MODELNET40_CLASSES
    from ..data.scanobjectnn import CLASSES as SCANOBJECTNN_CLASSES
    from ..data.shapenetpart import SEG_CLASSES

    named = {"modelnet40": MODELNET40_CLASSES, "scanobjectnn": SCANOBJECTNN_CLASSES, "shapenetpart": SEG_CLASSES}
    return list(named[dataset]) if dataset in named else None


def named_parts(dataset: Optional[str], categories: Optional[List[str]]) -> Optional[Dict[str, List[int]]]:
    """Category name -> its global part ids for a part-segmentation data set pointmap knows (``shapenetpart``,
    ``synthetic_parts``), in the card's category order; None for another."""
    if dataset == "shapenetpart":
        from ..data.shapenetpart import SEG_CLASSES

        return {k: list(v) for k, v in SEG_CLASSES.items()}
    if dataset == "synthetic_parts" and categories:
        from ..data.synthetic import part_label_table

        return part_label_table(categories)
    return None


@functools.lru_cache(maxsize=None)
def _table() -> Dict[str, ModelCard]:
    import yaml

    with open(TABLE, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    return {name: ModelCard.from_dict({"name": name, **entry}, f"{TABLE} [{name}]") for name, entry in raw.items()}


def list_pretrained(filter: Optional[str] = None) -> List[str]:  # noqa: A002  (timm's name for it)
    """Sorted entry names, optionally filtered by a shell-style pattern (``"pointmae.*"``, ``"*scan_hardest*"``)."""
    names = sorted(_table())
    return fnmatch.filter(names, filter) if filter else names


def _did_you_mean(name: str) -> str:
    match = difflib.get_close_matches(name, list_pretrained(), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def pretrained_card(name: str) -> ModelCard:
    """The entry ``name`` of :func:`list_pretrained`."""
    if name not in _table():
        raise UserError(f"unknown pretrained entry {name!r}{_did_you_mean(name)}; see pointmap.list_pretrained()")
    return _table()[name]


def default_card(preset: str) -> ModelCard:
    """The entry ``create_model(preset, pretrained=True)`` loads."""
    for card in _table().values():
        if card.preset == preset and card.default:
            return card
    have = sorted({c.preset for c in _table().values()})
    raise UserError(f"preset {preset!r} has no published weights (presets with some: {', '.join(have)}); "
                    f"pass pretrained=<an exported folder or a checkpoint file>")


def absolute_spec(spec: str) -> str:
    """``spec`` as a config records it: an entry name as it is, a path made absolute."""
    return spec if spec in _table() or is_hub_spec(spec) else os.path.abspath(spec)


def read_card(folder: str) -> ModelCard:
    """The card of an exported folder (``config.json``; ``card.json`` in an export of pointmap 0.1)."""
    path = os.path.join(folder, CARD_FILE)
    if not os.path.isfile(path) and os.path.isfile(os.path.join(folder, OLD_CARD_FILE)):
        path = os.path.join(folder, OLD_CARD_FILE)
    if not os.path.isfile(path):
        raise UserFileNotFoundError(f"{os.path.abspath(folder)} is a folder without {CARD_FILE}: not an export of "
                                    f"tools/export.py")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {one_line(e)}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return ModelCard.from_dict(data, path)


def resolve_pretrained(spec: Union[bool, str], preset: Optional[str] = None,
                       progress: Optional[bool] = None) -> Tuple[Optional[ModelCard], str]:
    """(card or None, local file) of ``spec`` (see the module docstring); an entry's file is downloaded into
    the cache if it is not there. ``preset``: the model being built (``True`` needs it; a card of another
    preset is an error)."""
    if spec is True:
        if preset is None:
            raise UserError("pretrained=True needs a preset name to pick its default entry")
        card = default_card(preset)
    elif not isinstance(spec, (str, os.PathLike)) or isinstance(spec, bool):
        raise UserError(f"pretrained must be True, an entry name, a folder or a file; got {spec!r}")
    elif str(spec) in _table():
        card = _table()[str(spec)]
    elif is_hub_spec(spec):
        return _from_hub(str(spec), preset)
    elif os.path.isdir(spec):
        card = read_card(str(spec))
        path = os.path.join(str(spec), card.weights or WEIGHTS_FILE)
        if not os.path.isfile(path):
            raise UserFileNotFoundError(f"{os.path.abspath(spec)}: the card names {card.weights}, which is not there")
        _check_export(card, path, spec, preset)
        return card, path
    elif os.path.isfile(spec):
        return None, str(spec)
    else:
        check_pretrained(spec)
    _check_preset(card, preset, card.name)
    if is_hub_spec(card.url):
        repo, file, _ = parse_hub_spec(card.url)
        return card, hub_file(repo, file, card.revision)
    if card.page:
        return card, fetch_by_hand(card.page, card.by_hand)
    return card, fetch(card.url, progress=progress)


def _check_export(card: ModelCard, path: str, spec, preset: Optional[str]) -> None:
    if card.sha256 and sha256_of(path) != card.sha256:
        raise UserError(f"{path}: its sha256 is not the {card.sha256} its card recorded (the file changed after the "
                        f"export); export the run again")
    _check_preset(card, preset, spec)


def _from_hub(spec: str, preset: Optional[str]) -> Tuple[ModelCard, str]:
    """(card, local weights) of an export on the Hub, ``hf-hub:owner/repo[@revision]``."""
    repo, file, revision = parse_hub_spec(spec)
    if file:
        raise UserError(f"{spec!r}: name the repository of an export (hf-hub:owner/repo[@revision]), not a file in it")
    card_path = hub_file(repo, CARD_FILE, revision)
    card = read_card(os.path.dirname(card_path))
    path = hub_file(repo, card.weights or WEIGHTS_FILE, revision)
    _check_export(card, path, spec, preset)
    try:  # the run's config too, beside the card in the same snapshot (what pointmap visualize builds from)
        hub_file(repo, "config.yaml", revision)
    except UserError as e:
        logger.debug("%s: no config.yaml (%s)", spec, e)
    return card, path


def check_pretrained(spec) -> None:
    """A one-line error for weights that are neither a file, a folder nor an entry of :func:`list_pretrained`,
    before anything is downloaded, built or written (``True`` names the preset's default entry)."""
    if spec is True or str(spec) in _table() or os.path.exists(str(spec)):
        return
    if is_hub_spec(spec):
        parse_hub_spec(spec)  # its form only: the Hub is asked when the weights are read
        return
    raise UserFileNotFoundError(f"pretrained weights {spec}: no such file or folder, and not an entry of "
                                f"pointmap.list_pretrained(){_did_you_mean(str(spec))}")


def _check_preset(card: ModelCard, preset: Optional[str], spec) -> None:
    if preset is not None and card.preset != preset:
        raise UserError(f"pretrained {str(spec)!r} holds weights of preset {card.preset!r}, not {preset!r}: "
                        f"create_model({card.preset!r}, pretrained={str(spec)!r})")


def load_pretrained(model: nn.Module, spec: Union[bool, str], strict: bool = True, whole: bool = False,
                    progress: Optional[bool] = None) -> LoadResult:
    """Load ``spec``'s weights into ``model`` (an encoder, a classifier, a part segmenter, a pretrainer) with
    :func:`~pointmap.models.load_checkpoint`'s rules (``strict``: every encoder tensor from the file;
    ``whole``: every tensor of the model); an entry's file is read in its own format."""
    card, path = resolve_pretrained(spec, progress=progress)
    return load_checkpoint(model, path, source=card.format if card else "auto", strict=strict, whole=whole)



def _modality(model: nn.Module) -> str:
    return getattr(getattr(model, "encoder", model), "modality", "points")


def _input_size(model: nn.Module) -> Optional[Tuple[int, ...]]:
    """(C, H, W) of an image model with a timm ``PatchEmbed`` (None when it has none)."""
    embed = next((m for m in model.modules() if hasattr(m, "img_size") and hasattr(m, "proj")), None)
    if embed is None:
        return None
    return (int(embed.proj.in_channels), *(int(v) for v in embed.img_size))


def pretrained_cfg(preset: str, model: nn.Module, card: Optional[ModelCard] = None, own_head: bool = True,
                   source: Optional[str] = None) -> Dict[str, Any]:
    """``model.pretrained_cfg`` (timm's name): what a user of ``model`` needs to feed it and read its output.

    ``name``, ``preset``, ``modality``; points: ``num_points`` and the test-time ``transforms`` (config
    entries, :func:`pointmap.data.create_transform` builds them: the card's, else farthest point sampling of
    :data:`DEFAULT_NUM_POINTS` points and ``normalize``); images: ``input_size`` (C, H, W); ``num_classes``
    (None: an encoder; 0: pooled features) or ``num_parts`` / ``num_categories`` / ``category_parts`` (each
    category's part ids, for a data set pointmap knows); ``class_names`` (the card's, when the model keeps the
    card's head; part segmentation: its shape categories); ``source``, ``url``,
    ``file``, ``licence``, ``metrics``, ``protocol`` of the weights (None / empty for a preset's random ones).
    """
    modality = _modality(model)
    out: Dict[str, Any] = {"name": card.name if card else preset, "preset": preset, "modality": modality}
    if modality == "points":
        points = (card.num_points if card else None) or DEFAULT_NUM_POINTS
        transforms = list(card.transforms) if card else [{"name": "sample", "num_points": points, "method": "fps"},
                                                          {"name": "normalize"}]
        out.update(num_points=points, transforms=[dict(t) for t in transforms])
    else:
        out.update(input_size=_input_size(model), transforms=[])
    out["class_names"] = card.class_names if card is not None and own_head else None
    if hasattr(model, "num_parts"):
        parts = named_parts(card.data.get("name"), out["class_names"]) if out["class_names"] else None
        out.update(num_parts=model.num_parts, num_categories=model.num_categories, category_parts=parts)
    else:
        out["num_classes"] = getattr(model, "num_classes", None)
    out.update(source=(card.source or card.url) if card else source, url=card.url if card else None, file=source,
               licence=card.licence if card else None, metrics=dict(card.metrics) if card else {},
               protocol=card.protocol if card else None)
    return out
