"""Trainer with tiny stand-in tasks: run folder, resume == uninterrupted, NaN stop, protocol, hooks, optim."""
import json
import os
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from pointmap.config import config_from_dict, load_config
from pointmap.engine import (ClassificationTask, Hook, build_hooks, NonFiniteLossError, PretrainTask, Trainer, load_file,
                             register_hook)
from pointmap.engine.datasets import SplitView, stratified_split
from pointmap.engine.optim import build_optimizer, build_scheduler


class Blobs(Dataset):
    """Three classes of Gaussian blobs at different offsets: learnable in a few steps."""

    def __init__(self, n=48, num_points=32, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 3
        self.points = torch.randn(n, num_points, 3, generator=g) * 0.3 + self.labels[:, None, None] - 1.0
        self.classes = ["a", "b", "c"]
        self.num_classes = 3

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"points": self.points[i], "label": self.labels[i]}


def jitter(sample):
    sample["points"] = sample["points"] + 0.01 * torch.randn_like(sample["points"])
    return sample


class TinyNet(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(3, 16), nn.LayerNorm(16), nn.GELU(), nn.Dropout(0.2), nn.Linear(16, 16))
        self.head = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.head(self.encoder(x).max(1).values)


@dataclass
class Out:
    loss: torch.Tensor


