"""The engine options the peers' recipes need, each tested against what it must do and with pointmap's
default unchanged: per-epoch scheduling over extra epochs, the peers' weight-decay rule, two optimizer
steps per batch, FPS from a random start, sampling with replacement, voting rounds, ddof-0 spreads,
selection ties, the first evaluated epoch, a head wider than the data's classes, recipes without data."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from timm.scheduler import CosineLRScheduler

import pointmap
from pointmap.config import load_config
from pointmap.data.transforms import Sample, build_transforms
from pointmap.engine import Trainer, TrainState
from pointmap.engine.hooks import BestHook
from pointmap.engine.loop import OptimizerStep
from pointmap.engine.metrics import best_round, mean_std, summarize_seeds
from pointmap.engine.optim import build_optimizer, lr_per_epoch, param_groups
from pointmap.errors import ConfigError
from pointmap.ops import fps
from pointmap.experiments import describe_recipe

from .test_engine import TinyCls, TinyNet, TinyPretrain, tiny_cfg, weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCH_STEP = {"epochs": 3, "warmup_epochs": 1, "lr": 1e-2, "warmup_lr": 1e-4, "min_lr": 1e-5,
              "schedule_step": "epoch", "extra_epochs": 1}


# ----------------------------------------------------------------------------- schedule
def test_epoch_stepping_runs_extra_epochs_at_the_peers_lr(tmp_path):
    cfg = tiny_cfg(optim=EPOCH_STEP)
    res = Trainer(cfg, TinyPretrain(cfg), work_dir=str(tmp_path), device="cpu").fit()
    lrs = [h["lr"] for h in res["history"]]
    assert len(lrs) == 4 and res["epochs_done"] == 4
    # what timm gives when stepped the peers' way: epoch e trains at the value set by step(e - 1)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-2)
    sched = CosineLRScheduler(opt, t_initial=3, lr_min=1e-5, warmup_t=1, warmup_lr_init=1e-4, t_in_epochs=True)
    want = []
    for e in range(4):
        want.append(opt.param_groups[0]["lr"])
        sched.step(e)
    assert lrs == pytest.approx(want, rel=1e-12) and lrs[0] == lrs[1] == pytest.approx(1e-4)
    assert lr_per_epoch(build_optimizer(TinyNet(), cfg.optim), cfg.optim) == pytest.approx(lrs, rel=1e-12)
    assert "epoch 4/4" in (tmp_path / "log.txt").read_text()


def test_per_step_lr_per_epoch_does_not_depend_on_steps_per_epoch():
    cfg = tiny_cfg(optim={"epochs": 20, "warmup_epochs": 3}).optim
    one, many = (lr_per_epoch(build_optimizer(TinyNet(), cfg), cfg, n) for n in (1, 37))
    assert one == pytest.approx(many, rel=1e-9) and one[0] == pytest.approx(cfg.warmup_lr)


def test_epoch_stepping_resumes_exactly(tmp_path):
    from .test_engine import Crash

    cfg = tiny_cfg("classification", optim=EPOCH_STEP)
    Trainer(cfg, TinyCls(cfg), work_dir=str(tmp_path / "full"), device="cpu").fit()
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, TinyCls(cfg), work_dir=str(tmp_path / "cut"), device="cpu", hooks=[Crash()]).fit()
    Trainer(cfg, TinyCls(cfg), work_dir=str(tmp_path / "cut"), device="cpu", resume=True).fit()
    full, cut = (weights(str(tmp_path / d / "ckpt-last.pth")) for d in ("full", "cut"))
    assert all(torch.equal(full[k], cut[k]) for k in full)
    hist = [json.loads((tmp_path / d / "metrics.json").read_text())["history"] for d in ("full", "cut")]
    assert [h["lr"] for h in hist[0]] == [h["lr"] for h in hist[1]]


# ----------------------------------------------------------------------------- weight decay
def test_peer_rule_decays_what_the_peers_decay():
    model = pointmap.create_model("map3d_official", num_classes=5, layout="MMMT", num_heads=2, embed_dim=32,
                                  num_group=16, group_size=8)
    mamba = pointmap.create_model("pointmamba", num_classes=5, layout="MM", embed_dim=32, num_group=16, group_size=8)
    for m in (model, mamba):
        undecayed, decayed = param_groups(m, 0.05, "peer")
        assert undecayed["weight_decay"] == 0.0 and decayed["weight_decay"] == 0.05
        ours = {n for n in param_groups(m, 0.05)[1]["names"]}
        names = set(decayed["names"])
        # A_log, LNP's (1, 1, 1, 2C) affine tensors and cls_pos are decayed by the peers, not by pointmap
        assert {n for n in names if n.endswith(("A_log", "A_b_log", "mixer.alpha", "mixer.beta", "cls_pos"))} <= ours
        assert all(not n.endswith((".bias", "cls_token")) for n in names)
    pm_undecayed = set(param_groups(mamba, 0.05, "peer")[0]["names"])
    assert {"encoder.order_scale", "encoder.order_shift"} <= pm_undecayed  # 1-D per order in PointMamba
    assert any(n.endswith("mixer.alpha") for n in param_groups(model, 0.05, "peer")[1]["names"])
    with pytest.raises(ConfigError, match="weight_decay_rule"):
        param_groups(model, 0.05, "timm")


# ----------------------------------------------------------------------------- optimizer step
def test_two_steps_per_batch_step_then_clip_then_step_again():
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    x, y = torch.randn(8, 4) * 50, torch.randn(8, 3)
    ref = nn.Linear(4, 3)
    ref.load_state_dict(net.state_dict())
    opt = torch.optim.AdamW(net.parameters(), lr=0.1, fused=False)
    step = OptimizerStep(opt, torch.amp.GradScaler("cuda", enabled=False), net.parameters(), 1.0, 2)
    finite, applied = step(((net(x) - y) ** 2).mean())
    assert bool(finite) and bool(applied)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=0.1, fused=False)
    ((ref(x) - y) ** 2).mean().backward()
    ref_opt.step()  # the raw gradients
    torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
    ref_opt.step()  # again, clipped
    for a, b in zip(net.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-7)
    assert all(int(s["step"]) == 2 for s in opt.state.values())
    with pytest.raises(ConfigError, match="steps_per_batch"):
        OptimizerStep(opt, torch.amp.GradScaler("cuda", enabled=False), net.parameters(), 1.0, 3)


# ----------------------------------------------------------------------------- sampling
def _fps_ordered_cloud(n=2048, seed=0):
    """A cloud stored in FPS order, as ModelNet's 8192-point cache holds its shapes."""
    g = torch.Generator().manual_seed(seed)
    pts = torch.randn(n, 3, generator=g)
    return pts[fps(pts[None], n)[0]]


