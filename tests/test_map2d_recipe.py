"""cfgs/map2d/: the release's ImageNet pretraining recipe against the facts read from its code
(tests/fixtures/peers/map2d_recipe.json, each with its file:line), pointmap's recipe beside it with the quirks off,
the finetuning recipe, and a shrunk copy of the release's recipe that runs on the shipped photographs."""
import collections
import json
import math
import os
import runpy
import sys

import numpy as np
import pytest
import torch

from pointmap.config import load_config
from pointmap.data.image_transforms import ImageTransform
from pointmap.experiments import describe_recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFGS = os.path.join(ROOT, "cfgs", "map2d")
with open(os.path.join(ROOT, "tests", "fixtures", "peers", "map2d_recipe.json"), encoding="utf-8") as f:
    RELEASE = json.load(f)


def recipe(name, *overrides):
    return describe_recipe(load_config(os.path.join(CFGS, f"{name}.yaml"), overrides))


@pytest.fixture(scope="module")
def pretrain():
    return recipe("pretrain_in1k")


def release_lr(epoch):
    """The release's lr in epoch ``epoch``, from the schedule's formula as the fixture writes it (not timm's code)."""
    s, c, scale = RELEASE["schedule"], RELEASE["command"], RELEASE["lr_scaling"]
    peak = c["lr"] * c["batch_per_gpu"] * c["gpus"] * scale["accum_iter"] / scale["base_size"]
    if epoch == 0:
        return s["warmup_lr"]
    t = epoch - 1
    if t < s["warmup_epochs"]:
        return s["warmup_lr"] + t * (peak - s["warmup_lr"]) / s["warmup_epochs"]
    return s["min_lr"] + 0.5 * (peak - s["min_lr"]) * (1 + math.cos(math.pi * t / s["t_initial"]))


def test_map2d_pretrain_schedule_is_the_releases(pretrain):
    c, s = RELEASE["command"], RELEASE["schedule"]
    assert pretrain["epochs"] == c["epochs"] == len(pretrain["lr_per_epoch"])
    assert pretrain["batch_size"] == c["gpus"] * c["batch_per_gpu"]
    assert pretrain["lr"]["scaled"] == pytest.approx(8e-3) and pretrain["lr"]["base"] == c["lr"]
    ref = torch.tensor([release_lr(e) for e in range(c["epochs"])], dtype=torch.float64)
    got = torch.tensor(pretrain["lr_per_epoch"], dtype=torch.float64)
    assert ((got - ref).abs() / ref).max().item() < 1e-9
    first = pretrain["lr_per_epoch"][:len(s["first_values"])]  # as the record writes them, to two digits
    assert first == pytest.approx(s["first_values"], rel=1e-3)
    assert pretrain["lr_per_epoch"][-1] == pytest.approx(s["last_value"], rel=1e-2)


def test_map2d_pretrain_optimizer_is_the_releases(pretrain):
    """timm 0.4.12's groups over the release's own parameter table (the parts pretraining uses), tensor for tensor by
    shape: no decay for 1-D tensors, *.bias and the model's no_weight_decay(); Mamba's A_log, the mask token and
    the decoder's positional table decayed."""
    o = RELEASE["optimizer"]
    groups = {0.0: [], c_wd(): []}
    for name, shape in RELEASE["tiny_parameters"].items():
        if name in RELEASE["unused_in_pretraining"]:
            continue
        undecayed = len(shape) <= 1 or name.endswith(".bias") or name in o["no_weight_decay"]
        groups[0.0 if undecayed else c_wd()].append(tuple(shape))
    cfg = load_config(os.path.join(CFGS, "pretrain_in1k.yaml"))
    model = build_model(cfg)
    shapes = dict(model.named_parameters())
    for g in pretrain["param_groups"]:
        ours = collections.Counter(tuple(shapes[n].shape) for n in g["names"])
        assert ours == collections.Counter(groups[g["weight_decay"]]), g["weight_decay"]
        assert g["lr"] == pytest.approx(8e-3)
    assert list(cfg.optim.betas) == o["betas"] and cfg.optim.eps == o["eps"]
    assert pretrain["model"]["parameters"] == sum(math.prod(s) for v in groups.values() for s in v)


