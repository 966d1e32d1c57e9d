"""timm's shape for every registered name: forward_features gives tokens, forward_head pools and classifies,
num_classes=0 is the same class returning pooled features, reset_classifier, pretrained_cfg and the test-time
pipeline it names; one head vocabulary (the linear probe's pools included)."""
import pytest
import torch

import pointmap
from pointmap.data import create_transform
from pointmap.errors import UserError
from pointmap.models import HEAD_DEFAULTS, POOLS, Classifier, build_model, pooled_features
from pointmap.models.linear_probe import PROBE_POOLS, LinearProbe

from ._hub import TINY, hub, serve_entry  # noqa: F401  (hub is a fixture)
from .test_models import tiny_input


@pytest.mark.parametrize("name", pointmap.list_models())
def test_timm_shape_of_every_preset(name):
    """timm's interface, whatever the preset's class: tokens, pooled features, logits, no head, a new head."""
    kw, x = tiny_input(name)
    torch.manual_seed(0)
    model = pointmap.create_model(name, num_classes=7, **kw).eval()
    with torch.no_grad():
        tokens = model.forward_features(x)
        assert tokens.ndim == 3 and tokens.shape[0] == 2 and torch.equal(model.forward_head(tokens), model(x))
        feats = model.forward_head(tokens, pre_logits=True)
    assert feats.shape == (2, model.num_features) and model(x).shape == (2, 7)

    torch.manual_seed(0)
    bare = pointmap.create_model(name, num_classes=0, **kw).eval()
    assert type(bare) is type(model) and bare.num_classes == 0
    bare.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("head.")})
    with torch.no_grad():
        assert torch.equal(bare(x), feats)  # num_classes=0: the pooled features
    model.reset_classifier(0)
    assert not any(k.startswith("head.") for k in model.state_dict())
    with torch.no_grad():
        assert torch.equal(model(x), feats)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3

    cfg = model.pretrained_cfg
    assert cfg["preset"] == name and cfg["class_names"] is None and cfg["num_classes"] == 7
    if cfg["modality"] == "points":
        assert cfg["num_points"] == 1024
        points = create_transform(cfg)(torch.rand(5000, 3) * 7 + 3)
        assert points.shape == (1024, 3) and points.norm(dim=-1).max().item() == pytest.approx(1.0)
    else:
        assert cfg["input_size"] == tuple(x.shape[1:])
    assert pointmap.create_model(name, **kw).pretrained_cfg["num_classes"] is None   # the encoder alone


@pytest.mark.parametrize("name", [n for n in pointmap.list_models() if "image" in n or n in
                                  ("hybridnet_s", "pointmae", "pointmamba", "mamba3d", "map3d_official")])
def test_classifier_tokens_pools_and_new_heads(name):
    """The point and HybridNet image presets' Classifier: prefix tokens counted, the pool's width, a new pool."""
    kw, x = tiny_input(name)
    model = pointmap.create_model(name, num_classes=7, **kw).eval()
    assert isinstance(model, Classifier)
    n_orders = 2 if name == "pointmamba" else 1
    assert model.forward_features(x).shape == (2, model.num_prefix_tokens + 16 * n_orders, 32)
    assert model.num_features == POOLS[model.global_pool] * 32
    model.reset_classifier(3, global_pool="max")
    assert model.num_features == 32 and model(x).shape == (2, 3) and model.global_pool == "max"
    with pytest.raises(UserError, match="one of"):
        model.reset_classifier(3, global_pool="maxx")


def test_prefix_tokens_come_first():
    kw, x = tiny_input("pointmae")
    model = pointmap.create_model("pointmae", num_classes=4, **kw).eval()
    with torch.no_grad():
        out = model._encode(x)
        tokens = model.forward_features(x)
    assert model.num_prefix_tokens == 1 and torch.equal(tokens[:, :1], out.prefix) and torch.equal(tokens[:, 1:], out.tokens)