def test_modelnet_training_draws_a_new_subset_every_epoch(tmp_path):
    """pointmap's ModelNet recipe through the classification task's train split: the same shape of an
    FPS-ordered cache gives two different point subsets in two epochs (before: FPS from index 0 of that
    order took the same 1200 points every epoch, and so nearly the same 1024)."""
    from pointmap.data.modelnet import cache_name
    from pointmap.engine import build_task

    base = tmp_path / "ModelNet" / "modelnet40_normal_resampled"
    base.mkdir(parents=True)
    (base / "modelnet40_shape_names.txt").write_text("\n".join(f"c{i}" for i in range(40)) + "\n")
    import pickle

    for split in ("train", "test"):
        pts = [torch.cat([_fps_ordered_cloud(8192, i), torch.zeros(8192, 3)], 1).numpy() for i in range(20)]
        with open(base / cache_name(split), "wb") as f:
            pickle.dump([pts, [torch.tensor([i % 2], dtype=torch.int32).numpy() for i in range(20)]], f)
    cfg = load_config(os.path.join(ROOT, "cfgs", "finetune_modelnet.yaml"),
                      [f"data.root={tmp_path}", "eval.protocol=peer"])
    # the recipe's draw of points, without the normalisation and augmentation that move them
    cfg.data.train_transforms = [e for e in cfg.data.train_transforms if e["name"] == "sample"]
    assert len(cfg.data.train_transforms) == 2
    train = build_task(cfg).build_datasets()["train"]
    a, b = train[0]["points"], train[0]["points"]
    assert a.shape == b.shape == (1024, 3)
    common = (torch.cdist(a, b) == 0).any(1).float().mean().item()
    assert common < 0.5, f"{common:.0%} of the points shared by two epochs"
    fixed = build_transforms([{"name": "sample", "num_points": 1200, "method": "fps"}])  # the old pipeline
    assert torch.equal(fixed(train.base[0])["points"], fixed(train.base[0])["points"])


