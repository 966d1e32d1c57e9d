"""Runs that cannot silently differ (issue 29): --resume continues the same run or says what changed (--force
goes on and records it), each process resumes its own RNG state, SIGTERM and SIGINT exit as a shell reports
them, a redirected log has no progress bar in it, and the epoch line says the lr of its first and last step."""
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from pointmap.config import OptimConfig, config_to_dict, load_config
from pointmap.engine import Checkpointer, Hook, RunDir, Trainer, TrainState, load_file
from pointmap.engine.checkpoint import get_rng_state
from pointmap.engine.logging import Progress
from pointmap.engine.optim import LRSchedule
from pointmap.engine.resume import RESUME_FREE, check_resume, config_changes, resumed_step
from pointmap.errors import ConfigError

from .test_engine import TinyPretrain, tiny_cfg
from .test_run_layer import SendSigint  # noqa: F401  (registers the test_sigint hook)
from .test_tools import CFGS, REPO, TINY_PRETRAIN, tool

DEMO = os.path.join(CFGS, "map_demo.yaml")


def test_resume_with_another_batch_size_is_refused_unless_forced(tmp_path, monkeypatch, capsys):
    """Interrupted after its first epoch, then --resume data.batch_size=16: one line naming the key, exit 2,
    nothing of the run touched; --force goes on, recording the change, and config.yaml stays the original."""
    args = ["--cfg", DEMO, "--device", "cpu", *TINY_PRETRAIN, "data.options={size: 32, num_points: 64}",
            "optim.epochs=2", f"train.output_dir={tmp_path}", "hooks=[{name: test_sigint, at: 4}]"]
    code, out, err = tool("pretrain.py", *args, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 130 and err.strip().splitlines()[-1].startswith("interrupted at epoch 2 step 0; continue with: ")
    run = tmp_path / "map_demo" / "default"
    before = {f: (run / f).read_bytes() for f in ("config.yaml", "meta.json", "ckpt-last.pth", "log.txt")}
    code, out, err = tool("pretrain.py", *args, "data.batch_size=16", "--resume", monkeypatch=monkeypatch, capsys=capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --resume: "), err
    assert "data.batch_size (8 -> 16)" in lines[0] and "--force" in lines[0] and "optim" not in lines[0]
    assert {f: (run / f).read_bytes() for f in before} == before  # refused before anything was written
    code, out, err = tool("pretrain.py", *args, "data.batch_size=16", "--resume", "--force", monkeypatch=monkeypatch,
                          capsys=capsys)
    assert code == 0, err
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["resume"]["forced"] == ["data.batch_size"]
    assert meta["resume"]["changed"]["data.batch_size"] == [8, 16]
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["batch_size"] == 8  # the original's
    assert load_file(str(run / "ckpt-last.pth"))["config"]["data"]["batch_size"] == 16  # what it went on with
    assert [h["epoch"] for h in json.loads((run / "metrics.json").read_text())["history"]] == [1, 2]


def test_which_changes_a_resume_accepts():
    saved = config_to_dict(load_config(DEMO))
    free = ["train.log_every=3", "data.num_workers=2", "data.eval_batch_size=4", "train.progress=false",
            "hooks=[{name: evaluate, every: 2}, {name: vis}]", "ops={fps: torch}", "eval.vote=3", "optim.epochs=20",
            "optim.extra_epochs=1", "train.compile=true", "pretrained=/some/weights.pth"]
    changed, training = config_changes(saved, config_to_dict(load_config(DEMO, free)))
    assert training == [] and set(changed) >= {"train.log_every", "optim.epochs", "hooks"}
    trained = {"data.batch_size=16": "data.batch_size", "optim.epochs=5": "optim.epochs", "optim.lr=1e-2": "optim.lr",
               "model.args.embed_dim=32": "model.args.embed_dim", "objective.mask_ratio=0.7": "objective.mask_ratio",
               "train.seed=3": "train.seed", "data.train_transforms=[]": "data.train_transforms",
               "eval.split_seed=2": "eval.split_seed", "train.precision=fp16": "train.precision",
               "hooks=[{name: best, metric: acc}]": "hooks[best]", "model.args={}": "model.args.layout"}
    for override, key in trained.items():
        assert key in config_changes(saved, config_to_dict(load_config(DEMO, [override])))[1], override
    assert "ops" in RESUME_FREE and "data.batch_size" not in RESUME_FREE
    old = {**saved, "train": {**saved["train"], "a_key_since_removed": 1}}  # an older pointmap's config
    assert config_changes(old, saved) == ({}, [])


def test_another_world_size_is_named_and_each_rank_keeps_its_own_rng(tmp_path):
    module = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    sched, scaler = LRSchedule(opt, OptimConfig(), 1), torch.amp.GradScaler("cuda", enabled=False)
    cfg = tiny_cfg()
    rngs = []
    for seed in (10, 11):  # the states of two processes
        torch.manual_seed(seed)
        rngs.append(get_rng_state(module))
    ckpt = {"model": module.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict(), **TrainState().state_dict(1), "rng": rngs, "rng_after_iter": False,
            "config": config_to_dict(cfg), "meta": {"world_size": 2}}
    torch.save(ckpt, tmp_path / "ckpt-last.pth")
    with pytest.raises(ConfigError, match=r"world_size \(2 -> 1\)"):
        check_resume(str(tmp_path / "ckpt-last.pth"), cfg, world_size=1)
    assert check_resume(str(tmp_path / "ckpt-last.pth"), cfg, world_size=1, force=True).forced == ["world_size"]

    def resumed_draw(rank, world, saved):
        torch.manual_seed(100 + rank)  # the process's own seed
        Checkpointer(RunDir(str(tmp_path)), module, opt, sched, scaler, config={}, meta={}, rank=rank, world_size=world).resume(
            TrainState(), {**ckpt, "rng": saved})
        return torch.rand(3)

    def drawn_after(seed):
        torch.manual_seed(seed)
        return torch.rand(3)

    assert torch.equal(resumed_draw(1, 2, rngs), drawn_after(11))  # its own state, not rank 0's
    assert torch.equal(resumed_draw(1, 2, rngs[:1]), drawn_after(101))  # none saved for it: its seed's
    assert torch.equal(resumed_draw(0, 2, rngs[:1]), drawn_after(10))


def test_a_forced_batch_change_mid_epoch_goes_on_after_the_samples_trained():
    assert resumed_step(3, 8, 8) == 3 and resumed_step(0, 8, 16) == 0
    assert resumed_step(4, 8, 16) == 2 and resumed_step(3, 8, 16) == 1  # 24 samples: 16 done, 8 again
    assert resumed_step(2, 16, 8) == 4


class StepLrs(Hook):
    def __init__(self, seen):
        self.seen = seen

    def after_step(self, trainer, logs):
        self.seen.append((trainer.state.epoch, logs["lr"]))


def test_off_a_terminal_progress_is_log_lines_and_the_epoch_says_its_lr_range(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Progress, "every_s", 0.0)  # a progress line at every log point but the epoch's last
    cfg = tiny_cfg(optim={"epochs": 2}, train={"log_every": 2, "progress": True})
    seen = []
    res = Trainer(cfg, TinyPretrain(cfg), work_dir=str(tmp_path), device="cpu", hooks=[StepLrs(seen)]).fit()
    out = capsys.readouterr()
    assert "\r" not in out.out + out.err  # pytest's capture is no terminal: no bar
    progress = [ln for ln in out.out.splitlines() if "steps/s" in ln]
    assert [ln.split(" INFO ")[1].split(" |")[0] for ln in progress] == [
        "epoch 1/2 step 2/6", "epoch 1/2 step 4/6", "epoch 2/2 step 2/6", "epoch 2/2 step 4/6"]
    for entry in res["history"]:
        lrs = [lr for epoch, lr in seen if epoch == entry["epoch"] - 1]
        assert (entry["lr"], entry["lr_last"]) == pytest.approx((lrs[0], lrs[-1]))
    first = res["history"][0]
    assert first["lr"] < first["lr_last"]  # warmup: the epoch's lr climbs, and its line says from where to where
    assert f"| lr {first['lr']:.3g} -> {first['lr_last']:.3g} |" in (tmp_path / "log.txt").read_text()


def test_a_redirected_run_log_has_no_carriage_return(tmp_path):
    log = tmp_path / "out.log"
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "pretrain.py"), "--cfg", DEMO, "--device", "cpu",
                            *[a for a in TINY_PRETRAIN if not a.startswith("train.progress")], "optim.epochs=2",
                            f"train.output_dir={tmp_path}"], stdout=f, stderr=subprocess.STDOUT, timeout=300,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    text = log.read_text()
    assert r.returncode == 0, text
    assert "\r" not in text and "epoch 1/2 |" in text and "epoch 2/2 |" in text


