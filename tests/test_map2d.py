"""MAP as its authors released it in 2D: the map_*_patch16_224 presets, the release's objective, Mamba-Reg's
classifier; fidelity on tests/fixtures/peers/map2d.pt (the release's own code, float64). Weights and registry
entries: tests/test_map2d_weights.py."""
import json
import math
import os

import sys

import pytest
import torch

import pointmap
from pointmap.models import MAP2DEncoder, MAP2DPretrainer, RegisterClassifier

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import fidelity  # noqa: E402  (tools/fidelity.py: the fixtures loaded into the presets, the docs' figures)

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
    assert clf(x).shape == (2, 3) and clf.num_classes == 3 and clf.pretrained_cfg["input_size"] == (3, 32, 32)
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
    table = state_table()[f"map2d_{size}"]
    assert n_params(pre) + unused == sum(math.prod(shape) for shape in table.values())
    assert isinstance(pre, MAP2DPretrainer) and n_params(pre.encoder) == n_params(clf.encoder)


# ---- fidelity: the reduced release model of map2d.pt, float64 ----------------------------------------------------
# Tolerances. With the A matrices the release's scans used (the fixture's mixer_A, formed in float32 by the
# release) plugged in and everything else in float64, what remains is float64 rounding in another order of
# operations (SDPA vs timm's explicit softmax, a parallel scan vs a step loop): measured ≤ 5e-15 on every stage,
# asserted at 1e-12. Without them, A = −exp(A_log) is formed in float32 here too, as the release does, but
# torch's float32 exp differs between CPU paths by up to 9.5e-7 (fixture README), which moves the encoder tokens by
# 2.6e-9 and the prediction by 1.2e-9: asserted at 1e-7.
TIGHT, LOOSE = 1e-12, 1e-7


@pytest.fixture(scope="module")
def fixture():
    return fidelity.fixture("map2d")


def reduced(fixture, **kw):
    c = fixture["config"]
    return dict(img_size=c["img_size"], embed_dim=c["embed_dim"], depth=c["depth"], num_heads=c["num_heads"], **kw)


def release_pretrainer(tmp_path, recorded_a=True):
    """The reduced pretrainer with the release's weights, from a file saved as its main.py saves one."""
    pre, _, result = fidelity.load_map2d(str(tmp_path), recorded_a=recorded_a)
    assert result.source == "map2d" and not result.missing_keys and not result.unexpected_keys
    assert sorted(result.ignored_keys) == sorted(["cls_token", "cls_pos", "neck.weight", "norm_neck.weight",
                                                  "head.weight", "head.bias"])
    return pre


def test_map2d_reduced_model_reproduces_every_stage(fixture, tmp_path):
    pre, o, x = release_pretrainer(tmp_path), fixture["outputs"], fixture["input"]
    mask = torch.zeros(2, 16, dtype=torch.bool).scatter_(1, fixture["orders"][:, :fixture["num_masked"]], True)
    assert torch.equal(mask, o["mask"].bool())
    visible = (~mask).nonzero()[:, 1].reshape(2, -1)
    with torch.no_grad():
        assert torch.equal(pre.encoder.patch_embed(x), o["patch_embed"])
        emb = pre.encoder.embed(x)
        enc_in = emb.gather(1, visible.unsqueeze(-1).expand(-1, -1, emb.shape[-1]))
        assert torch.equal(enc_in, o["encoder_input"])
        tokens, stream = pre.encoder.forward_tokens(enc_in, return_layers=range(6))
        # the running sum after layer i is what layer i + 1 normalizes (its attention block included)
        for i in range(5):
            torch.testing.assert_close(stream[i], o["layer_residual"][i + 1], rtol=0, atol=TIGHT)
        torch.testing.assert_close(tokens, o["encoder_tokens"], rtol=0, atol=TIGHT)
        torch.testing.assert_close(pre.decoder.assemble(tokens, visible), o["decoder_input"], rtol=0, atol=TIGHT)
        assert torch.equal(pre.decoder.attn_mask(), o["decoder_attn_mask"] == 0)
        pred, blocks = pre.decoder(tokens, visible, return_blocks=True)
        for i in range(4):
            torch.testing.assert_close(blocks[i], o["decoder_block_out"][i], rtol=0, atol=TIGHT)
        torch.testing.assert_close(pred, o["pred"], rtol=0, atol=TIGHT)
        patches, _ = pointmap.models.map2d_decoder.norm_pix_target(x, 16)
        assert torch.equal(patches, o["patches"])
        out = pre(x, mask=mask)
    torch.testing.assert_close(out.loss, o["loss"], rtol=0, atol=TIGHT)
    torch.testing.assert_close(out.loss, o["loss_forward"], rtol=0, atol=TIGHT)
    torch.testing.assert_close(out.pred, o["pred"][mask].reshape(2, 9, 768), rtol=0, atol=TIGHT)