def test_sample_fps_random_start_and_skip_near_origin():
    pts = _fps_ordered_cloud(500)
    plain = Sample(64, "fps")(pts)
    assert torch.equal(plain, pts[:64])  # from the first point of an FPS-ordered cloud: its first points
    pts[7] = 0.0  # a point at the origin
    draws = [Sample(64, "fps", random_start=True, skip_near_origin=True)(pts) for _ in range(2)]
    assert not torch.equal(draws[0], draws[1])
    assert all((d.norm(dim=-1) > 0.03).all() for d in draws)  # never the origin, whatever the start
    batch = Sample(64, "fps", random_start=True)(torch.stack([pts, pts.flip(0)]))
    assert batch.shape == (2, 64, 3)
    with pytest.raises(ConfigError, match="options of method fps"):
        Sample(64, "random", random_start=True)


def test_sample_with_replacement():
    torch.manual_seed(0)
    pts = torch.arange(300, dtype=torch.float32)[:, None].expand(300, 3)
    out = Sample(2048, "replace")(pts)
    assert out.shape == (2048, 3) and torch.equal(out[:, 0], out[:, 0].round()) and out.max() < 300
    assert len(torch.unique(Sample(200, "replace")(pts)[:, 0])) < 200  # 200 draws of 300 repeat (p > 1 - 1e-20)


# ----------------------------------------------------------------------------- evaluation
def test_best_round_reports_the_best_pass_and_the_spread():
    rounds = [{"acc": 90.0, "loss": 0.3}, {"acc": 92.0, "loss": 0.4}, {"acc": 91.0, "loss": 0.2}]
    best = best_round(rounds, "acc", "max")
    assert best["acc"] == 92.0 and best["loss"] == 0.4 and best["best_round"] == 2 and best["rounds"] == 3
    assert best["acc_rounds_mean"] == pytest.approx(91.0) and best["acc_rounds_std"] == pytest.approx((2 / 3) ** 0.5)
    assert best_round(rounds[:1], "acc") == rounds[0]


def test_vote_rounds_under_peer_protocol_only(tmp_path):
    over = {"vote": 3, "vote_rounds": 4}
    cfg = tiny_cfg("classification", eval={**over, "protocol": "clean"})
    with pytest.raises(ConfigError, match="only --protocol peer"):
        TinyCls(cfg).validate()
    cfg = tiny_cfg("classification", data={"vote_transforms": [], "batch_size": 8},
                   eval={**over, "protocol": "peer", "vote_view_transforms": [{"name": "jitter", "sigma": 0.05}]})
    res = Trainer(cfg, TinyCls(cfg), work_dir=str(tmp_path), device="cpu").fit()
    vote = res["test_vote"]
    assert vote["rounds"] == 4 and vote["views"] == 3 and 1 <= vote["best_round"] <= 4
    assert vote["acc"] >= vote["acc_rounds_mean"]