def test_a_resume_may_extend_the_schedule_and_then_follows_the_longer_one(tmp_path):
    """optim.epochs may grow on resume: the added epochs train on the new cosine (the saved scheduler state
    would keep the old length, at min_lr after its end); shrinking it is refused."""
    from pointmap.engine.optim import lr_per_epoch

    short = tiny_cfg(optim={"epochs": 2, "warmup_epochs": 0, "min_lr": 1e-6})
    Trainer(short, TinyPretrain(short), work_dir=str(tmp_path), device="cpu").fit()
    longer = tiny_cfg(optim={"epochs": 4, "warmup_epochs": 0, "min_lr": 1e-6})
    res = Trainer(longer, TinyPretrain(longer), work_dir=str(tmp_path), device="cpu", resume=True).fit()
    expected = lr_per_epoch(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=longer.optim.lr), longer.optim, 6)
    assert [h["epoch"] for h in res["history"]] == [1, 2, 3, 4]
    assert [h["lr"] for h in res["history"][2:]] == pytest.approx(expected[2:]) and res["history"][3]["lr"] > 1e-5
    assert json.loads((tmp_path / "meta.json").read_text())["resume"] == {"changed": {"optim.epochs": [2, 4]},
                                                                          "forced": []}
    with pytest.raises(ConfigError, match=r"optim.epochs \(4 -> 3\)"):
        shorter = tiny_cfg(optim={"epochs": 3, "warmup_epochs": 0, "min_lr": 1e-6})
        Trainer(shorter, TinyPretrain(shorter), work_dir=str(tmp_path), device="cpu", resume=True).fit()