def test_map2d_attention_block_doubles_its_identity(fixture, tmp_path):
    """The release's attention block acts on the mixer output h and adds h once more (vit_hidden = block + h)."""
    pre, o = release_pretrainer(tmp_path), fixture["outputs"]
    with torch.no_grad():
        for k, layer in enumerate((2, 5)):
            blk = pre.encoder.blocks[layer]
            assert blk.attn_block is not None and blk.double_identity
            h = o["layer_hidden"][layer]
            torch.testing.assert_close(blk.attn_block(h), o["vit_block_out"][k], rtol=0, atol=TIGHT)
            assert torch.equal(o["vit_block_out"][k] + h, o["vit_hidden"][k])


def test_map2d_float32_a_matches_within_the_cpu_spread(fixture, tmp_path):
    pre, o = release_pretrainer(tmp_path, recorded_a=False), fixture["outputs"]
    with torch.no_grad():
        out = pre(fixture["input"], mask=o["mask"].bool())
    torch.testing.assert_close(out.pred, o["pred"][o["mask"].bool()].reshape(2, 9, 768), rtol=0, atol=LOOSE)
    torch.testing.assert_close(out.loss, o["loss"], rtol=0, atol=LOOSE)


def test_map2d_mambar_classifier_reproduces_mamba_reg(fixture, tmp_path):
    """Mamba-Reg's classifier on the release's weights, as its --finetune loads them: the attention blocks and
    the decoder have no place in it. pointmap names them (a strict load refuses), a partial load sets them aside."""
    m, _, result = fidelity.load_map2d(str(tmp_path), "mambar")
    assert not result.missing_keys and not result.unexpected_keys and not result.ignored_keys
    with pytest.raises(pointmap.models.CheckpointError, match="no place in the model"):
        pointmap.models.load_state(m, fixture["state_dict"], "map2d.pt")
    result = pointmap.models.load_state(m, fixture["state_dict"], "map2d.pt", strict=False)
    assert not result.missing_keys
    assert len(result.unexpected_keys) + len(result.ignored_keys) == len(fixture["mambar"]["load"]["unexpected_keys"])
    fidelity.use_recorded_a(m.encoder, fixture["outputs"]["mixer_A"])
    o, x = fixture["mambar"]["outputs"], fixture["input"]
    with torch.no_grad():
        assert torch.equal(m.sequence(x), o["sequence_input"])
        tokens = m.forward_features(x)
        torch.testing.assert_close(tokens[:, m.cls_positions], o["register_tokens"], rtol=0, atol=TIGHT)
        torch.testing.assert_close(m.forward_head(tokens, pre_logits=True), o["features"], rtol=0, atol=TIGHT)
        torch.testing.assert_close(m(x), o["logits"], rtol=0, atol=TIGHT)


def test_map2d_register_layout_is_the_release_helpers(fixture):
    for key, want in fixture["register_layout"].items():
        side = 4 if key.startswith("grid4x4") else 14
        idx, pos = pointmap.models.mambar.register_layout(side, side, int(key.split("cls")[1]))
        assert torch.equal(idx, want["token_idx"]) and torch.equal(pos, want["cls_positions"])


