"""The engine parts the MAP 2D recipe (DeiT's habits, as the release's main.py runs them) adds, each off by default:
lr scaled by the batch, an EMA of the weights (checkpointed, resumed, evaluated), Mixup / CutMix, repeated
augmentation, timm's image transforms, the image folder and the shipped photographs."""
import os
import signal

import pytest
import torch

from pointmap.config import OptimConfig, load_config
from pointmap.data import build_dataset, build_transforms
from pointmap.engine import Hook, RunInterrupted, Trainer, load_file
from pointmap.engine.ema import WeightEma, build_ema
from pointmap.engine.loop import RepeatedAugSampler, ResumableSampler
from pointmap.engine.mixup import build_mixup
from pointmap.engine.optim import build_optimizer, scaled_lr
from pointmap.errors import ConfigError, UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_map2d_lr_scaled_by_total_batch():
    cfg = OptimConfig(lr=5e-4, lr_base_size=512)
    assert scaled_lr(cfg, 8 * 1024) == pytest.approx(8e-3)  # the README's command: 8 GPUs x 1024
    assert scaled_lr(OptimConfig(lr=5e-4), 8192) == 5e-4  # off by default
    opt = build_optimizer(torch.nn.Linear(2, 2), cfg, batch_size=256)
    assert all(g["lr"] == pytest.approx(2.5e-4) for g in opt.param_groups)
    with pytest.raises(ValueError, match="batch_size"):
        build_optimizer(torch.nn.Linear(2, 2), cfg)


def test_map2d_ema_is_a_moving_average():
    model = torch.nn.Linear(3, 2)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    ema = build_ema(model, 0.9)
    assert build_ema(model, None) is None and isinstance(ema, WeightEma)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)  # from the first update on at the fixed decay (timm's ModelEma, as the release uses it)
    for k, v in ema.state_dict().items():
        torch.testing.assert_close(v, 0.9 * start[k] + 0.1 * model.state_dict()[k])


def test_map2d_repeated_aug_sampler_deals_copies_to_processes_and_resumes():
    data = list(range(10))
    ranks = [RepeatedAugSampler(data, 3, r, repeats=3, round_to=0, seed=5) for r in range(3)]
    for s in ranks:
        s.set_epoch(2)
    lists = [list(s) for s in ranks]
    assert [len(x) for x in lists] == [len(s) for s in ranks] == [4, 4, 4]  # ceil(10 / 3) each
    full = [RepeatedAugSampler(data, 1, 0, repeats=3, round_to=0, seed=5) for _ in range(1)][0]
    full.num_selected = 30
    full.set_epoch(2)
    order = list(full)
    assert all(order[3 * i] == order[3 * i + 1] == order[3 * i + 2] for i in range(10))  # each index 3 times in a row
    assert sorted(order) == sorted(data * 3)
    assert lists == [order[r::3][:4] for r in range(3)]  # a sample's copies go to different processes
    rounded = RepeatedAugSampler(list(range(600)), 2, 0, repeats=3, round_to=256, seed=0)
    assert len(rounded) == 256  # floor(600 / 256) * 256 / 2
    ranks[1].skip = 3  # a resumed epoch continues where it stopped
    assert list(ranks[1]) == lists[1][3:] and len(ranks[1]) == 1
    plain = ResumableSampler(data, num_replicas=1, rank=0, shuffle=True, seed=5)
    assert len(plain) == 10


def test_map2d_mixup_mixes_each_image_with_its_mirror():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8)
    mix = build_mixup({"mixup_alpha": 1.0, "cutmix_alpha": 0.0, "prob": 1.0}, num_classes=5, label_smoothing=0.0)
    mixed, target = mix(x.clone(), torch.tensor([0, 1, 2, 3]))
    lam = target[0, 0].item()
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0))
    assert build_mixup(None, 5) is None


def _image_cfg(tmp_path, *overrides):
    return load_config(os.path.join(ROOT, "cfgs", "map_image_demo.yaml"), [
        f"train.output_dir={tmp_path}", "train.progress=false", "data.num_workers=0",
        "model.args={img_size: 16, patch_size: 4, in_chans: 1, embed_dim: 16, layout: MT, num_heads: 2}",
        "objective.decoder_heads=2", "data.options={size: 16}", "data.batch_size=256", "optim.warmup_epochs=0",
        *overrides])


def test_map2d_mixup_option_is_checked():
    with pytest.raises(ConfigError, match="task_args.mixup"):
        Trainer(_image_cfg("/nonexistent", "task_args={mixup: {mixup_alpa: 0.8}}"))
    with pytest.raises(ConfigError, match="even"):
        Trainer(_image_cfg("/nonexistent", "task_args={mixup: {mixup_alpha: 0.8}}", "data.batch_size=255"))


