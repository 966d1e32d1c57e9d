"""Randomness with one owner per purpose: evaluating more often, less often or not at all leaves every
training step bit-identical, and an evaluation pass draws the same every time."""
import json
import random

import numpy as np
import pytest
import torch

import pointmap
from pointmap.engine import Hook, Trainer
from pointmap.engine.datasets import SplitView
from pointmap.engine.rng import evaluation_seed, fixed_rng, get_rng_state

from .test_engine import Blobs, TinyCls, TinyPretrain, TinyPretrainer, jitter, tiny_cfg, weights


class GlobalRngPretrainer(TinyPretrainer):
    """Masks from the global RNG, as MAPPretrainer's are when no generator is passed."""

    def forward(self, x):
        keep = torch.rand(x.shape[:2]) > 0.5
        pred = self.decoder(self.encoder(x * keep[..., None]))
        return type(super().forward(x))(((pred - x) ** 2).mean())


class PretrainWithVal(TinyPretrain):
    model_cls = TinyPretrainer

    def build_datasets(self):
        return {"train": SplitView(Blobs(), None, jitter), "val": SplitView(Blobs(n=16, seed=2), None, jitter)}

    def build_model(self, datasets):
        return self.model_cls()


class GlobalPretrainWithVal(PretrainWithVal):
    model_cls = GlobalRngPretrainer


class MapPretrainWithVal(PretrainWithVal):
    """The real pretrainer, tiny: masks and drop path from the global RNG."""

    def build_datasets(self):
        return {"train": SplitView(Blobs(n=32, num_points=128), None, jitter),
                "val": SplitView(Blobs(n=8, num_points=128, seed=2), None, None)}

    def build_model(self, datasets):
        return pointmap.create_pretrainer("hybridnet_s", embed_dim=32, num_heads=2, num_group=16, group_size=8,
                                          layout="MT", drop_path_rate=0.2, decoder_heads=2, decoder_depth=1,
                                          decoder_drop_path_rate=0.1)


def _history(path):
    return json.loads((path / "metrics.json").read_text())["history"]


def _fit(tmp_path, name, make_task, task, evaluate, **over):
    cfg = tiny_cfg(task, optim={"epochs": 3}, **over)
    cfg.hooks = [{"name": "evaluate", **evaluate}]
    Trainer(cfg, make_task(cfg), work_dir=str(tmp_path / name), device="cpu").fit()
    return _history(tmp_path / name), weights(str(tmp_path / name / "ckpt-last.pth"))


@pytest.mark.parametrize("workers", [0, 2])
def test_how_often_a_classifier_evaluates_leaves_its_training_as_it_is(tmp_path, workers):
    over = dict(data={"num_workers": workers, "train_transforms": [{"name": "scale_translate"}]})
    often, w_often = _fit(tmp_path, "every1", TinyCls, "classification", {"every": 1}, **over)
    rarely, w_rarely = _fit(tmp_path, "every3", TinyCls, "classification", {"every": 3}, **over)
    assert [h["train"] for h in often] == [h["train"] for h in rarely]  # loss and accuracy, every epoch
    assert [("val" in h) for h in rarely] == [False, False, True]
    assert often[2]["val"] == rarely[2]["val"]  # the same weights score the same
    for k in w_often:
        assert torch.equal(w_often[k], w_rarely[k]), k


@pytest.mark.parametrize("make_task", [PretrainWithVal, GlobalPretrainWithVal, MapPretrainWithVal])
def test_pretraining_with_and_without_validation_trains_the_same(tmp_path, make_task):
    evaluated, w_evaluated = _fit(tmp_path, "val", make_task, "pretrain", {"every": 1})
    plain, w_plain = _fit(tmp_path, "none", make_task, "pretrain", {"enabled": False})
    assert all("val" in h for h in evaluated) and not any("val" in h for h in plain)
    assert [h["train"]["loss"] for h in evaluated] == [h["train"]["loss"] for h in plain]
    for k in w_evaluated:
        assert torch.equal(w_evaluated[k], w_plain[k]), k


class Draws(Hook):
    """A hook that draws at the end of each epoch (as a picture's random test transform would)."""

    def after_epoch(self, trainer, entry):
        random.random(), np.random.rand(), torch.rand(5), torch.rand(5, generator=trainer.module.gen)


def test_what_a_hook_draws_leaves_training_as_it_is(tmp_path):
    cfg = tiny_cfg("pretrain", optim={"epochs": 3})
    Trainer(cfg, TinyPretrain(cfg), work_dir=str(tmp_path / "plain"), device="cpu").fit()
    Trainer(cfg, TinyPretrain(cfg), work_dir=str(tmp_path / "drawn"), device="cpu", hooks=[Draws()]).fit()
    assert [h["train"] for h in _history(tmp_path / "plain")] == [h["train"] for h in _history(tmp_path / "drawn")]


def test_an_evaluation_pass_draws_the_same_every_time(tmp_path):
    """Masks drawn in evaluation: the same weights give the same validation loss, epoch after epoch."""
    cfg = tiny_cfg("pretrain", optim={"epochs": 1})
    trainer = Trainer(cfg, GlobalPretrainWithVal(cfg), work_dir=str(tmp_path), device="cpu")
    trainer.fit()
    before = get_rng_state()
    first, second = trainer.evaluate("val"), trainer.evaluate("val")
    assert first == second
    assert trainer.evaluate("val", index=1) != first  # a voting round of its own
    after = get_rng_state()
    assert torch.equal(before["torch"], after["torch"]) and before["python"] == after["python"]


def test_fixed_rng_seeds_every_rng_and_gives_each_back():
    model = TinyPretrainer()
    random.seed(1), np.random.seed(1), torch.manual_seed(1), model.gen.manual_seed(1)

    def draws():
        return (random.random(), float(np.random.rand()), torch.rand(3), torch.rand(3, generator=model.gen))

    with fixed_rng(5, model):
        inside = draws()
    outside = draws()
    with fixed_rng(5, model):
        again = draws()
    random.seed(1), np.random.seed(1), torch.manual_seed(1), model.gen.manual_seed(1)
    fresh = draws()
    assert inside[:2] == again[:2] and all(torch.equal(a, b) for a, b in zip(inside[2:], again[2:]))
    assert outside[:2] == fresh[:2] and all(torch.equal(a, b) for a, b in zip(outside[2:], fresh[2:]))
    assert not torch.equal(inside[2], outside[2])


def test_evaluation_seeds_are_their_own():
    seeds = {evaluation_seed(0, rank, index) for rank in range(4) for index in range(4)}
    assert len(seeds) == 16 and not seeds & set(range(8))  # apart from train.seed + rank
    assert evaluation_seed(3, 1, 2) == evaluation_seed(3, 1, 2)