def test_one_head_vocabulary():
    plain = build_model(3, layout="T", **tiny_input("hybridnet_s")[0])
    assert (plain.global_pool, plain.cls_token, plain.head_hidden) == (
        HEAD_DEFAULTS["global_pool"], None, HEAD_DEFAULTS["head_hidden"])
    image = pointmap.create_model("hybridnet_image_t", num_classes=3, **tiny_input("hybridnet_image_t")[0])
    assert isinstance(image, Classifier) and image.global_pool == "mean" and isinstance(image.head[0], torch.nn.Linear)
    with pytest.raises(UserError, match="needs cls_token=True"):
        pointmap.create_model("hybridnet_image_t", num_classes=3, global_pool="cls_max")
    with pytest.raises(UserError, match="part segmentation needs a point-cloud model"):
        pointmap.create_model("hybridnet_image_t", num_parts=3)
    with pytest.raises(UserError, match="num_classes must be an integer >= 0"):
        pointmap.create_model("hybridnet_s", num_classes=-1)


@pytest.mark.parametrize("pool", list(POOLS))
def test_linear_probe_takes_every_pool_or_says_why_not(pool):
    encoder = pointmap.create_model("hybridnet_s", **tiny_input("hybridnet_s")[0])
    if pool not in PROBE_POOLS:
        with pytest.raises(UserError, match=f"got '{pool}' \\(a cls token is not part of a frozen"):
            LinearProbe(encoder, 5, global_pool=pool)
        return
    probe = LinearProbe(encoder, 5, global_pool=pool).eval()
    x = torch.randn(3, 256, 3)
    assert pooled_features(probe, x).shape == (3, probe.num_features) and probe(x).shape == (3, 5)


def test_pretrained_cfg_of_an_exported_folder_is_its_card(tmp_path):
    """create_model(pretrained=FOLDER) hands the card on: class names, points, transforms, source."""
    from pointmap.models.pretrained import CARD_FILE, WEIGHTS_FILE
    import json
    from safetensors.torch import save_file

    kw = tiny_input("hybridnet_s")[0]
    model = pointmap.create_model("hybridnet_s", num_classes=2, **kw)
    save_file(model.state_dict(), str(tmp_path / WEIGHTS_FILE))
    transforms = [{"name": "normalize"}, {"name": "sample", "num_points": 128, "method": "fps"}]
    (tmp_path / CARD_FILE).write_text(json.dumps({
        "name": "mine", "preset": "hybridnet_s", "args": kw, "head": {"num_classes": 2}, "weights": WEIGHTS_FILE,
        "classes": ["cup", "bowl"], "num_points": 128, "transforms": transforms, "source": "my run"}))
    loaded = pointmap.create_model("hybridnet_s", pretrained=str(tmp_path))
    cfg = loaded.pretrained_cfg
    assert cfg["class_names"] == ["cup", "bowl"] and cfg["num_points"] == 128 and cfg["transforms"] == transforms
    assert cfg["source"] == "my run" and cfg["file"] == str(tmp_path / WEIGHTS_FILE) and cfg["num_classes"] == 2
    assert create_transform(cfg)(torch.rand(500, 3)).shape == (128, 3)
    renewed = pointmap.create_model("hybridnet_s", num_classes=0, pretrained=str(tmp_path))
    assert renewed.pretrained_cfg["class_names"] is None and renewed.num_classes == 0  # the card's head is gone


def test_pretrained_cfg_of_a_published_entry_is_its_card(hub):  # noqa: F811
    """A published entry (served by the test hub in the peer's own layout) hands its card on: ModelNet40's class
    names, its points and test transforms, where the file is linked; pointmap.predict names those classes."""
    card, _ = serve_entry(hub, "pointmae.modelnet40_1k")
    model = pointmap.create_model("pointmae", pretrained="pointmae.modelnet40_1k", **TINY["pointmae"])
    cfg = model.pretrained_cfg
    assert cfg["name"] == "pointmae.modelnet40_1k" and cfg["class_names"] == card.class_names
    assert len(cfg["class_names"]) == 40 and cfg["class_names"][0] == "airplane"
    assert cfg["num_points"] == 1024 and cfg["transforms"] == card.transforms
    assert cfg["source"] == card.source and cfg["url"] == card.url and cfg["protocol"] == "peer"
    pred = pointmap.predict(model, [torch.rand(3000, 3)], topk=3)[0]
    assert set(pred["classes"]) <= set(card.class_names) and len(pred["classes"]) == 3
