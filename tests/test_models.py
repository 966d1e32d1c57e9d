"""Registry, presets (shapes for every name, parameter counts), heads."""
import pytest
import torch

import pointmap
from pointmap.models import Classifier, HybridEncoder, PartSegmenter, TokenEncoder, no_weight_decay, pooled_features

TINY_POINTS = dict(embed_dim=32, num_heads=2, num_group=16, group_size=8)
TINY_IMAGE = dict(embed_dim=32, num_heads=2, img_size=32, patch_size=8)
# the MAP 2D release's presets (map_* / mambar_*_patch16_224): 16×16 patches of a 32 px image, 2 registers
TINY_MAP2D = dict(embed_dim=32, num_heads=2, img_size=32, depth=3, num_registers=2)


def tiny_input(name):
    if name.endswith("_patch16_224"):
        return TINY_MAP2D, torch.randn(2, 3, 32, 32)
    if "image" in name:
        return TINY_IMAGE, torch.randn(2, 3, 32, 32)
    return TINY_POINTS, torch.randn(2, 256, 3)


def n_params(name, **kw):
    with torch.device("meta"):
        model = pointmap.create_model(name, **kw)
    return sum(p.numel() for p in model.parameters())


# the MAP 2D release's presets (patch16_224) have their own smoke test: tests/test_map2d.py
TOKEN_ENCODER_MODELS = [n for n in pointmap.list_models() if not n.endswith("_patch16_224")]


@pytest.mark.parametrize("name", TOKEN_ENCODER_MODELS)
def test_every_registered_model_runs(name):
    kw, x = tiny_input(name)
    clf = pointmap.create_model(name, num_classes=7, **kw).eval()
    out = clf.encoder(x)
    n_orders = 2 if name == "pointmamba" else 1
    assert out.tokens.shape == (2, 16 * n_orders, 32)
    assert out.order.shape == (2, 16 * n_orders) and out.order.dtype == torch.long
    assert out.centers.shape[:2] == (2, 16 * n_orders)
    assert isinstance(clf, Classifier)
    assert isinstance(pointmap.create_model(name, **{**kw, "layout": "T"}), TokenEncoder)   # num_classes=None
    assert clf(x).shape == (2, 7)
    assert pooled_features(clf, x).shape == (2, clf.num_features)


@pytest.mark.parametrize("name", [n for n in TOKEN_ENCODER_MODELS if "image" not in n])
def test_part_segmentation_head(name):
    seg = pointmap.create_model(name, num_parts=50, num_categories=16, layout="MT", **TINY_POINTS).eval()
    assert isinstance(seg, PartSegmenter)
    pts = torch.randn(2, 256, 3)
    logits = seg(pts, torch.tensor([0, 15]))
    assert logits.shape == (2, 256, 50)
    assert torch.allclose(logits, seg(pts, torch.eye(16)[[0, 15]]))


def test_classifier_readme_example():
    model = pointmap.create_model("hybridnet_s", num_classes=40, **TINY_POINTS).eval()
    assert model(torch.randn(3, 256, 3)).shape == (3, 40)
    assert isinstance(pointmap.create_model("hybridnet_s"), HybridEncoder)


def test_pointmae_parameter_counts_are_point_mae_s():
    assert n_params("pointmae", num_classes=40) == 22_099_752
    assert n_params("pointmae", num_classes=15) == 22_093_327
    assert n_params("pointmae") == 21_825_024          # Point-MAE's MAE_encoder
    with torch.device("meta"):
        pre = pointmap.create_pretrainer("pointmae", objective="mae", mask_ratio=0.6)
    assert sum(p.numel() for p in pre.parameters()) == 29_006_432   # Point-MAE's Point_MAE