class StopAtStep(Hook):
    """A real SIGTERM after optimizer step ``step``: the run stops before the next one and saves that point."""

    def __init__(self, step):
        self.step = step

    def after_step(self, trainer, logs):
        if trainer.state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_map2d_ema_checkpointed_resumed_and_evaluated(tmp_path):
    common = ("train.ema_decay=0.9", "train.ema_eval=true", "task_args={mixup: {mixup_alpha: 0.8, cutmix_alpha: 1.0}}",
              "data.repeated_aug=2", "data.repeated_aug_round=0", "optim.lr_base_size=512")
    whole = Trainer(_image_cfg(tmp_path / "a", "optim.epochs=2", *common), device="cpu").fit()
    with pytest.raises(RunInterrupted, match="at epoch 2 step 2"):  # mid-epoch: the sampler's order, EMA, mixup draws
        Trainer(_image_cfg(tmp_path / "b", "optim.epochs=2", *common), device="cpu", hooks=[StopAtStep(6)]).fit()
    torch.manual_seed(99)
    resumed = Trainer(_image_cfg(tmp_path / "b", "optim.epochs=2", *common), device="cpu", resume=True).fit()
    untimed = [[{k: v for k, v in e.items() if k != "time_s"} for e in r["history"]] for r in (whole, resumed)]
    assert untimed[0] == untimed[1]
    a = load_file(os.path.join(whole["work_dir"], "ckpt-last.pth"))
    b = load_file(os.path.join(resumed["work_dir"], "ckpt-last.pth"))
    assert a["model_ema"].keys() == a["model"].keys()
    for k in a["model"]:
        torch.testing.assert_close(b["model_ema"][k], a["model_ema"][k], rtol=0, atol=0)
    assert any(not torch.equal(a["model_ema"][k], a["model"][k]) for k in a["model"])
    assert "val_ema" in whole["history"][-1] and "test_ema" not in whole  # no test split in pretraining
    assert whole["history"][-1]["val_ema"]["loss"] > 0


def test_map2d_resume_without_ema_in_the_file_is_an_error(tmp_path):
    Trainer(_image_cfg(tmp_path, "optim.epochs=1"), device="cpu").fit()
    with pytest.raises(UserError, match="train.ema_decay"):  # the resume check names the change ...
        Trainer(_image_cfg(tmp_path, "optim.epochs=2", "train.ema_decay=0.9"), device="cpu", resume=True).fit()
    with pytest.raises(UserError, match="model_ema"):  # ... and forced, a file without averaged weights is refused
        Trainer(_image_cfg(tmp_path, "optim.epochs=2", "train.ema_decay=0.9"), device="cpu", resume=True,
                force=True).fit()


def test_map2d_image_transform_is_timms_create_transform():
    from PIL import Image
    from timm.data import create_transform

    deit = {"name": "image", "is_training": False, "input_size": 32, "crop_pct": 0.875, "interpolation": "bicubic"}
    image = Image.fromarray((torch.rand(40, 50, 3) * 255).byte().numpy())
    ours = build_transforms([deit])({"image": image, "label": 0})["image"]
    theirs = create_transform(32, is_training=False, crop_pct=0.875, interpolation="bicubic")(image)
    assert torch.equal(ours, theirs) and ours.shape == (3, 32, 32)
    with pytest.raises(ConfigError, match="transforms"):
        build_transforms([{"name": "image", "input_sise": 32}])


def test_map2d_image_folder(tmp_path):
    from PIL import Image

    for split, cls in (("train", "cat"), ("train", "dog"), ("val", "cat"), ("val", "dog")):
        os.makedirs(tmp_path / split / cls)
        Image.new("RGB", (12, 10), (200, 10, 10)).save(tmp_path / split / cls / "a.png")
    ds = build_dataset("image_folder", str(tmp_path), "val", num_classes=2,
                       transform=[{"name": "image", "input_size": 8}])
    assert len(ds) == 2 and ds.classes == ["cat", "dog"] and ds[1]["image"].shape == (3, 8, 8) and ds[1]["label"] == 1
    with pytest.raises(UserError, match="num_classes"):
        build_dataset("image_folder", str(tmp_path), "train", num_classes=1000)
    with pytest.raises(UserError, match="not found"):
        build_dataset("image_folder", str(tmp_path), "test")


def test_map2d_sample_photos():
    pytest.importorskip("skimage")
    train, val = build_dataset("sample_photos", None, "train", repeats=2), build_dataset("sample_photos", None, "val")
    assert (len(train), len(val)) == (32, 4) and not set(train.classes) & set(val.classes)
    item = train[17]
    assert item["image"].mode == "RGB" and item["label"] == 1 and train.classes[1] == "brick"


def test_map2d_classification_with_mixup_and_ema_scored_again_from_its_checkpoint(tmp_path):
    """Classification on soft Mixup / CutMix targets with the averaged weights evaluated; --eval of the checkpoint
    (Trainer.score) scores the file's own averaged weights to the same figures."""
    def cfg(exp):
        return _image_cfg(tmp_path, "task=classification", "objective.decoder_heads=6", "data.test_split=test",
                          "train.ema_decay=0.5", "train.ema_eval=true", "optim.epochs=1", f"exp_name={exp}",
                          "task_args={label_smoothing: 0.1, mixup: {mixup_alpha: 0.8, cutmix_alpha: 1.0}}")

    fit = Trainer(cfg("fit"), device="cpu").fit()
    assert "acc" not in fit["history"][0]["train"] and fit["history"][0]["val_ema"]["count"] > 0
    scored = Trainer(cfg("score"), device="cpu").score(os.path.join(fit["work_dir"], "ckpt-last.pth"))
    assert scored["test"] == fit["test"] and scored["test_ema"] == fit["test_ema"]
    assert scored["test_ema"] != scored["test"]