def test_ddof_zero_std_is_the_peers_and_labelled():
    values = [1.0, 2.0, 4.0]
    assert mean_std(values, 0)["std"] == pytest.approx(torch.tensor(values).std(correction=0).item())
    assert mean_std(values)["std"] == pytest.approx(torch.tensor(values).std().item())
    out = summarize_seeds([{"acc": v} for v in values], ddof=0)
    assert out["acc"]["ddof"] == 0 and out["acc"]["std"] == pytest.approx(mean_std(values, 0)["std"])


@pytest.mark.parametrize("ties,epoch", [("first", 1), ("last", 2)])
def test_best_hook_ties(ties, epoch):
    """The hook reads the state and decides; applying its decisions is the Trainer's (done here by hand)."""
    state, hook = TrainState(selection={"split": "test", "metric": "acc", "mode": "max"}), BestHook(ties=ties)
    trainer = SimpleNamespace(state=state)  # the bits of a trainer the selection hook reads
    for e, acc in enumerate([80.0, 80.0, 70.0]):
        state.epoch = e
        decision = hook.after_epoch(trainer, {"test": {"acc": acc}})
        state.best = decision.best if decision is not None else state.best
    assert state.best["epoch"] == epoch


def test_evaluate_hook_from_the_second_epoch(tmp_path):
    cfg = tiny_cfg("classification", eval={"protocol": "peer"}, optim={"epochs": 3})
    cfg.hooks = [{"name": "evaluate", "first": 2}]
    res = Trainer(cfg, TinyCls(cfg), work_dir=str(tmp_path), device="cpu").fit()
    assert ["test" in h for h in res["history"]] == [False, True, True]
    assert res["best"]["epoch"] in (2, 3)


# ----------------------------------------------------------------------------- recipes without data
def test_head_classes_and_label_space_without_data():
    cfg = load_config(os.path.join(ROOT, "cfgs", "point_mae", "fewshot.yaml"), ["data.root=/nonexistent"])
    r = describe_recipe(cfg)
    assert r["model"]["parameters"] == 22_099_752  # Point-MAE's 40-way head on 5-way folds, no file read
    with pytest.raises(ConfigError, match="head_classes=3 is fewer than the 5"):
        describe_recipe(load_config(os.path.join(ROOT, "cfgs", "point_mae", "fewshot.yaml"), ["task_args.head_classes=3"]))


def test_recipe_tool_json_and_summary(tmp_path):
    out = tmp_path / "r.json"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "recipe.py"), "--cfg",
           os.path.join(ROOT, "cfgs", "pointmamba", "finetune_scan_hardest.yaml"), "optim.lr=1e-4", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    keys = {"model", "param_groups", "epochs", "lr_per_epoch", "batch_size", "grad_clip", "precision", "transforms",
            "sampling", "protocol", "voting"}
    assert keys <= set(r) and r["param_groups"][0].keys() >= {"weight_decay", "lr", "names", "n_params", "n_tensors"}
    assert r["epochs"] == 301 and max(r["lr_per_epoch"]) == pytest.approx(1e-4 * 0.9973, rel=1e-3)
    assert "12,291,343 parameters" in proc.stdout and "stepped per epoch" in proc.stdout
    assert not (tmp_path / "experiments").exists()  # no run folder
    bad = subprocess.run(cmd[:3] + [os.path.join(ROOT, "cfgs", "nope.yaml")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("step", ["step", "epoch"])
def test_epoch_lr_is_the_schedule_s_first_step_of_each_epoch(step):
    """The epoch record's lr comes from the schedule alone (a resumed run logs what an uninterrupted one does)
    and is the lr the loop's first step of the epoch runs at."""
    from pointmap.engine.optim import LRSchedule

    cfg = tiny_cfg(optim={**EPOCH_STEP, "schedule_step": step}).optim
    opt = build_optimizer(TinyNet(), cfg)
    schedule = LRSchedule(build_optimizer(TinyNet(), cfg), cfg, 7)
    assert [schedule.epoch_lr(e) for e in range(cfg.loop_epochs)] == pytest.approx(lr_per_epoch(opt, cfg, 7), rel=1e-12)
