"""Low-data finetuning (``data.label_fraction``) and the paired differences the ablation reports."""
import math

import pytest
import torch

from pointmap.config import load_config
from pointmap.engine import ClassificationTask
from pointmap.engine.datasets import dataset_labels
from pointmap.engine.metrics import paired_difference

from .test_ablation import CFGS


def _splits(*overrides):
    cfg = load_config(f"{CFGS}/finetune_demo.yaml", ["data.options.num_points=16", *overrides])
    return ClassificationTask(cfg).build_datasets()


def _train_labels(ds):
    return dataset_labels(ds["train"].base)[ds["train"].indices]


def test_label_fraction_is_a_stratified_subset_of_the_train_part():
    full = _splits()
    low = _splits("data.label_fraction=0.1")
    assert low["val"].indices == full["val"].indices and len(low["test"]) == len(full["test"])  # only train shrinks
    assert set(low["train"].indices) < set(full["train"].indices)
    counts = torch.bincount(_train_labels(low), minlength=15)
    per_class = torch.bincount(_train_labels(full), minlength=15)
    assert counts.tolist() == [round(0.1 * n) for n in per_class.tolist()]  # every class, its tenth
    assert low["train"].indices == _splits("data.label_fraction=0.1")["train"].indices  # same seed, same subset
    assert low["train"].indices == _splits("data.label_fraction=0.1", "data.label_seed=0")["train"].indices
    assert low["train"].indices != _splits("data.label_fraction=0.1", "train.seed=1")["train"].indices
    peer = _splits("data.label_fraction=0.1", "eval.protocol=peer")
    assert len(peer["train"]) == sum(round(0.1 * 64) for _ in range(15))


def test_label_fraction_out_of_range():
    with pytest.raises(ValueError, match=r"data.label_fraction' must be in \(0, 1\], got 1.5"):
        _splits("data.label_fraction=1.5")


def test_paired_difference():
    d = paired_difference([3.0, 5.0, 7.0], [2.0, 3.0, 4.0])
    assert d["values"] == [1.0, 2.0, 3.0] and d["mean"] == 2.0 and d["std"] == 1.0 and d["n"] == 3
    half = 4.302652729749464 / math.sqrt(3)  # Student t, 2 degrees of freedom, 97.5%
    assert d["ci"] == pytest.approx([2.0 - half, 2.0 + half])
    assert (d["positive"], d["negative"]) == (3, 0)
    assert paired_difference([1.0], [2.0])["ci"] is None
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([1.0, 2.0], [1.0])