def test_map2d_hybrid_classifier_is_mamba_reg_plus_the_attention_blocks(fixture, tmp_path):
    """The hybrid loads the release's file whole (decoder set aside); with its attention blocks made identities
    (zero output projections, single identity) it computes Mamba-Reg's logits."""
    h, _, result = fidelity.load_map2d(str(tmp_path), "hybrid", double_identity=False)
    assert not result.unexpected_keys and all(k.startswith("decoder.") for k in result.ignored_keys)
    with torch.no_grad():
        full = h(fixture["input"])
        for layer in (2, 5):
            blk = h.encoder.blocks[layer].attn_block
            for lin in (blk.mixer.proj, blk.mlp.fc2):
                lin.weight.zero_()
                lin.bias.zero_()
        plain = h(fixture["input"])
    torch.testing.assert_close(plain, fixture["mambar"]["outputs"]["logits"], rtol=0, atol=TIGHT)
    assert (full - plain).abs().max() > 1e-3


# ---- the release's masking, from a torch.Generator ----------------------------------------------------------------
def test_map2d_mask_rate_is_the_releases_truncated_normal(fixture):
    from scipy import stats

    from pointmap.models.map2d_decoder import truncated_normal_rate

    d = fixture["mask_ratio_distribution"]
    g = torch.Generator().manual_seed(0)
    rates = [truncated_normal_rate(0.5, 0.25, 0.3, 0.7, generator=g) for _ in range(4000)]
    assert min(rates) >= 0.3 and max(rates) <= 0.7
    ref = stats.truncnorm(d["a"], d["b"], loc=d["loc"], scale=d["scale"])
    assert stats.kstest(rates, ref.cdf).pvalue > 1e-3
    assert abs(sum(rates) / len(rates) - ref.mean()) < 0.005


def test_map2d_mask_count_and_generator(fixture):
    """⌈L·rate⌉ masked per sample (the same count in a batch), drawn from the generator alone: two draws with one
    seed agree, in one process, and neither numpy's nor torch's global RNG is touched."""
    import numpy as np

    from pointmap.models.map2d_decoder import truncated_normal_rate

    pre = pointmap.create_pretrainer("map_tiny_patch16_224", **reduced(fixture))
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state()
    draws = [pre.draw_mask(8, torch.Generator().manual_seed(s)) for s in (3, 3, 4)]
    assert np.array_equal(np.random.get_state()[1], np_state) and torch.equal(torch.get_rng_state(), torch_state)
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        state = g.get_state()
        rate = truncated_normal_rate(*pre.mask_rate, generator=g)
        g.set_state(state)
        counts = pre.draw_mask(4, g).sum(dim=1)
        assert (counts == math.ceil(16 * rate)).all() and 5 <= int(counts[0]) <= 12
    out = pre(fixture["input"].float(), generator=torch.Generator().manual_seed(1))
    m = int(out.mask[0].sum())
    assert out.pred.shape == out.target.shape == (2, m, 768) and out.loss.ndim == 0


def test_map2d_full_size_mask_counts():
    with torch.device("meta"):
        pre = pointmap.create_pretrainer("map_base_patch16_224")
    counts = {int(pre.draw_mask(1, torch.Generator().manual_seed(s)).sum()) for s in range(200)}
    assert min(counts) >= 59 and max(counts) <= 138 and len(counts) > 20   # 196 tokens: 59 … 138


# ---- the release's quirks as options ------------------------------------------------------------------------------
def test_map2d_quirk_options():
    from pointmap.models import no_weight_decay

    rel = pointmap.create_pretrainer("map_tiny_patch16_224", **TINY)
    own = pointmap.create_pretrainer("map_tiny_patch16_224", **TINY, double_identity=False, reinit_mixers=False,
                                     release_weight_decay=False)
    # the release's re-init: every dt bias 0 (Δ ≈ softplus(0)); mamba's keeps Δ in [1e-3, 0.1]
    assert all(torch.equal(b.mixer.dt_proj.bias, torch.zeros_like(b.mixer.dt_proj.bias)) for b in rel.encoder.blocks)
    dt = torch.nn.functional.softplus(own.encoder.blocks[0].mixer.dt_proj_b.bias)
    assert dt.min() >= 1e-4 and dt.max() <= 0.1 + 1e-6
    # weight decay: the release decays A_log / A_b_log, the mask token and the decoder table
    decay_free = no_weight_decay(rel)
    assert "encoder.blocks.0.mixer.A_log" not in decay_free and "decoder.mask_token" not in decay_free
    assert "encoder.pos_embed" in decay_free
    assert {"encoder.blocks.0.mixer.A_log", "encoder.blocks.0.mixer.A_b_log", "decoder.mask_token",
            "decoder.pos_embed", "encoder.pos_embed"} <= no_weight_decay(own)
    assert rel.encoder.blocks[2].double_identity and not own.encoder.blocks[2].double_identity
    assert own.encoder.blocks[2].attn_block is not None and rel.encoder.layout == "MMA"


