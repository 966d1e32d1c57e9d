"""decoder_row_order: ``aligned`` (the default, rows follow the encoder's scan) vs ``shuffled`` (the decoder
sees its sequence in a random permutation per sample, outputs put back in sequence order)."""
import os

import pytest
import torch

import pointmap
from pointmap.config import load_config

TINY = dict(embed_dim=32, num_heads=2, num_group=16, group_size=8, layout="MT", drop_path_rate=0.0)
DEC = dict(decoder_heads=2, decoder_depth=2, decoder_drop_path_rate=0.0)
CFGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cfgs")


def tiny(**kw):
    torch.manual_seed(0)
    return pointmap.create_pretrainer("hybridnet_s", **{**DEC, **TINY, **kw}).eval()


def test_default_is_aligned_and_unchanged():
    pre = tiny()
    assert pre.decoder_row_order == "aligned"
    x, pos = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    assert torch.equal(pre._decode(x, pos, None), pre.decoder(x, pos, pre.decoder_mask()))


@pytest.mark.parametrize("order", ["inplace", "concat"])
def test_shuffled_is_the_decoder_on_a_permutation(order):
    pre = tiny(decoder_row_order="shuffled", decoder_order=order)
    x, pos = torch.randn(3, 16, 32), torch.randn(3, 16, 32)
    perm = torch.rand(3, 16, generator=torch.Generator().manual_seed(5)).argsort(dim=1)
    rows = torch.arange(3).unsqueeze(1)
    expected = torch.empty_like(x)
    expected[rows, perm] = pre.decoder(x[rows, perm], pos[rows, perm], pre.decoder_mask())
    got = pre._decode(x, pos, torch.Generator().manual_seed(5))
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, pre._decode(x, pos, None), atol=1e-4)  # a different order, another result


def test_shuffled_changes_nothing_for_full_attention():
    """MAE attends everywhere, so a permuted sequence (positions travel with tokens) gives the same loss:
    the outputs are put back where they belong."""
    pts = torch.randn(2, 256, 3)
    a = tiny(objective="mae")(pts, generator=torch.Generator().manual_seed(1))
    b = tiny(objective="mae", decoder_row_order="shuffled")(pts, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.mask, b.mask)
    assert torch.allclose(a.loss, b.loss, atol=1e-5) and torch.allclose(a.pred, b.pred, atol=1e-5)
    m = tiny(objective="map", decoder_row_order="shuffled")(pts, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(m.loss, tiny(objective="map")(pts, generator=torch.Generator().manual_seed(1)).loss)


def test_shuffled_trains_every_parameter():
    pre = tiny(decoder_row_order="shuffled").train()
    pre(torch.randn(2, 256, 3)).loss.backward()
    assert [n for n, p in pre.named_parameters() if p.grad is None] == []


def test_bad_value_and_config_route():
    with pytest.raises(ValueError, match="decoder_row_order must be 'aligned' or 'shuffled'"):
        tiny(decoder_row_order="random")
    from pointmap.engine import build_task

    cfg = load_config(os.path.join(CFGS, "map_demo.yaml"), ["objective.decoder_row_order=shuffled"])
    task = build_task(cfg)
    assert task.build_model({}).decoder_row_order == "shuffled"
