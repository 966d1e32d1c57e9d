"""Local-MAE, the mask strategies, and what each decoder query can see under decoder_order="concat"
(checked by perturbation)."""
import pytest
import torch

import pointmap
from pointmap.models.pretrainer import make_mask

KICK = torch.linspace(-1.0, 1.0, 32)  # a perturbation LayerNorm does not erase (a constant shift it would)
TINY = dict(embed_dim=32, num_heads=2, num_group=16, group_size=8, layout="MT", drop_path_rate=0.0)
DEC = dict(decoder_heads=2, decoder_depth=2, decoder_drop_path_rate=0.0)


def tiny(**kw):
    return pointmap.create_pretrainer("hybridnet_s", **{**DEC, **TINY, **kw}).eval()


def changed_outputs(pre, j, length=16):
    """Decoder outputs (B=1, L) that move when the decoder input at position j is perturbed."""
    g = torch.Generator().manual_seed(0)
    x, pos = torch.randn(1, length, 32, generator=g), torch.randn(1, length, 32, generator=g)
    with torch.no_grad():
        base = pre._decode(x, pos, None)
        x2 = x.clone()
        x2[0, j] += KICK
        moved = (pre._decode(x2, pos, None) - base).abs().amax(-1)[0]
    return set((moved > 1e-6).nonzero().flatten().tolist())


@pytest.mark.parametrize("j", [0, 5, 10, 15])
def test_local_mae_attends_inside_its_row_only(j):
    pre = tiny(objective="local_mae")                                   # G=16: rows of 4
    assert pre.row_size == 4
    assert changed_outputs(pre, j) == {i for i in range(16) if i // 4 == j // 4}
    causal = tiny(objective="map")
    assert changed_outputs(causal, j) == {i for i in range(16) if i // 4 >= j // 4}


def test_local_mae_trains():
    pre = tiny(objective="local_mae").train()
    out = pre(torch.randn(2, 128, 3), generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and pre.mask_token.grad is not None


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.6, 0.75])
@pytest.mark.parametrize("strategy", ["random", "sequential", "diagonal"])
def test_mask_strategies_exact_counts(strategy, ratio):
    mask = make_mask(strategy, 6, 64, ratio, 8, torch.Generator().manual_seed(1))
    assert mask.shape == (6, 64) and (mask.sum(1) == int(ratio * 64)).all()
    again = make_mask(strategy, 6, 64, ratio, 8, torch.Generator().manual_seed(1))
    assert torch.equal(mask, again)


def test_random_strategy_is_the_former_random_mask():
    g = torch.Generator().manual_seed(5)
    idx = torch.rand(4, 16, generator=g).argsort(dim=1)[:, :8]
    expected = torch.zeros(4, 16, dtype=torch.bool).scatter_(1, idx, True)
    assert torch.equal(make_mask("random", 4, 16, 0.5, 4, torch.Generator().manual_seed(5)), expected)


def test_sequential_is_one_cyclic_run():
    mask = make_mask("sequential", 20, 64, 0.5, 8, torch.Generator().manual_seed(2))
    starts = set()
    for row in mask:
        on = row.nonzero().flatten().tolist()
        start = next(i for i in on if not row[(i - 1) % 64])           # the one masked token after a visible one
        assert sorted(on) == sorted((start + k) % 64 for k in range(32))
        starts.add(start)
    assert len(starts) > 1                                              # the start is drawn per sample


def test_diagonal_masks_whole_diagonals():
    mask = make_mask("diagonal", 20, 64, 0.5, 8, torch.Generator().manual_seed(3)).reshape(20, 8, 8)
    assert (mask.sum(1) == 4).all() and (mask.sum(2) == 4).all()     # 4 per column and per row
    r, c = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    shifts = set()
    for m in mask:
        s = next(s for s in range(8) if torch.equal(m, (c - r + s) % 8 < 4))
        shifts.add(s)
    assert len(shifts) > 1
    odd = make_mask("diagonal", 1, 64, 0.6, 8, torch.Generator().manual_seed(0)).reshape(8, 8)
    assert odd.sum() == 38 and set(odd.sum(1).tolist()) <= {4, 5}


def test_pretrainer_uses_the_strategy():
    pre = tiny(mask_strategy="sequential", mask_ratio=0.5)
    out = pre(torch.randn(3, 128, 3), generator=torch.Generator().manual_seed(4))
    assert torch.equal(out.mask, make_mask("sequential", 3, 16, 0.5, 4, torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError, match="mask_strategy must be one of"):
        tiny(mask_strategy="checkerboard")


def test_concat_decoder_every_masked_query_sees_every_visible_token():
    """decoder_order="concat" decodes [visible; masked] cut into rows of √G: a masked query sees all
    visible tokens, and among the masked ones those of its own and earlier rows of that sequence."""
    pre = tiny(decoder_order="concat", mask_ratio=0.5)
    pts = torch.randn(1, 128, 3)
    delta = {}

    def perturb_encoder(module, args, out):                            # the encoder's visible outputs
        if "visible" in delta:
            out.tokens = out.tokens.clone()
            out.tokens[0, delta["visible"]] += KICK
        return out

    def perturb_pos(module, args, out):                                 # a masked token's decoder position
        if "masked" in delta:
            out = out.clone()
            out[0, delta["masked"]] += KICK
        return out

    enc_encode = pre.encoder.encode

    def encode(*a, **k):
        return perturb_encoder(None, None, enc_encode(*a, **k))

    pre.encoder.encode = encode
    pre.decoder_pos_embed.register_forward_hook(perturb_pos)

    def run():
        with torch.no_grad():
            return pre(pts, generator=torch.Generator().manual_seed(0)).pred.reshape(8, -1)

    base = run()
    mask = pre(pts, generator=torch.Generator().manual_seed(0)).mask[0]
    for v in range(8):                                                  # each visible token: every query moves
        delta.clear()
        delta["visible"] = v
        assert ((run() - base).abs().amax(-1) > 1e-6).all()
    masked_positions = mask.nonzero().flatten().tolist()               # sequence positions, ascending
    for q, seq_pos in enumerate(masked_positions):                      # q-th masked token sits at 8 + q
        delta.clear()
        delta["masked"] = seq_pos
        moved = set(((run() - base).abs().amax(-1) > 1e-6).nonzero().flatten().tolist())
        assert moved == {p for p in range(8) if (8 + p) // 4 >= (8 + q) // 4}
