"""MAP as its authors released it in 2D: the map_*_patch16_224 presets, the release's objective, its weights,
Mamba-Reg's classifier; fidelity on tests/fixtures/peers/map2d.pt (the release's own code, float64)."""
import json
import os

import pytest
import torch

import pointmap
from pointmap.models import MAP2DEncoder, MAP2DPretrainer, RegisterClassifier

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "peers")
SIZES = ("tiny", "small", "base", "large", "huge")
# a reduced encoder: 32 px images of 16×16 patches (4 tokens), 3 Mamba layers and one attention block
TINY = dict(img_size=32, embed_dim=24, depth=3, num_heads=2)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def state_table():
    with open(os.path.join(FIXTURES, "map2d_state_dicts.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("name", [f"map_{s}_patch16_224" for s in SIZES] +
                         [f"mambar_{s}_patch16_224" for s in SIZES[:4]])
def test_map2d_every_preset_runs(name):
    x = torch.randn(2, 3, 32, 32)
    enc = pointmap.create_model(name, **TINY).eval()
    assert isinstance(enc, MAP2DEncoder)
    out = enc(x)
    assert out.tokens.shape == (2, 4, 24) and out.order.shape == (2, 4) and out.centers.shape == (2, 4, 2)
    clf = pointmap.create_model(name, num_classes=7, num_registers=2, reduce=2, **TINY).eval()
    assert isinstance(clf, RegisterClassifier)
    assert clf(x).shape == (2, 7)
    tokens = clf.forward_features(x)
    assert tokens.shape == (2, 6, 24)
    assert clf.forward_head(tokens, pre_logits=True).shape == (2, clf.num_features) == (2, 24)
    clf.reset_classifier(3)
    assert clf(x).shape == (2, 3) and clf.pretrained_cfg["num_classes"] == 3
    has_attention = name.startswith("map_")
    assert ("A" in enc.layout) == has_attention and ("A" in clf.encoder.layout) == has_attention


@pytest.mark.parametrize("size", SIZES)
def test_map2d_parameter_counts_equal_the_release(size):
    """The release's model (pretraining encoder + decoder + its unused cls/neck/head for 1000 classes) has the
    table's count; pointmap's pretrainer and hybrid classifier together hold every one of those tensors."""
    name = f"map_{size}_patch16_224"
    with torch.device("meta"):
        pre = pointmap.create_pretrainer(name)
        clf = pointmap.create_model(name, num_classes=1000)
    unused = n_params(clf) - n_params(clf.encoder)   # registers, their table, neck, norm_neck, head
    assert n_params(pre) + unused == state_table()["param_counts"][size]
    assert isinstance(pre, MAP2DPretrainer) and n_params(pre.encoder) == n_params(clf.encoder)
