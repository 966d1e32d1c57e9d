"""The wandb hook: offline (no account) a run's config, logs and results land in the run folder, twice in one
process; without the package, naming the hook is one line before anything is written."""
import glob
import json
import os
import re
import sys

import pytest

from pointmap.config import load_config
from pointmap.engine import Trainer
from pointmap.engine.tasks import build_task
from pointmap.errors import UserError

from .test_tools import CFGS, TINY_PRETRAIN


def _run(out, name):
    cfg = load_config(os.path.join(CFGS, "map_demo.yaml"), TINY_PRETRAIN + [
        f"train.output_dir={out}", f"exp_name={name}", "hooks=[{name: wandb, project: pm-test, mode: offline}]"])
    return Trainer(cfg, device="cpu").fit()


def _values(record: bytes, key: str):
    """The JSON values logged under ``key`` in a W&B run file (protobuf records: the key, then value_json)."""
    out = []
    for m in re.finditer(re.escape(key.encode()) + rb"\x82\x01", record):
        size = record[m.end()]
        out.append(json.loads(record[m.end() + 1:m.end() + 1 + size]))
    return out


def test_offline_runs_record_config_logs_and_results_in_the_run_folder(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    results = {name: _run(tmp_path, name) for name in ("a", "b")}  # two runs in one process: two W&B runs
    wandb.teardown()  # the files are written by W&B's service process: wait for it
    for name, res in results.items():
        (path,) = glob.glob(os.path.join(res["work_dir"], "wandb", "offline-run-*", "run-*.wandb"))
        record = open(path, "rb").read()
        loss = res["best"]["value"]
        # each value in its history record (and W&B's summary of the last one)
        logged = _values(record, "epoch/train_loss") + _values(record, "best.value")
        assert len(logged) >= 2 and logged == pytest.approx([loss] * len(logged))
        lrs = _values(record, "train/lr")
        assert _values(record, "train/loss") and lrs and all(0 < lr <= 1e-3 for lr in lrs)  # optim.lr: 1e-3
        assert f"map_demo/{name}".encode() in record and b"pm-test" in record
        assert set(_values(record, "epochs_done")) == {1}


def test_without_wandb_the_hook_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    cfg = load_config(os.path.join(CFGS, "map_demo.yaml"), TINY_PRETRAIN + ["hooks=[{name: wandb}]"])
    with pytest.raises(UserError, match=r'^hook wandb needs the wandb package \(.*\): pip install "pointmap\[wandb\]"$'):
        build_task(cfg)  # the config's check, before a run folder exists
