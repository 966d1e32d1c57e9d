"""Experiment configs: yaml files with ``_base_``, validated against dataclasses, ``a.b=value`` overrides.

A config file may name one or more bases (``_base_: base.yaml`` or a list); each base path is resolved
relative to the file that names it, never to the working directory. Bases are merged first, in order,
then the file itself on top: mappings merge key by key, everything else (lists included) is replaced.
The merged mapping is checked against :class:`Config`: an unknown key is an error that names the
nearest valid key, a value of the wrong type is an error that names the key and the expected type.

    cfg = load_config("cfgs/map_shapenet.yaml", ["optim.lr=5e-4", "data.batch_size=64"])
    save_config(cfg, "experiments/map_shapenet/default/config.yaml")
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Sequence, Union

import yaml

from .errors import ConfigError, UserFileNotFoundError, bounded, check_interval
from .objective import ObjectiveConfig

__all__ = [
    "Config", "ModelConfig", "ObjectiveConfig", "DataConfig", "OptimConfig", "TrainConfig", "EvalConfig",
    "ConfigError", "load_config", "load_yaml", "apply_overrides", "config_from_dict", "config_to_dict", "check_values",
    "save_config", "RUN_ROOT", "as_trained", "configs_dir", "list_configs", "resolve_config",
]

RUN_ROOT = "experiments"  # where runs go: <RUN_ROOT>/<config name>/<exp_name>/ (train.output_dir, the ablation's)

@dataclass
class ModelConfig:
    name: str = "hybridnet_s"
    args: Dict[str, Any] = field(default_factory=dict)  # passed to pointmap.create_model as overrides


@dataclass
class DataConfig:
    name: str = "synthetic"
    root: Optional[str] = None
    options: Dict[str, Any] = field(default_factory=dict)  # passed to pointmap.data.build_dataset
    train_split: str = "train"
    test_split: Optional[str] = "test"  # None: no test set (pretraining)
    train_transforms: List[Dict[str, Any]] = field(default_factory=list)
    test_transforms: List[Dict[str, Any]] = field(default_factory=list)
    # the test split's transforms for a voting pass (None: test_transforms); the views are drawn from it
    # by eval.vote_view_transforms (the peers: FPS to 1200 here, a random 1024 of them per view)
    vote_transforms: Optional[List[Dict[str, Any]]] = None
    batch_size: int = bounded(32, "[1, inf)")  # total over all processes; each gets batch_size / world_size
    eval_batch_size: Optional[int] = bounded(None, "[1, inf)")  # None: batch_size
    num_workers: int = bounded(0, "[0, inf)")
    # repeated augmentation (DeiT's RASampler, timm's RepeatAugSampler): each epoch's shuffled order repeats
    # every sample this many times, split over the processes, and an epoch keeps the first
    # floor(len / repeated_aug_round) * repeated_aug_round of them (0: len); 1: off
    repeated_aug: int = bounded(1, "[1, inf)")
    repeated_aug_round: int = bounded(256, "[0, inf)")
    # classification: train on a stratified fraction of the labelled training shapes (low-data finetuning);
    # drawn after the clean protocol's validation hold-out, with label_seed (None: train.seed)
    label_fraction: float = bounded(1.0, "(0, 1]")
    label_seed: Optional[int] = None


@dataclass
class OptimConfig:
    lr: float = bounded(1e-3, "(0, inf)")
    # linear scaling: lr is the rate at a total batch of lr_base_size, the run trains at lr * data.batch_size /
    # lr_base_size (warmup_lr and min_lr unscaled; the MAP 2D release and DeiT: 512); None: lr as written
    lr_base_size: Optional[int] = bounded(None, "[1, inf)")
    weight_decay: float = bounded(0.05, "[0, inf)")
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = bounded(1e-8, "(0, inf)")
    epochs: int = bounded(300, "[1, inf)")
    warmup_epochs: int = bounded(10, "[0, inf)")
    warmup_lr: float = bounded(1e-6, "[0, inf)")
    min_lr: float = bounded(1e-6, "[0, inf)")
    grad_clip: Optional[float] = bounded(None, "(0, inf)")  # max global grad norm; None: no clipping
    # pointmap: no decay on 1-D tensors, biases and what models list in no_weight_decay() (Mamba's A_log,
    # tokens); peer: the peers' rule (no decay on tensors 1-D in the peer's layout, *.bias, *token*)
    weight_decay_rule: Literal["pointmap", "peer"] = "pointmap"
    # step: the cosine moves every optimizer step (pointmap); epoch: timm's scheduler.step(e) after epoch e,
    # so epoch e trains at the value for e - 1 and epochs 0 and 1 both at warmup_lr (the peers')
    schedule_step: Literal["step", "epoch"] = "step"
    extra_epochs: int = bounded(0, "[0, inf)")  # epochs the loop runs after the schedule's `epochs` (the peers' loop: 1)
    steps_per_batch: int = bounded(1, "[1, 2]")  # 2: step, clip, step again on the same gradients (Point-MAE part segmentation)

    @property
    def loop_epochs(self) -> int:
        """The number of epochs the training loop runs: ``epochs + extra_epochs``."""
        return self.epochs + self.extra_epochs


@dataclass
class TrainConfig:
    seed: int = 0
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"  # autocast dtype on CUDA; CPU always runs fp32
    # intra-op threads on the CPU for the run (None: torch's default, one per core); results depend on it
    cpu_threads: Optional[int] = bounded(None, "[1, inf)")
    compile: bool = False
    deterministic: bool = False
    output_dir: str = RUN_ROOT
    progress: bool = True  # tqdm bar on rank 0
    log_every: int = bounded(20, "[1, inf)")  # steps between reads of the loss from the device (logs, progress bar, NaN stop)
    overwrite: bool = False  # start afresh over an existing run instead of refusing
    find_unused_parameters: bool = False  # DDP
    # an exponential moving average of the weights, updated after every optimizer step (timm's ModelEmaV3) and
    # kept in the checkpoints as model_ema; ema_eval: the evaluations also score it (val_ema, test_ema)
    ema_decay: Optional[float] = bounded(None, "(0, 1)")
    ema_eval: bool = False
    probe: Optional[Literal["linear", "svm"]] = None  # classification with the encoder frozen: a linear layer
    # trained on its pooled features, or a linear SVM fitted on them (see pointmap.engine.probe)


@dataclass
class EvalConfig:
    protocol: Literal["clean", "peer"] = "clean"
    val_fraction: float = bounded(0.1, "(0, 1)")  # clean: stratified, seeded hold-out of train that picks the checkpoint
    split_seed: int = 0  # seeds the hold-out, independent of train.seed: all seeds share one split
    vote: int = bounded(1, "[1, inf)")  # views averaged at the final test pass (1: no voting)
    vote_rounds: int = bounded(1, "[1, inf)")  # peer protocol only: voting passes on the test set, the best one reported
    vote_view_transforms: Optional[List[Dict[str, Any]]] = None  # per view, on the batch (None: scale_translate)


@dataclass
class Config:
    task: str = "pretrain"  # a name in pointmap.engine.TASKS
    task_args: Dict[str, Any] = field(default_factory=dict)  # keyword arguments of the task object
    name: str = ""  # the config's name (file stem by default): experiments/<name>/<exp_name>/
    exp_name: str = "default"
    pretrained: Optional[str] = None  # weights to start from (--ckpt): pointmap, Point-MAE, PointMamba, MAP 3D
    pretrained_strict: bool = True  # false: load what fits from --ckpt, warn about the rest (partial load)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ops: Dict[str, str] = field(default_factory=dict)  # op -> backend, see pointmap.ops.set_backend
    hooks: List[Dict[str, Any]] = field(default_factory=list)  # [{name: ..., **args}], see engine.hooks


# ----------------------------------------------------------------------------- yaml + _base_

def load_yaml(path: str, _seen: Sequence[str] = ()) -> Dict[str, Any]:
    """Read one yaml file with its ``_base_`` chain resolved and merged (bases relative to ``path``)."""
    path = os.path.abspath(path)
    if path in _seen:
        raise ConfigError(f"config {path}: _base_ cycle through {' -> '.join(_seen)}")
    if not os.path.isfile(path):
        raise UserFileNotFoundError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {path}: {' '.join(str(e).split())}") from e
    if data is None:  # an empty file (or comments only) would silently train the defaults
        raise ConfigError(f"config {path} is empty: expected a mapping of config keys (see cfgs/ for examples)")
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: expected a mapping at the top level, got {type(data).__name__}")
    bases = data.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"config {path}: _base_ must be a path or a list of paths")
    merged: Dict[str, Any] = {}
    for base in bases:
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(path), base)
        merged = deep_merge(merged, load_yaml(base_path, tuple(_seen) + (path,)))
    return deep_merge(merged, data)


def deep_merge(base: Dict[str, Any], update: Dict[str, Any]) -> Dict[str, Any]:
    """``update`` over ``base``: mappings merge recursively, any other value replaces. Inputs untouched."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ----------------------------------------------------------------------------- overrides

def apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply ``a.b=value`` strings (value parsed as yaml: ``1e-3``, ``[1, 2]``, ``null``, ``true``)."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"bad override {item!r}: expected key.subkey=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part, {}), dict):
                raise ConfigError(f"bad override {item!r}: {'.'.join(parts[:i + 1])} is not a mapping")
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


# ----------------------------------------------------------------------------- validation

_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin is Union:
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return origin.__name__
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _check(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to ``tp`` (int -> float, '1e-3' -> float) or raise ConfigError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    if origin is Union:
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check(value, arg, key)
            except ConfigError:
                continue
    elif origin is Literal:
        if value in args:
            return value
    elif origin is list:
        if isinstance(value, (list, tuple)):
            return [_check(v, args[0] if args else Any, f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            return {str(k): _check(v, args[1] if args else Any, f"{key}.{k}") for k, v in value.items()}
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):  # yaml reads 1e-3 as a string
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _build(cls: type, data: Dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            raise ConfigError(f"unknown config key '{prefix}{key}'{_suggest(prefix, str(key), cls)}")
        kwargs[key] = _check(value, hints[key], prefix + key)
    return cls(**{k: v for k, v in kwargs.items() if k in names})


def _all_keys(cls: type, prefix: str = "") -> List[str]:
    keys = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(tp):
            keys += _all_keys(tp, prefix + f.name + ".")
    return keys


def _suggest(prefix: str, key: str, cls: type) -> str:
    local = [f.name for f in dataclasses.fields(cls)]
    match = difflib.get_close_matches(key, local, n=1, cutoff=0.5)
    if match:
        return f"; did you mean '{prefix}{match[0]}'?"
    match = difflib.get_close_matches(prefix + key, _all_keys(Config), n=1, cutoff=0.6)
    if match:
        return f"; did you mean '{match[0]}'?"
    return f"; valid keys here: {', '.join(prefix + n for n in local)}"


# Keys removed in 0.2 that every config saved by 0.1 (run folders, checkpoints) lists with these empty values:
# such a saved config still loads; a value set by a user is an unknown key.
_SAVED_BY_0_1 = {"train": ("eval_every", None), "objective": ("args", {})}


def config_from_dict(data: Dict[str, Any]) -> Config:
    """Validate a plain mapping (merged yaml) into a :class:`Config`: keys, types and values."""
    data = dict(data)
    for section, (key, empty) in _SAVED_BY_0_1.items():
        if isinstance(data.get(section), dict) and key in data[section] and data[section][key] == empty:
            data[section] = {k: v for k, v in data[section].items() if k != key}
    cfg = _build(Config, data)
    check_values(cfg)
    return cfg


def check_values(cfg: Config) -> None:
    """A :class:`ConfigError` naming the key for the first value the loaders, the optimizer or the sampler
    would reject (a batch size of 0, a negative lr, a fraction outside its interval, ...): each field's
    interval is declared beside it (:func:`~pointmap.errors.bounded`)."""
    for section in dataclasses.fields(cfg):
        part = getattr(cfg, section.name)
        if dataclasses.is_dataclass(part):
            for f in dataclasses.fields(part):
                if "interval" in f.metadata:
                    check_interval(f"{section.name}.{f.name}", getattr(part, f.name), f.metadata["interval"])
    if len(cfg.optim.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.optim.betas):
        raise ConfigError(f"config key 'optim.betas' must be two numbers in [0, 1), got {cfg.optim.betas}")


def as_trained(cfg: Config, device_type: str) -> Config:
    """``cfg`` as a run on ``device_type`` trains it: ``train.precision`` is an autocast dtype on CUDA only, so
    elsewhere the run (and its config.yaml) says fp32. A copy when anything changes."""
    if device_type == "cuda" or cfg.train.precision == "fp32":
        return cfg
    cfg = copy.deepcopy(cfg)
    cfg.train.precision = "fp32"
    return cfg


def config_to_dict(cfg: Config) -> Dict[str, Any]:
    return dataclasses.asdict(cfg)


def configs_dir() -> str:
    """The shipped configs: ``pointmap/cfgs`` in an installed wheel, the checkout's ``cfgs/`` (read in place)."""
    here = os.path.dirname(os.path.abspath(__file__))
    inside = os.path.join(here, "cfgs")
    return inside if os.path.isdir(inside) else os.path.join(os.path.dirname(here), "cfgs")


def list_configs() -> List[str]:
    """The shipped configs by name (``map_demo``, ``point_mae/finetune_modelnet``, ...), sorted; ``_base_``
    parts left out."""
    root, names = configs_dir(), []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith("_")]
        names += [os.path.relpath(os.path.join(folder, f), root)[:-5].replace(os.sep, "/") for f in files
                  if f.endswith(".yaml")]
    return sorted(names)


def resolve_config(spec: str) -> str:
    """The file ``spec`` names: an existing file, else a shipped config by name (``map_demo``,
    ``point_mae/finetune_modelnet``, with or without ``.yaml`` or a leading ``cfgs/``)."""
    if os.path.isfile(spec):
        return spec
    name = spec.replace("\\", "/")
    name = name[len("cfgs/"):] if name.startswith("cfgs/") else name
    name = name[:-5] if name.endswith(".yaml") else name
    shipped = os.path.join(configs_dir(), *name.split("/")) + ".yaml"
    if name and os.path.isfile(shipped):
        return shipped
    match = difflib.get_close_matches(name, list_configs(), n=1, cutoff=0.6)
    hint = f"; did you mean {match[0]!r}?" if match else "; `pointmap configs` lists the shipped ones"
    raise UserFileNotFoundError(f"config file not found: {os.path.abspath(spec)}, nor a shipped config of that "
                                f"name{hint}")


def load_config(path: str, overrides: Sequence[str] = ()) -> Config:
    """Load ``path`` (a file, or a shipped config's name: :func:`resolve_config`; with its ``_base_`` chain),
    apply ``a.b=value`` overrides, validate."""
    path = resolve_config(path)
    data = apply_overrides(load_yaml(path), overrides)
    try:
        cfg = config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    if not cfg.name:
        cfg.name = os.path.splitext(os.path.basename(path))[0]
    return cfg


def save_config(cfg: Config, path: str) -> None:
    """Write the merged, validated config as yaml (loadable again with :func:`load_config`)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False, default_flow_style=None)
