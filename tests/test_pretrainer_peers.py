"""The peers' pretraining setups: Point-MAE's (objective "mae") and PointMamba's (Mamba decoder, one token
order drawn per batch, the peers' xavier decoder init)."""
import math
import os

import pytest
import torch
from torch import nn

import pointmap
from pointmap.config import load_config
from pointmap.ops import gather_points, serialize

TINY = dict(embed_dim=32, num_group=16, group_size=8, layout="MM", drop_path_rate=0.0)
PEER = dict(objective="mae", mask_ratio=0.6, decoder_type="mamba", order_draw="random")
CFGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cfgs")


def tiny_pointmamba(**kw):
    torch.manual_seed(0)
    return pointmap.create_pretrainer("pointmamba", decoder_depth=2, **{**PEER, **TINY, **kw})


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_are_the_peers():
    with torch.device("meta"):
        pm = pointmap.create_pretrainer("pointmamba", objective="mae", mask_ratio=0.6, decoder_type="mamba")
        mae = pointmap.create_pretrainer("pointmae", objective="mae", mask_ratio=0.6)
    assert _count(pm) == 16_068_704                        # Point_MAE_Mamba_serializationV2
    assert _count(pm.encoder) == 12_122_112                # its MAE_encoder
    assert _count(pm.decoder) == 3_859_200                 # its MAE_decoder
    assert _count(mae) == 29_006_432                       # Point-MAE's Point_MAE


def test_random_order_draw_uses_both_orders_with_their_scale_and_shift(monkeypatch):
    pre = tiny_pointmamba().eval()
    enc = pre.encoder
    with torch.no_grad():
        enc.order_scale.copy_(torch.tensor([[2.0], [3.0]]).expand_as(enc.order_scale))
        enc.order_shift.copy_(torch.tensor([[0.5], [-0.5]]).expand_as(enc.order_shift))
    seen = []
    tokenize = enc.tokenize
    monkeypatch.setattr(enc, "tokenize", lambda x, **kw: seen.append(tokenize(x, **kw)) or seen[-1])
    pts = torch.randn(2, 256, 3)
    neighborhood, centers = enc.group(pts)
    raw = enc.tokenizer(neighborhood)
    drawn = set()
    for seed in range(12):
        out = pre(pts, generator=torch.Generator().manual_seed(seed))
        i = pre.draw_order(torch.Generator().manual_seed(seed))        # the first draw of that seed
        drawn.add(i)
        perm = serialize(centers, enc.orders[i], grid_size=enc.grid_size, grid_depth=enc.grid_depth)
        assert torch.equal(out.order, perm) and torch.equal(seen[-1].order, perm)
        expected = gather_points(raw, perm) * (2.0 if i == 0 else 3.0) + (0.5 if i == 0 else -0.5)
        assert torch.allclose(seen[-1].tokens, expected, atol=1e-6)
    assert drawn == {0, 1}


def test_order_draw_is_reproducible_and_first_is_todays():
    pre = tiny_pointmamba().eval()
    pts = torch.randn(2, 256, 3)
    a, b = (pre(pts, generator=torch.Generator().manual_seed(4)) for _ in range(2))
    assert torch.equal(a.loss, b.loss) and torch.equal(a.mask, b.mask) and torch.equal(a.order, b.order)
    torch.manual_seed(1)
    global_draws = [pre.draw_order() for _ in range(20)]
    assert set(global_draws) == {0, 1}
    first = tiny_pointmamba(order_draw="first").eval()
    assert first.draw_order(torch.Generator().manual_seed(0)) == 0
    out = first(pts, generator=torch.Generator().manual_seed(4))
    assert torch.equal(out.order, first.encoder.tokenize(pts).order)
    # "first" draws nothing: the mask is the one today's default draws from the same generator
    assert torch.equal(out.mask, pointmap.models.random_mask(2, 16, 0.6, torch.Generator().manual_seed(4)))


def test_mamba_decoder_is_one_way():
    """An output at position i does not change when a token after i changes (PointMamba's decoder, a
    one-way Mamba); the tokens from i on do change."""
    pre = tiny_pointmamba().eval()
    assert [type(b.mixer).__name__ for b in pre.decoder.blocks] == ["MambaMixer"] * 2
    assert all(b.mixer.bidirectional is None and b.mlp is None for b in pre.decoder.blocks)
    x, pos = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    for cut in (1, 7, 12):
        x2, pos2 = x.clone(), pos.clone()
        x2[:, cut:] += torch.randn_like(x2[:, cut:])
        pos2[:, cut + 1:] += 1.0
        y, y2 = pre.decoder(x, pos), pre.decoder(x2, pos2)
        assert torch.allclose(y[:, :cut], y2[:, :cut], atol=1e-6)
        assert not torch.allclose(y[:, cut:], y2[:, cut:], atol=1e-3)