def test_map2d_large_runs_with_16_heads():
    """The release gives map_large 12 heads on 1024 channels, which cannot run; pointmap's has 16."""
    enc = pointmap.create_model("map_large_patch16_224", img_size=32, depth=3)
    assert enc.blocks[2].attn_block.mixer.num_heads == 16
    assert enc(torch.randn(1, 3, 32, 32)).tokens.shape == (1, 4, 1024)
    with pytest.raises(pointmap.errors.UserError, match="not divisible"):
        pointmap.create_model("map_large_patch16_224", img_size=32, depth=3, num_heads=12)


def test_map2d_bf16_autocast_keeps_a_float32_stream():
    """residual_in_fp32: under bf16 autocast every layer's running sum stays float32; the loss is float32 and every
    encoder and decoder parameter gets a gradient."""
    pre = pointmap.create_pretrainer("map_tiny_patch16_224", **TINY)
    seen = []
    for blk in pre.encoder.blocks:
        blk.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pre(torch.randn(2, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    assert seen == [torch.float32] * 3 and out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert [n for n, p in pre.named_parameters() if p.grad is None] == []


def test_map2d_model_args_are_checked():
    """A config's model.args for these presets: the encoder's, the classifier's and the objective's names."""
    from pointmap.errors import ConfigError
    from pointmap.models import check_model_args

    check_model_args("map_tiny_patch16_224", {"double_identity": False, "reinit_mixers": False, "finetune": "mambar",
                                              "release_weight_decay": False, "decoder_embed_dim": 192,
                                              "mask_rate_min": 0.3, "num_registers": 12})
    with pytest.raises(ConfigError, match="did you mean 'mask_rate_min'"):
        check_model_args("map_tiny_patch16_224", {"mask_ratio_min": 0.3})
    with pytest.raises(pointmap.errors.UserError, match="pretrains with the MAP 2D release's objective: objective "
                                                        "setting\\(s\\) mask_ratio do not apply"):
        pointmap.create_pretrainer("map_tiny_patch16_224", mask_ratio=0.75, **TINY)
    with pytest.raises(pointmap.errors.UserError, match="decoder_embed_dim is an argument of the pretrainer"):
        pointmap.create_model("map_tiny_patch16_224", decoder_embed_dim=64, **TINY)


def test_map2d_release_init_and_drop_path():
    """The release's init as built: every Linear Xavier-uniform with a zero bias (the mixers' too), LayerNorms
    1 / 0, RMSNorms 1, A_log = log(1…16), D = 1, tables normal 0.02; drop path linspace(0, 0.1) over the layers."""
    torch.manual_seed(0)
    pre = pointmap.create_pretrainer("map_small_patch16_224", depth=6)
    for name, m in pre.named_modules():
        if isinstance(m, torch.nn.Linear):
            bound = math.sqrt(6 / (m.in_features + m.out_features))
            assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound, name
            assert m.bias is None or not m.bias.any(), name
        elif isinstance(m, torch.nn.LayerNorm):
            assert (m.weight == 1).all() and not m.bias.any()
        elif isinstance(m, torch.nn.RMSNorm):
            assert (m.weight == 1).all()
    mixer = pre.encoder.blocks[0].mixer
    assert torch.equal(mixer.A_b_log[0], torch.log(torch.arange(1, 17.0))) and (mixer.D_b == 1).all()
    for table in (pre.encoder.pos_embed, pre.decoder.pos_embed, pre.decoder.mask_token):
        assert abs(table.std().item() - 0.02) < 0.002
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in pre.encoder.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.1, 6).tolist())
