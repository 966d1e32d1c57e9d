"""Layers: Mamba mixer (mamba_ssm's names, shapes, init, causality), attention, block, tokenizer, LNP."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from pointmap.layers import (Attention, Block, LocalNormPool, MambaMixer, MiniPointNet, PosMLP, TokenContext,
                             linear_rates, mamba_block, transformer_block)

# mamba_ssm.modules.mamba_simple.Mamba(d_model=384).state_dict(), names and shapes
MAMBA_SSM_384 = {
    "in_proj.weight": (1536, 384), "conv1d.weight": (768, 1, 4), "conv1d.bias": (768,),
    "x_proj.weight": (56, 768), "dt_proj.weight": (768, 24), "dt_proj.bias": (768,),
    "A_log": (768, 16), "D": (768,), "out_proj.weight": (384, 768),
}


def test_mamba_state_dict_matches_mamba_ssm():
    sd = MambaMixer(384).state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == MAMBA_SSM_384


@pytest.mark.parametrize("mode", ["sequence", "channel"])
def test_mamba_bidirectional_adds_suffixed_parameters(mode):
    sd = MambaMixer(32, bidirectional=mode).state_dict()
    extra = set(sd) - {k for k in MambaMixer(32).state_dict()}
    assert extra == {"conv1d_b.weight", "conv1d_b.bias", "x_proj_b.weight", "dt_proj_b.weight",
                     "dt_proj_b.bias", "A_b_log", "D_b"}


def test_mamba_init_follows_mamba():
    torch.manual_seed(1)
    m = MambaMixer(64)
    assert m.dt_rank == math.ceil(64 / 16)
    assert torch.allclose(m.A_log, torch.log(torch.arange(1, 17.0)).expand(128, -1))
    assert torch.equal(m.D, torch.ones(128))
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    bound = m.dt_rank ** -0.5
    assert m.dt_proj.weight.abs().max() <= bound
    torch.manual_seed(1)
    assert torch.equal(MambaMixer(64).dt_proj.bias, m.dt_proj.bias)  # seeded


def _naive_mamba(m: MambaMixer, x):
    """The mixer's math written out step by step (the test's own oracle)."""
    L = x.shape[1]
    xz = m.in_proj(x)                                   # (B, L, 2Di)
    u, z = xz.chunk(2, dim=-1)
    u = F.silu(F.conv1d(F.pad(u.transpose(1, 2), (m.d_conv - 1, 0)), m.conv1d.weight, m.conv1d.bias,
                        groups=m.d_inner)).transpose(1, 2)
    dt, B, C = m.x_proj(u).split([m.dt_rank, m.d_state, m.d_state], dim=-1)
    delta = F.softplus(m.dt_proj(dt))                   # bias inside
    A = -torch.exp(m.A_log)
    h = torch.zeros(x.shape[0], m.d_inner, m.d_state)
    ys = []
    for t in range(L):
        h = torch.exp(delta[:, t, :, None] * A) * h + delta[:, t, :, None] * B[:, t, None, :] * u[:, t, :, None]
        ys.append((h * C[:, t, None, :]).sum(-1) + m.D * u[:, t])
    y = torch.stack(ys, dim=1) * F.silu(z)
    return m.out_proj(y)


def test_mamba_matches_step_by_step_math():
    m = MambaMixer(16).double()
    x = torch.randn(2, 10, 16, dtype=torch.float64)
    assert torch.allclose(m(x), _naive_mamba(m, x), atol=1e-8)


@pytest.mark.parametrize("mode,causal", [(False, True), ("channel", True), ("sequence", False)])
def test_mamba_causality(mode, causal):
    m = MambaMixer(16, bidirectional=mode)
    x = torch.randn(1, 12, 16)
    x2 = x.clone()
    x2[:, 8:] += 1.0
    y, y2 = m(x), m(x2)
    assert torch.allclose(y[:, :8], y2[:, :8], atol=1e-6) == causal
    assert not torch.allclose(y[:, 8:], y2[:, 8:])


def test_mamba_backward():
    m = MambaMixer(16, bidirectional=True)
    m(torch.randn(2, 9, 16)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_attention_fused_equals_explicit_with_mask():
    attn = Attention(32, num_heads=4).eval()
    x = torch.randn(2, 6, 32)
    mask = torch.tril(torch.ones(6, 6, dtype=torch.bool))
    ctx = TokenContext(attn_mask=mask)
    fused = attn(x, ctx)
    attn.fused_attn = False
    assert torch.allclose(fused, attn(x, ctx), atol=1e-5)


def test_blocks_shapes_and_drop_path():
    x = torch.randn(2, 5, 32)
    for blk in (transformer_block(32, 4, drop_path=0.5), mamba_block(32, drop_path=0.5),
                mamba_block(32, mlp_ratio=2.0)):
        assert blk(x).shape == x.shape
        blk.eval()
        assert torch.equal(blk(x), blk(x))
    assert isinstance(transformer_block(32, 4), Block)
    assert linear_rates(0.1, 3) == [0.0, 0.05, 0.1] and linear_rates(0.1, 1) == [0.0]


def test_tokenizer_and_pos_mlp():
    tok = MiniPointNet(48)
    assert tok(torch.randn(2, 7, 8, 3)).shape == (2, 7, 48)
    assert sum(p.numel() for p in MiniPointNet(384).parameters()) == 494_464   # Point-MAE's Encoder
    assert PosMLP(48)(torch.randn(2, 7, 3)).shape == (2, 7, 48)


def test_local_norm_pool_keeps_prefix():
    lnp = LocalNormPool(16, k=4)
    x = torch.randn(2, 1 + 10, 16)
    ctx = TokenContext(centers=torch.randn(2, 10, 3), num_prefix=1)
    y = lnp(x, ctx)
    assert y.shape == x.shape
    assert torch.equal(y[:, :1], x[:, :1])
    assert ("knn", 4) in ctx.cache
    with pytest.raises(ValueError, match="centers"):
        lnp(x, None)


def test_local_norm_pool_with_only_itself():
    """k = 1: the only neighbour is the token itself, so the pooled feature is α·[0; x] + β."""
    lnp = LocalNormPool(8, k=1)
    with torch.no_grad():
        lnp.alpha.uniform_(0.5, 1.5)
        lnp.beta.uniform_(-0.1, 0.1)
    x = torch.randn(2, 5, 8)
    y = lnp(x, TokenContext(centers=torch.randn(2, 5, 3)))
    feat = torch.cat([torch.zeros_like(x), x], dim=-1) * lnp.alpha + lnp.beta
    assert torch.allclose(y, lnp.act(lnp.proj(lnp.norm(feat))), atol=1e-6)


@pytest.mark.gpu
def test_weights_move_to_mamba_ssm_and_back():
    mamba_ssm = pytest.importorskip("mamba_ssm")
    ours = MambaMixer(384).cuda()
    theirs = mamba_ssm.Mamba(d_model=384).cuda()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 64, 384, device="cuda")
    assert torch.allclose(ours(x), theirs(x), atol=1e-3, rtol=1e-3)
    ours.load_state_dict(theirs.state_dict())


def test_tokenizer_channels_last_equals_convolutions():
    from pointmap.layers.tokenizer import MiniPointNet

    tok = MiniPointNet(32)
    x = torch.randn(2, 5, 8, 3)
    for train in (True, False):
        tok.train(train)
        outs, grads, stats = [], [], []
        for fast in (True, False):
            t = copy.deepcopy(tok)
            t.channels_last = fast
            y = t(x)
            y.square().sum().backward()
            outs.append(y)
            grads.append(t.first_conv[0].weight.grad)
            stats.append(t.second_conv[1].running_mean)
        assert torch.allclose(outs[0], outs[1], atol=1e-5)
        assert torch.allclose(grads[0], grads[1], atol=1e-4)
        assert torch.allclose(stats[0], stats[1], atol=1e-6)