class TinyPretrainer(nn.Module):
    """Masked-point reconstruction stand-in with its own mask generator (as the real pretrainer may have)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(3, 16), nn.LayerNorm(16), nn.GELU(), nn.Dropout(0.1), nn.Linear(16, 16))
        self.decoder = nn.Linear(16, 3)
        self.gen = torch.Generator().manual_seed(7)
        self.poison_at = None  # number of forward calls after which the loss is NaN
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        keep = torch.rand(x.shape[:2], generator=self.gen) > 0.5
        pred = self.decoder(self.encoder(x * keep[..., None]))
        loss = ((pred - x) ** 2).mean()
        if self.poison_at is not None and self.calls > self.poison_at:
            loss = loss * float("nan")
        return Out(loss)


class TinyPretrain(PretrainTask):
    def build_datasets(self):
        return {"train": SplitView(Blobs(), None, jitter)}

    def build_model(self, datasets):
        return TinyPretrainer()


class TinyCls(ClassificationTask):
    def build_base(self, split):
        return Blobs(n=60 if split == "train" else 30, seed=0 if split == "train" else 1)

    def build_model(self, datasets):
        return TinyNet(self.num_classes)


def tiny_cfg(task="pretrain", **over):
    d = {"task": task, "name": "tiny", "optim": {"epochs": 2, "warmup_epochs": 1, "lr": 1e-2, "grad_clip": 1.0},
         "data": {"batch_size": 8}, "train": {"progress": False}}
    for k, v in over.items():
        d.setdefault(k, {}).update(v)
    return config_from_dict(d)


def weights(path):
    return load_file(path)["model"]


def test_fit_writes_run_folder(tmp_path):
    cfg = tiny_cfg()
    res = Trainer(cfg, TinyPretrain(cfg), work_dir=str(tmp_path), device="cpu").fit()
    for f in ("config.yaml", "log.txt", "ckpt-last.pth", "ckpt-best.pth", "metrics.json"):
        assert (tmp_path / f).is_file(), f
    assert any((tmp_path / "tb").iterdir())
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["protocol"] == "clean" and saved["epochs_done"] == 2 and len(saved["history"]) == 2
    assert res["selection"] == {"split": "train", "metric": "loss", "mode": "min"}
    assert load_config(str(tmp_path / "config.yaml")).optim.epochs == 2
    assert "epoch 2/2" in (tmp_path / "log.txt").read_text()
    ckpt = load_file(str(tmp_path / "ckpt-last.pth"))
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 12 and {"optimizer", "scheduler", "scaler", "rng"} <= set(ckpt)


class Crash(Hook):
    def after_epoch(self, trainer, metrics):
        if trainer.state.epoch == 0:
            raise KeyboardInterrupt("killed after epoch 1")


@pytest.mark.parametrize("make_task", [TinyPretrain, TinyCls])
def test_resume_matches_uninterrupted(tmp_path, make_task):
    task_name = "pretrain" if make_task is TinyPretrain else "classification"
    cfg = tiny_cfg(task_name, optim={"epochs": 3})
    Trainer(cfg, make_task(cfg), work_dir=str(tmp_path / "full"), device="cpu").fit()
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, make_task(cfg), work_dir=str(tmp_path / "cut"), device="cpu", hooks=[Crash()]).fit()
    assert load_file(str(tmp_path / "cut" / "ckpt-last.pth"))["epoch"] == 1
    with pytest.raises(ValueError, match="already holds a run"):
        Trainer(cfg, make_task(cfg), work_dir=str(tmp_path / "cut"), device="cpu").fit()
    torch.manual_seed(1234)  # a resumed process starts from another RNG state
    Trainer(cfg, make_task(cfg), work_dir=str(tmp_path / "cut"), device="cpu", resume=True).fit()
    full, cut = weights(str(tmp_path / "full" / "ckpt-last.pth")), weights(str(tmp_path / "cut" / "ckpt-last.pth"))
    assert full.keys() == cut.keys()
    for k in full:
        assert torch.equal(full[k], cut[k]), k
    hist_full = json.loads((tmp_path / "full" / "metrics.json").read_text())["history"]
    hist_cut = json.loads((tmp_path / "cut" / "metrics.json").read_text())["history"]
    assert [h["train"]["loss"] for h in hist_full] == [h["train"]["loss"] for h in hist_cut]


def test_resume_without_checkpoint_is_an_error(tmp_path):
    cfg = tiny_cfg()
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        Trainer(cfg, TinyPretrain(cfg), work_dir=str(tmp_path), device="cpu", resume=True).fit()


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path):
    cfg = tiny_cfg(optim={"epochs": 3})
    task = TinyPretrain(cfg)
    orig = task.build_model
    task.build_model = lambda ds: _poisoned(orig(ds), after=6 + 2)  # 6 steps an epoch; dies at epoch 2, step 3
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 2, step 3 \(global step 9\).*ckpt-last.pth"):
        Trainer(cfg, task, work_dir=str(tmp_path), device="cpu").fit()
    ckpt = load_file(str(tmp_path / "ckpt-last.pth"))
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def _poisoned(model, after):
    model.poison_at = after
    return model


def test_clean_protocol_holds_out_val_and_tests_once(tmp_path):
    cfg = tiny_cfg("classification", eval={"val_fraction": 0.2, "vote": 3})
    task = TinyCls(cfg)
    tr = Trainer(cfg, task, work_dir=str(tmp_path), device="cpu")
    res = tr.fit()
    train_idx, val_idx = tr.datasets["train"].indices, tr.datasets["val"].indices
    assert len(val_idx) == 12 and not set(train_idx) & set(val_idx)
    assert res["selection"]["split"] == "val" and "val" in res["history"][0] and "test" not in res["history"][0]
    assert res["protocol"] == "clean" and "held out of train" in res["protocol_note"]
    assert 0.0 <= res["test"]["acc"] <= 100.0 and res["test_vote"]["views"] == 3
    assert json.loads((tmp_path / "metrics.json").read_text())["test"] == res["test"]


def test_peer_protocol_selects_on_test_and_says_so(tmp_path):
    cfg = tiny_cfg("classification", eval={"protocol": "peer"})
    res = Trainer(cfg, TinyCls(cfg), work_dir=str(tmp_path), device="cpu").fit()
    assert res["protocol"] == "peer" and res["selection"]["split"] == "test"
    assert "test" in res["history"][-1] and res["best"]["metrics"]["test"]["acc"] == res["test"]["acc"]
    assert "protocol peer" in (tmp_path / "log.txt").read_text()


def test_stratified_split_is_seeded_and_per_class():
    labels = torch.tensor([0] * 10 + [1] * 20 + [2] * 1)
    keep, held = stratified_split(labels, 0.1, seed=3)
    assert sorted(keep + held) == list(range(31))
    assert [int((labels[held] == c).sum()) for c in range(3)] == [1, 2, 0]
    assert stratified_split(labels, 0.1, seed=3) == (keep, held) != stratified_split(labels, 0.1, seed=4)


def test_no_weight_decay_on_biases_norms_and_listed_tokens():
    class M(TinyNet):
        def __init__(self):
            super().__init__()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, 16, 16))

        def no_weight_decay(self):
            return {"cls_token"}

    model = M()
    opt = build_optimizer(model, tiny_cfg().optim)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["encoder.0.weight", "encoder.4.weight", "head.weight"]
    assert "cls_token" in {names[id(p)] for p in no_decay["params"]}


def test_cosine_schedule_with_warmup():
    cfg = tiny_cfg(optim={"epochs": 10, "warmup_epochs": 2, "lr": 1e-3, "warmup_lr": 1e-6, "min_lr": 1e-5}).optim
    model = TinyNet()
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=5)
    lrs = []
    for step in range(50):
        sched.step_update(step)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-6) and lrs[5] < lrs[9] < 1e-3
    assert 0.85e-3 < max(lrs) <= 1e-3 and lrs[-1] == pytest.approx(1e-5, rel=0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


@register_hook("test_epoch_marker")
class Marker(Hook):
    main_process_only = True

    def __init__(self, folder="marks"):
        self.folder = folder

    def after_epoch(self, trainer, metrics):
        path = os.path.join(trainer.work_dir, self.folder, f"epoch_{trainer.state.epoch + 1:03d}.txt")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(str(metrics["train"]["loss"]))


def test_hooks_from_config_run_at_epoch_end(tmp_path):
    cfg = tiny_cfg(optim={"epochs": 2})
    cfg.hooks = [{"name": "test_epoch_marker", "folder": "vis"}]
    Trainer(cfg, TinyPretrain(cfg), work_dir=str(tmp_path), device="cpu").fit()
    assert sorted(os.listdir(tmp_path / "vis")) == ["epoch_001.txt", "epoch_002.txt"]
    assert type(build_hooks([{"name": "vis", "every": 2}])[0]).__name__ == "VisHook"  # registers on demand
    cfg.hooks = [{"name": "nope"}]
    with pytest.raises(ValueError, match="unknown hook 'nope'"):
        Trainer(cfg, TinyPretrain(cfg), work_dir=str(tmp_path / "x"), device="cpu")


PEER_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "peers", "point_mae_state_dicts.json")


def test_point_mae_pretraining_checkpoint_loads_into_pointmae_classifier(tmp_path):
    shapes = json.loads(open(PEER_JSON).read())["point_mae_pretrain"]
    g = torch.Generator().manual_seed(0)
    state = {f"module.{k}": torch.randn(v, generator=g) for k, v in shapes.items()}
    torch.save({"base_model": state, "epoch": 300}, tmp_path / "pointmae.pth")
    cfg = tiny_cfg("classification", model={"name": "pointmae"})
    task = ClassificationTask(cfg)
    task.num_classes = 15
    model = task.build_model({})
    report = task.load_pretrained(model, str(tmp_path / "pointmae.pth"))
    assert report.unexpected_keys == [] and not any(k.startswith("encoder.") for k in report.missing_keys)
    assert torch.equal(model.state_dict()["encoder.blocks.0.mixer.qkv.weight"],
                       state["module.MAE_encoder.blocks.blocks.0.attn.qkv.weight"])


def test_a_partial_last_batch_is_named_not_silently_dropped():
    import logging

    from pointmap.engine.loop import build_loaders

    class Records(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    seen, log = Records(), logging.getLogger("pointmap.engine.loop")
    log.addHandler(seen)
    try:
        data = torch.utils.data.TensorDataset(torch.randn(38, 3))
        loaders = build_loaders({"train": data}, tiny_cfg(data={"batch_size": 32, "num_workers": 0}),
                                torch.device("cpu"))[0]
        assert len(loaders["train"]) == 1
        assert any("38 samples: batches of 32 leave out 6 of them each epoch" in m for m in seen.messages)
        seen.messages.clear()
        build_loaders({"train": torch.utils.data.TensorDataset(torch.randn(32, 3))},
                      tiny_cfg(data={"batch_size": 8, "num_workers": 0}), torch.device("cpu"))
        assert not any("leave out" in m for m in seen.messages)
    finally:
        log.removeHandler(seen)


def test_tensorboard_has_hyperparameters_and_test_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_cfg("classification", optim={"lr": 3e-3})
    Trainer(cfg, TinyCls(cfg), work_dir=str(tmp_path), device="cpu").fit()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"hparam/test.acc", "hparam/test.loss"} <= scalars, scalars
    plugin = acc.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugin and "_hparams_/session_start_info" in plugin
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["optim.lr"].number_value == pytest.approx(3e-3)
    assert start.hparams["task"].string_value == "classification"