def test_other_parameter_counts():
    assert abs(n_params("pointmamba", num_classes=40) / 12.3e6 - 1) < 0.03   # PointMamba's 12.3M
    assert abs(n_params("map3d_official", num_classes=15) / 25.22e6 - 1) < 0.001
    # the README table
    assert n_params("pointmamba", num_classes=40) == 12_297_768
    assert n_params("map3d_official", num_classes=15) == 25_220_623
    assert n_params("mamba3d", num_classes=15) == 16_927_759          # Mamba3D's, exactly
    assert n_params("mamba3d", num_classes=40) == 16_934_184
    assert n_params("hybridnet_s", num_classes=40) == 15_533_352  # bidirectional Mamba (Vim biscan)
    assert n_params("hybridnet_s") == 15_258_624
    assert n_params("pointmamba") == 12_122_112
    assert n_params("map3d_official") == 24_952_320
    assert n_params("mamba3d") == 16_659_456
    assert [n_params(f"hybridnet_image_{v}") for v in "tsb"] == [4_046_208, 15_059_328, 57_987_456]


def test_mamba3d_is_map3d_official_without_attention_blocks():
    enc = pointmap.create_model("mamba3d", embed_dim=32, num_group=16, group_size=8)
    assert enc.layout == "M" * 12 and pointmap.create_model("map3d_official", **TINY_POINTS).layout == "MMMT" * 4
    assert all(b.mlp.bidirectional == "channel" and b.mixer.k == 4 for b in enc.blocks)
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in enc.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.1, 12).tolist())


def test_pointmae_matches_point_mae_module_names():
    model = pointmap.create_model("pointmae", num_classes=40, **TINY_POINTS)
    names = set(model.state_dict())
    assert "encoder.tokenizer.first_conv.1.running_mean" in names
    assert "encoder.blocks.11.mixer.qkv.weight" in names and "encoder.blocks.0.mixer.qkv.bias" not in names
    assert {"cls_token", "cls_pos", "head.8.weight", "encoder.norm.bias"} <= names


def test_unknown_model_lists_registered_names():
    with pytest.raises(ValueError) as err:
        pointmap.create_model("hybridnet_xxl")
    for name in pointmap.list_models():
        assert name in str(err.value)


def test_bad_layout_letter():
    with pytest.raises(ValueError, match="'X' at position 2"):
        pointmap.create_model("hybridnet_s", layout="MTX", **TINY_POINTS)


def test_layout_and_drop_path():
    enc = pointmap.create_model("hybridnet_s", layout="MTM", drop_path_rate=0.2, **TINY_POINTS)
    kinds = [type(b.mixer).__name__ for b in enc.blocks]
    assert kinds == ["MambaMixer", "Attention", "MambaMixer"]
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in enc.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2])
    rms = pointmap.create_model("hybridnet_s", layout="MT", norm_layer="rmsnorm", **TINY_POINTS)
    assert isinstance(rms.norm, torch.nn.RMSNorm)


def test_serialization_order_is_returned_and_used():
    pts = torch.randn(2, 256, 3)
    enc = pointmap.create_model("hybridnet_s", layout="T", **TINY_POINTS).eval()
    out = enc(pts)
    assert torch.equal(out.order.sort(dim=1).values, torch.arange(16).expand(2, -1))
    _, centers = enc.group(pts)
    assert torch.allclose(out.centers, torch.gather(centers, 1, out.order[..., None].expand(-1, -1, 3)))
    assert torch.equal(pointmap.create_model("pointmae", **TINY_POINTS)(pts).order, torch.arange(16).expand(2, -1))


def test_return_layers_in_order_with_repeats():
    enc = pointmap.create_model("hybridnet_s", layout="MT", **TINY_POINTS).eval()
    out = enc(torch.randn(1, 256, 3), return_layers=[0, 0, -1])
    assert len(out.hidden) == 3 and torch.equal(out.hidden[0], out.hidden[1])
    assert torch.allclose(enc.norm(out.hidden[2]), out.tokens)


def test_register_model_rejects_duplicates():
    with pytest.raises(ValueError, match="twice"):
        pointmap.register_model(pointmap.models.presets.hybridnet_s)
    from pointmap.models.registry import model_arguments

    assert "embed_dim" in model_arguments("hybridnet_s")  # the refused registration left the preset as it was