def c_wd():
    return RELEASE["command"]["weight_decay"]


def build_model(cfg):
    from pointmap.engine import build_task

    return build_task(cfg).build_model(None)


def test_map2d_pretrain_precision_ema_mixup_sampling(pretrain):
    assert pretrain["precision"] == "bf16" and pretrain["grad_clip"] is None
    assert pretrain["ema"] == {"decay": RELEASE["ema"]["decay"], "evaluated": False}
    assert pretrain["mixup"] == {k: v for k, v in RELEASE["mixup"].items() if k not in ("where", "applied_to")}
    ra = RELEASE["repeated_aug"]
    assert pretrain["repeated_aug"] == {"repeats": ra["repeats"], "round_to": ra["round_to"]}
    assert max(pretrain["model"]["settings"]["drop_path"]) == pytest.approx(RELEASE["drop_path"])
    assert pretrain["data"]["test_split"] is None


def _pipeline(entry):
    """The timm objects the transform entry builds, by class name."""
    tf = ImageTransform(**{k: v for k, v in entry.items() if k != "name"})
    return {type(t).__name__: t for t in tf._tf.transforms}


def test_map2d_pretrain_feeds_deits_transform(pretrain):
    """What the release's datasets.py builds (timm's create_transform with DeiT's arguments), read off the objects."""
    want = RELEASE["train_transform"]
    (entry,) = pretrain["transforms"]["train"]
    t = _pipeline(entry)
    crop = t["RandomResizedCropAndInterpolation"]
    assert crop.size == (want["input_size"],) * 2 and list(crop.scale) == want["scale"]
    assert list(crop.ratio) == pytest.approx(want["ratio"]) and "bicubic" in str(crop.interpolation).lower()
    assert t["RandomHorizontalFlip"].p == want["hflip"]
    assert "ColorJitter" not in t  # timm ignores colour jitter under RandAugment, as the release's timm does
    assert len(t["RandAugment"].ops) == 15 and all(op.magnitude == 9 for op in t["RandAugment"].ops)
    erase = t["RandomErasing"]
    assert (erase.probability, erase.mode, erase.max_count) == (want["re_prob"], want["re_mode"], want["re_count"])
    assert t["Normalize"].mean.tolist() == pytest.approx(want["mean"])
    assert t["Normalize"].std.tolist() == pytest.approx(want["std"])


def test_map2d_pointmap_recipe_turns_the_quirks_off(pretrain):
    ours = recipe("pretrain_in1k_pointmap")
    assert ours["mixup"] is None and ours["repeated_aug"] is None and ours["schedule"]["schedule_step"] == "step"
    assert ours["model"]["args"] == {"drop_path_rate": 0.1, "double_identity": False, "reinit_mixers": False,
                                     "release_weight_decay": False}
    t = _pipeline(ours["transforms"]["train"][0])  # MAE's crop and flip
    assert set(t) == {"RandomResizedCropAndInterpolation", "RandomHorizontalFlip", "MaybeToTensor", "Normalize"}
    assert t["RandomResizedCropAndInterpolation"].scale == (0.2, 1.0)
    decayed = {n for g in ours["param_groups"] if g["weight_decay"] for n in g["names"]}
    assert not any(n.endswith(("A_log", "A_b_log", "mask_token")) for n in decayed)
    assert any(n.endswith("A_log") for g in pretrain["param_groups"] if g["weight_decay"] for n in g["names"])
    assert ours["lr_per_epoch"][:2] != pretrain["lr_per_epoch"][:2]  # per-step: epoch 1 already warms up


def test_map2d_finetune_recipe():
    r = recipe("finetune_in1k")
    assert r["task"] == "classification" and r["model"]["class"] == "RegisterClassifier"
    assert "A" in r["model"]["settings"]["layout"]  # the hybrid keeps the pretrained attention blocks
    assert r["lr"]["scaled"] == pytest.approx(2e-4 * 1024 / 512) and r["epochs"] == 100
    assert r["mixup"]["mixup_alpha"] == 0.8 and r["ema"] == {"decay": 0.99996, "evaluated": True}
    (test,) = r["transforms"]["test"]
    t = _pipeline(test)
    assert t["Resize"].size == 256 and t["CenterCrop"].size == (224, 224)