@pytest.mark.parametrize("decoder_type", ["mamba", "transformer"])
def test_xavier_init_is_the_peers_and_leaves_the_encoder(decoder_type):
    torch.manual_seed(0)
    enc = pointmap.create_model("pointmamba", **TINY)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    pre = pointmap.create_pretrainer(enc, objective="mae", decoder_type=decoder_type, decoder_init="xavier",
                                     decoder_heads=2, decoder_depth=2)
    assert all(torch.equal(v, before[k]) for k, v in enc.state_dict().items())
    linears = [m for m in pre.decoder.modules() if isinstance(m, nn.Linear)]
    norms = [m for m in pre.decoder.modules() if isinstance(m, nn.LayerNorm)]
    assert len(linears) == 8 and len(norms) == (3 if decoder_type == "mamba" else 5)
    for m in linears:                         # the peers' apply reaches the Mamba mixers' projections too
        bound = math.sqrt(6.0 / (m.in_features + m.out_features))
        assert 0.7 * bound < m.weight.abs().max() <= bound
        assert m.bias is None or not m.bias.any()
    assert all(torch.equal(n.weight, torch.ones_like(n.weight)) and not n.bias.any() for n in norms)
    assert pre.predictor.bias.any() and pre.decoder_pos_embed[0].bias.any()   # PyTorch's default init
    default = pointmap.create_pretrainer("pointmamba", objective="mae", decoder_type="mamba", decoder_depth=1, **TINY)
    assert default.decoder.blocks[0].mixer.dt_proj.bias.min() < 0       # mamba's own Δ init kept
    assert not default.predictor.bias.any()                             # pointmap's trunc-normal init


def test_one_peer_training_step_reaches_every_parameter():
    pre = tiny_pointmamba(decoder_init="xavier").train()
    pts = torch.randn(3, 256, 3)
    out = pre(pts, generator=torch.Generator().manual_seed(2))
    i = pre.draw_order(torch.Generator().manual_seed(2))
    assert torch.isfinite(out.loss) and out.pred.shape == (3, int(0.6 * 16), 8, 3)
    out.loss.backward()
    assert [n for n, p in pre.named_parameters() if p.grad is None] == []
    for grad in (pre.encoder.order_scale.grad, pre.encoder.order_shift.grad):
        assert grad[i].abs().sum() > 0 and not grad[1 - i].any()      # only the drawn order's row


def test_option_errors():
    with pytest.raises(ValueError, match="order_draw='random' needs an encoder with several token orders"):
        pointmap.create_pretrainer("hybridnet_s", order_draw="random", num_heads=2, **TINY)
    with pytest.raises(ValueError, match="order_draw must be one of"):
        tiny_pointmamba(order_draw="each")
    with pytest.raises(ValueError, match="decoder_type='mamba' is causal.*not 'map'"):
        tiny_pointmamba(objective="map")
    with pytest.raises(ValueError, match="decoder_type must be one of"):
        tiny_pointmamba(decoder_type="rnn")
    with pytest.raises(ValueError, match="decoder_init must be one of"):
        tiny_pointmamba(decoder_init="kaiming")


def test_options_come_from_the_config():
    from pointmap.engine import build_task

    cfg = load_config(os.path.join(CFGS, "map_demo.yaml"), [
        "model.name=pointmamba", "model.args={embed_dim: 16, layout: MM, num_group: 16, group_size: 16, block_dropout: 0.1}",
        "objective.name=mae", "objective.mask_ratio=0.6",
        "objective.decoder_type=mamba", "objective.order_draw=random", "objective.decoder_init=xavier"])
    pre = build_task(cfg).build_model({})
    assert pre.order_draw == "random" and pre.decoder.block_type == "mamba" and pre.encoder.block_drop.p == 0.1
    assert not pre.decoder.blocks[0].mixer.dt_proj.bias.any()          # xavier: zero biases


def test_pointmamba_pretraining_encoder_init_reaches_the_mixers():
    """PointMamba's MaskMamba re-initialises every Linear / Conv1d of its encoder, the Mamba mixers' too
    (truncated normal 0.02, zero bias: dt_proj's bias becomes 0); mixer_init="mamba" keeps mamba's."""
    torch.manual_seed(0)
    kw = dict(layout="MM", embed_dim=32, num_group=16, group_size=8)
    own = pointmap.create_model("pointmamba", **kw)
    peer = pointmap.create_model("pointmamba", mixer_init="trunc_normal", **kw)
    for m in (own, peer):  # A keeps mamba's init either way: A_log = log(1..d_state) on every channel
        a_log = m.blocks[0].mixer.A_log
        assert torch.allclose(a_log, torch.log(torch.arange(1, a_log.shape[1] + 1.0)).expand_as(a_log))
    assert own.blocks[0].mixer.dt_proj.bias.abs().sum() > 0 and peer.blocks[0].mixer.dt_proj.bias.abs().sum() == 0
    for name in ("in_proj", "x_proj", "out_proj"):
        w = getattr(peer.blocks[1].mixer, name).weight
        assert 0.017 < w.std() < 0.023 and abs(w.mean()) < 0.005  # trunc_normal_(std=0.02)
    assert peer.blocks[0].mixer.conv1d.bias.abs().sum() == 0
    with pytest.raises(ValueError, match="mixer_init"):
        pointmap.create_model("pointmamba", mixer_init="xavier", **kw)