@pytest.mark.parametrize("name", ["hybridnet_s", "pointmamba", "map3d_official", "mamba3d"])
def test_every_parameter_gets_a_gradient(name):
    """No unused parameters, so DDP needs no find_unused_parameters."""
    pts = torch.randn(2, 256, 3)
    for model, args in ((pointmap.create_model(name, num_classes=3, layout="MT", **TINY_POINTS), (pts,)),
                        (pointmap.create_model(name, num_parts=5, num_categories=2, layout="MT", **TINY_POINTS),
                         (pts, torch.tensor([0, 1]))),
                        (pointmap.create_model(name, num_parts=5, num_categories=2, layout="MT", seg_head="point_mae",
                                               **TINY_POINTS), (pts, torch.tensor([0, 1])))):
        model(*args).sum().backward()
        assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_no_weight_decay_names():
    names = no_weight_decay(pointmap.create_model("hybridnet_s", num_classes=3, layout="MT", **TINY_POINTS))
    assert {"cls_token", "cls_pos", "encoder.blocks.0.mixer.A_log", "encoder.blocks.0.mixer.D",
            "encoder.blocks.1.norm1.weight", "head.0.bias"} <= names
    assert "encoder.blocks.1.mixer.qkv.weight" not in names and "encoder.blocks.0.mixer.in_proj.weight" not in names


def _first_token_moves(enc, length=16):
    """Whether perturbing the last token of the block input changes the first token's output."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, length, enc.embed_dim, generator=g, dtype=torch.float64)
    pos = torch.zeros_like(x)
    later = x.clone()
    later[:, -1] = torch.randn(enc.embed_dim, generator=g, dtype=torch.float64)  # (a constant shift LayerNorm removes)
    with torch.no_grad():
        a, _ = enc.double().forward_tokens(x, pos)
        b, _ = enc.forward_tokens(later, pos)
    assert not torch.equal(a[:, -1], b[:, -1])
    return not torch.equal(a[:, 0], b[:, 0])


@pytest.mark.parametrize("name", ["hybridnet_s", "hybridnet_image_t"])
def test_hybrid_presets_scan_both_ways(name):
    """A Mamba-only stack of the hybrid presets: a token late in the scan changes an early output (Vim's
    biscan); with one-way mixers, and with Mamba3D's channel flip, the first output cannot see it."""
    kw, _ = tiny_input(name)
    enc = pointmap.create_model(name, **{**kw, "layout": "MM"}).eval()
    assert all(b.mixer.bidirectional == "sequence" for b in enc.blocks)
    assert _first_token_moves(enc)
    for one_way in (False, "channel"):
        assert not _first_token_moves(pointmap.create_model(name, **{**kw, "layout": "MM", "bidirectional": one_way}).eval())


def test_block_dropout_is_pointmambas_per_block_dropout():
    """PointMamba's ``drop_out``: Dropout on every block's output; train mode only, no parameter, settable
    from ``model.args``."""
    from pointmap.models import check_model_args

    kw = dict(TINY_POINTS, layout="MM", drop_path_rate=0.0)
    torch.manual_seed(0)
    plain = pointmap.create_model("pointmamba", num_classes=5, **kw)
    torch.manual_seed(0)
    dropped = pointmap.create_model("pointmamba", num_classes=5, block_dropout=0.3, **kw)
    assert plain.encoder.block_drop is None and dropped.encoder.block_drop.p == 0.3
    assert list(plain.state_dict()) == list(dropped.state_dict())
    dropped.load_state_dict(plain.state_dict())
    x = torch.randn(3, 256, 3)
    enc_a, enc_b = plain.encoder.train(), dropped.encoder.train()
    for bn in (m for enc in (enc_a, enc_b) for m in enc.modules() if isinstance(m, torch.nn.BatchNorm1d)):
        bn.eval()  # BatchNorm statistics aside: only the dropout differs between the two
    torch.manual_seed(1)
    a = enc_a(x).tokens
    torch.manual_seed(1)
    assert not torch.allclose(a, enc_b(x).tokens)
    plain.eval(), dropped.eval()
    assert torch.equal(plain(x), dropped(x))
    check_model_args("pointmamba", {"block_dropout": 0.1})