@pytest.mark.parametrize("name", ["pretrain_in1k", "pretrain_in1k_pointmap"])
def test_map2d_recipes_train_on_the_shipped_photos(tmp_path, name, monkeypatch, capsys):
    """The recipe shrunk to a CPU test: every setting of the release's pipeline on the shipped photographs, then
    tools/visualize.py's picture of its checkpoint (the held-out photos, resized, normalized and shown undone)."""
    pytest.importorskip("skimage")
    from pointmap.engine import Trainer

    cfg = load_config(os.path.join(CFGS, f"{name}.yaml"), [
        f"train.output_dir={tmp_path}", "train.progress=false", "data.num_workers=0", "data.name=sample_photos",
        "data.root=null", "data.options={repeats: 1}", "data.batch_size=8", "data.repeated_aug_round=0",
        "model.args.img_size=32", "model.args.embed_dim=16", "model.args.depth=3", "model.args.num_heads=2",
        "model.args.decoder_embed_dim=16", "model.args.decoder_num_heads=2",
        "optim.epochs=2", "optim.warmup_epochs=1", "train.cpu_threads=1"])
    entry = dict(cfg.data.train_transforms[0], input_size=32)
    cfg.data.train_transforms = [entry]
    res = Trainer(cfg, device="cpu").fit()
    assert res["epochs_done"] == 2 and all(math.isfinite(h["train"]["loss"]) for h in res["history"])
    picture = tmp_path / "recon.png"
    monkeypatch.setattr(sys, "argv", ["visualize.py", "--ckpt", os.path.join(res["work_dir"], "ckpt-last.pth"),
                                      "--split", "val", "--num-images", "2", "--out", str(picture)])
    monkeypatch.syspath_prepend(os.path.join(ROOT, "tools"))
    runpy.run_path(os.path.join(ROOT, "tools", "visualize.py"), run_name="__main__")
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.startswith("2 images | MSE ") and float(printed.split()[4]) > 0
    from PIL import Image

    image = np.asarray(Image.open(picture).convert("RGB"))
    assert image.shape[0] > 2 * 32 and image.astype(float).var() > 100  # two rows of photos, not a blank


# ----------------------------------------------------------------------------- the page
def _section():
    with open(os.path.join(ROOT, "docs", "map2d.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index("## Recipes and data")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_map2d_page_shows_what_tools_recipe_prints(pretrain):
    from pointmap.experiments import format_recipe

    command = "$ python tools/recipe.py --cfg cfgs/map2d/pretrain_in1k.yaml\n"
    block = _section().split(command, 1)[1].split("```", 1)[0]
    assert block.strip() == format_recipe(pretrain).strip()


def test_map2d_page_quotes_the_demo_record():
    """docs/map2d/demo.json, written by python tools/map2d_demo.py, and the figures the page quotes from it."""
    with open(os.path.join(ROOT, "docs", "map2d", "demo.json"), encoding="utf-8") as f:
        demo = json.load(f)
    pre, vis = demo["runs"]["pretrain"], demo["runs"]["visualize"]
    assert pre["command"] == "python tools/pretrain.py --cfg cfgs/map2d/demo.yaml"
    assert vis["command"].startswith("python tools/visualize.py --ckpt experiments/map2d/demo/default/ckpt-best.pth")
    assert pre["epochs"] == load_config(os.path.join(CFGS, "demo.yaml")).optim.epochs == len(pre["val_loss"])
    assert min(pre["val_loss"]) == pre["best_val_loss"] == pre["val_loss"][pre["best"] - 1]
    s = int(round(pre["wall_s"]))
    text = " ".join(_section().split())
    for figure in (f"There pretraining took {s // 60} min {s % 60} s for {pre['epochs']} epochs",
                   f"from {pre['train_loss'][0]:.3f} to {pre['train_loss'][-1]:.3f}",
                   f"best at epoch {pre['best']} with {pre['best_val_loss']:.3f}", f"MSE is {vis['mse']:.3f}",
                   f"(load {pre['load_before']} as it started; {demo['machine']}, {demo['date']}, commit "
                   f"{demo['commit'][:7]})"):
        assert figure in text, figure
    assert os.path.getsize(os.path.join(ROOT, "docs", "map2d", "demo_reconstruction.png")) > 10_000
