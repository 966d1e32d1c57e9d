"""Config loading: _base_ relative to the naming file, deep merge, validation, overrides, saving."""
import os

import pytest

from pointmap.config import Config, ConfigError, apply_overrides, config_from_dict, load_config, save_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def test_base_resolved_relative_to_naming_file_and_deep_merged(tmp_path, monkeypatch):
    _write(tmp_path / "a" / "_base_" / "root.yaml",
           "optim: {lr: 1.0e-3, epochs: 300}\ndata: {name: shapenet55, batch_size: 128}\n")
    _write(tmp_path / "a" / "mid.yaml", "_base_: _base_/root.yaml\noptim: {epochs: 100}\n")
    path = _write(tmp_path / "a" / "leaf.yaml", "_base_: [mid.yaml]\ndata: {batch_size: 64}\n")
    monkeypatch.chdir(tmp_path)  # bases must not resolve from the working directory
    cfg = load_config(path)
    assert cfg.optim.lr == 1e-3 and cfg.optim.epochs == 100
    assert cfg.data.name == "shapenet55" and cfg.data.batch_size == 64
    assert cfg.name == "leaf"


def test_unknown_key_suggests_nearest(tmp_path):
    path = _write(tmp_path / "c.yaml", "optim: {lrr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'.*did you mean 'optim.lr'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"'optim.weight_decay'"):
        config_from_dict({"optim": {"weight_decy": 0.1}})
    with pytest.raises(ConfigError, match=r"did you mean 'model'"):
        config_from_dict({"modle": {}})


def test_wrong_type_names_key_and_type(tmp_path):
    with pytest.raises(ConfigError, match=r"'data.batch_size' must be int, got 'big'"):
        config_from_dict({"data": {"batch_size": "big"}})
    with pytest.raises(ConfigError, match=r"'eval.protocol' must be 'clean' \| 'peer'"):
        config_from_dict({"eval": {"protocol": "best"}})
    with pytest.raises(ConfigError, match=r"'train.compile' must be bool"):
        config_from_dict({"train": {"compile": 1}})


def test_floats_from_yaml_strings_and_ints():
    cfg = config_from_dict({"optim": {"lr": "1e-3", "weight_decay": 0, "grad_clip": 10}})
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.weight_decay, float) and cfg.optim.grad_clip == 10.0


def test_overrides_parse_yaml_values_and_are_validated(tmp_path):
    path = _write(tmp_path / "c.yaml", "model: {name: hybridnet_s}\n")
    cfg = load_config(path, ["optim.lr=5e-4", "model.args.embed_dim=32", "optim.grad_clip=null",
                             "data.train_transforms=[{name: normalize}]", "eval.protocol=peer"])
    assert cfg.optim.lr == 5e-4 and cfg.model.args == {"embed_dim": 32} and cfg.optim.grad_clip is None
    assert cfg.data.train_transforms == [{"name": "normalize"}] and cfg.eval.protocol == "peer"
    with pytest.raises(ConfigError, match=r"did you mean 'optim.epochs'"):
        load_config(path, ["optim.epoch=3"])
    with pytest.raises(ConfigError, match="bad override"):
        apply_overrides({}, ["optim.lr"])


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = _write(tmp_path / "bad.yaml", "optim: {lr: [1, \n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(bad)
    missing_base = _write(tmp_path / "mb.yaml", "_base_: gone.yaml\n")
    with pytest.raises(FileNotFoundError, match="gone.yaml"):
        load_config(missing_base)
    cyc = _write(tmp_path / "cyc.yaml", "_base_: cyc.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(cyc)
    for err in (ConfigError("x"),):
        assert isinstance(err, ValueError)  # tools report ValueError as a one-line error


def test_save_then_load_round_trip(tmp_path):
    cfg = config_from_dict({"task": "classification", "optim": {"betas": [0.9, 0.95]}, "hooks": [{"name": "x"}]})
    cfg.name = "rt"
    save_config(cfg, str(tmp_path / "run" / "config.yaml"))
    again = load_config(str(tmp_path / "run" / "config.yaml"))
    assert again == cfg


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(os.path.join(REPO, "cfgs")) if f.endswith(".yaml")
                                         and not f.startswith("ablation"))  # ablation configs: test_ablation.py
                         if os.path.isdir(os.path.join(REPO, "cfgs")) else [])
def test_shipped_configs_validate(name):
    from pointmap.engine import TASKS

    cfg = load_config(os.path.join(REPO, "cfgs", name))
    assert isinstance(cfg, Config) and cfg.task in TASKS
