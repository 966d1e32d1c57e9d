"""The MAP pretrainer: masks, row-causal decoder, MAE/AR special cases, errors, overfitting, images."""
import pytest
import torch

import pointmap
from pointmap.models import MAPPretrainer, PretrainOutput, random_mask, row_attention_mask
from pointmap.ops import chamfer
from pointmap.ops.chamfer import chamfer_ref

TINY = dict(embed_dim=32, num_heads=2, num_group=16, group_size=8, layout="MT", drop_path_rate=0.0)
DEC = dict(decoder_heads=2, decoder_depth=2, decoder_drop_path_rate=0.0)


def tiny_pretrainer(**kw):
    return pointmap.create_pretrainer("hybridnet_s", **{**DEC, **TINY, **kw})


def test_random_mask_counts_generator_and_device():
    for ratio in (0.5, 0.6, 0.75):
        mask = random_mask(5, 64, ratio, torch.Generator().manual_seed(0))
        assert mask.dtype == torch.bool and mask.shape == (5, 64)
        assert (mask.sum(dim=1) == int(ratio * 64)).all()
    a = random_mask(3, 16, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, random_mask(3, 16, 0.5, torch.Generator().manual_seed(3)))
    assert not torch.equal(a[0], a[1])  # per sample


def test_forward_output_fields():
    pre = tiny_pretrainer(mask_ratio=0.6)
    pts = torch.randn(2, 256, 3)
    out = pre(pts, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, PretrainOutput) and out.loss.dim() == 0
    m = int(0.6 * 16)
    assert out.pred.shape == out.target.shape == (2, m, 8, 3)
    assert out.mask.shape == (2, 16) and (out.mask.sum(1) == m).all()
    assert out.centers.shape == (2, 16, 3) and out.patches.shape == (2, 16, 8, 3)
    assert torch.allclose(out.target, out.patches[out.mask].reshape(2, m, 8, 3))
    # absolute coordinates: every ground-truth patch point is a point of the input cloud
    d = torch.cdist(out.patches.reshape(2, -1, 3), pts, compute_mode="donot_use_mm_for_euclid_dist").amin(dim=-1)
    assert d.max() < 1e-5
    # the loss is the Chamfer distance of what is returned, relative or absolute alike
    assert torch.allclose(out.loss, chamfer(out.pred.reshape(-1, 8, 3), out.target.reshape(-1, 8, 3)), atol=1e-6)
    out.loss.backward()
    assert [n for n, p in pre.named_parameters() if p.grad is None] == []   # DDP-safe: nothing unused


@pytest.mark.parametrize("loss", ["cdl2", "cdl1"])
def test_patch_losses_average_to_the_loss(loss):
    pre = tiny_pretrainer(mask_ratio=0.5, loss=loss)
    out = pre(torch.randn(3, 256, 3), generator=torch.Generator().manual_seed(1))
    per = pre.patch_losses(out)
    assert per.shape == (3, 8) and (per > 0).all()
    assert torch.allclose(per.mean(), out.loss, rtol=1e-5)
    one = chamfer(out.pred[1, 2:3], out.target[1, 2:3], norm=2 if loss == "cdl2" else 1)
    assert torch.allclose(per[1, 2], one, rtol=1e-5)


@pytest.mark.parametrize("loss", ["cdl2", "cdl1", "mse"])
def test_a_float64_loss_is_the_float64_reference(loss):
    """A float64 model's loss is computed in float64 (not cast down to float32 on the way)."""
    if loss == "mse":
        pre = pointmap.create_pretrainer("hybridnet_image_s", embed_dim=32, num_heads=2, img_size=32, patch_size=8,
                                         layout="MT", **DEC)
        x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    else:
        pre, x = tiny_pretrainer(loss=loss), torch.randn(2, 256, 3, dtype=torch.float64)
    out = pre.double()(x, generator=torch.Generator().manual_seed(0))
    if loss == "mse":
        ref = (out.pred - out.target).pow(2).mean()
    else:
        ref = chamfer_ref(out.pred.reshape(-1, 8, 3), out.target.reshape(-1, 8, 3), norm=2 if loss == "cdl2" else 1)
    assert out.loss.dtype == ref.dtype == torch.float64
    assert abs(out.loss.item() - ref.item()) <= 1e-12 * ref.item()
    assert pre.patch_losses(out).dtype == torch.float64


def test_row_attention_mask():
    """Rows of 2 tokens: bidirectional inside a row, each row also sees the rows before it (written out)."""
    assert row_attention_mask(6, 2).tolist() == [[1, 1, 0, 0, 0, 0],
                                                 [1, 1, 0, 0, 0, 0],
                                                 [1, 1, 1, 1, 0, 0],
                                                 [1, 1, 1, 1, 0, 0],
                                                 [1, 1, 1, 1, 1, 1],
                                                 [1, 1, 1, 1, 1, 1]]
    assert row_attention_mask(5, 2).tolist() == [[1, 1, 0, 0, 0],  # a short last row
                                                 [1, 1, 0, 0, 0],
                                                 [1, 1, 1, 1, 0],
                                                 [1, 1, 1, 1, 0],
                                                 [1, 1, 1, 1, 1]]
    assert row_attention_mask(3, 1).tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]  # plain autoregression
    assert row_attention_mask(6, 3, local=True).tolist() == [[1, 1, 1, 0, 0, 0],
                                                             [1, 1, 1, 0, 0, 0],
                                                             [1, 1, 1, 0, 0, 0],
                                                             [0, 0, 0, 1, 1, 1],
                                                             [0, 0, 0, 1, 1, 1],
                                                             [0, 0, 0, 1, 1, 1]]
    assert row_attention_mask(6, 2).dtype == torch.bool
    assert row_attention_mask(6, 6) is None and row_attention_mask(6, 8) is None


@pytest.mark.parametrize("objective,causal", [("map", True), ("ar", True), ("mae", False)])
def test_decoder_causal_across_rows(objective, causal):
    pre = tiny_pretrainer(objective=objective).eval()
    g, r = 16, pre.row_size
    x, pos = torch.randn(2, g, 32), torch.randn(2, g, 32)
    k = 1                                                   # rows 0..k kept, rows k+1.. perturbed
    cut = (k + 1) * r if objective != "mae" else 8
    x2 = x.clone()
    x2[:, cut:] += torch.randn_like(x2[:, cut:])
    y = pre.decoder(x, pos, pre.decoder_mask())
    y2 = pre.decoder(x2, pos, pre.decoder_mask())
    assert torch.allclose(y[:, :cut], y2[:, :cut], atol=1e-6) == causal
    assert not torch.allclose(y[:, cut:], y2[:, cut:])


def test_row_sizes_of_objectives():
    assert tiny_pretrainer().row_size == 4                      # √16
    assert tiny_pretrainer(row_size=8).row_size == 8
    assert tiny_pretrainer(objective="mae").row_size == 16
    assert tiny_pretrainer(objective="ar").row_size == 1


@pytest.mark.parametrize("objective,row_size", [("mae", 16), ("ar", 1)])
def test_mae_and_ar_are_map_with_row_size(objective, row_size):
    pts = torch.randn(2, 256, 3)
    torch.manual_seed(5)
    a = tiny_pretrainer(objective=objective)
    torch.manual_seed(5)
    b = tiny_pretrainer(objective="map", row_size=row_size)
    oa = a(pts, generator=torch.Generator().manual_seed(1))
    ob = b(pts, generator=torch.Generator().manual_seed(1))
    assert torch.equal(oa.loss, ob.loss) and torch.equal(oa.pred, ob.pred)


def test_concat_decoder_order_runs():
    pre = tiny_pretrainer(decoder_order="concat", mask_ratio=0.6)
    out = pre(torch.randn(2, 256, 3))
    assert out.pred.shape == (2, 9, 8, 3)
    out.loss.backward()


def test_bad_row_sizes_name_both_numbers():
    with pytest.raises(ValueError, match=r"G=16 .*row_size=3"):
        tiny_pretrainer(row_size=3)
    with pytest.raises(ValueError, match=r"concat.*\b24\b.*not a perfect square"):
        tiny_pretrainer(decoder_order="concat", num_group=24)
    with pytest.raises(ValueError, match="not a perfect square"):
        tiny_pretrainer(num_group=24)
    assert tiny_pretrainer(num_group=24, row_size=6).row_size == 6
    with pytest.raises(ValueError, match="objective"):
        tiny_pretrainer(objective="bert")


def test_pretrainer_wants_an_encoder():
    with pytest.raises(TypeError, match="encoder"):
        MAPPretrainer(pointmap.create_model("hybridnet_s", num_classes=3, **TINY))


def test_overfitting_four_clouds_halves_the_loss():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(4, 256, 3, generator=g)
    pts = pts / pts.norm(dim=-1, keepdim=True) * torch.tensor([1.0, 0.6, 0.3]) * (0.5 + torch.rand(4, 1, 1, generator=g))
    pre = tiny_pretrainer(embed_dim=64)
    opt = torch.optim.AdamW(pre.parameters(), lr=1e-3)
    losses = []
    for _ in range(50):
        out = pre(pts, generator=torch.Generator().manual_seed(7))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    trivial = chamfer(torch.zeros_like(out.target).reshape(-1, 8, 3) + 0.0,
                      (out.target - out.target.mean(dim=2, keepdim=True)).reshape(-1, 8, 3)).item()
    assert min(losses[-3:]) <= 0.5 * losses[0]
    assert min(losses[-3:]) < trivial          # better than putting every point at the patch center


def test_image_pretrainer_forward_backward():
    pre = pointmap.create_pretrainer("hybridnet_image_s", embed_dim=32, num_heads=2, img_size=32, patch_size=8,
                                     layout="MT", mask_ratio=0.75, **DEC)
    assert pre.row_size == 4 and pre.loss_name == "mse"    # image rows of a 4×4 grid
    img = torch.randn(2, 3, 32, 32)
    out = pre(img, generator=torch.Generator().manual_seed(0))
    assert out.pred.shape == out.target.shape == (2, 12, 8 * 8 * 3)
    assert torch.allclose(out.target.mean(-1), torch.zeros(2, 12), atol=1e-5)   # per-patch normalized
    assert torch.allclose(pre.patch_losses(out).mean(), out.loss, rtol=1e-5)
    out.loss.backward()
    assert all(p.grad is not None for n, p in pre.named_parameters() if n.startswith("encoder.blocks"))
    with pytest.raises(ValueError, match="does not fit"):
        pointmap.create_pretrainer("hybridnet_image_s", loss="cdl2", embed_dim=32, num_heads=2, img_size=32,
                                   patch_size=8, layout="M", decoder_heads=2)


def test_map3d_official_pretrains_concat():
    pre = pointmap.create_pretrainer("map3d_official", decoder_order="concat", mask_ratio=0.6,
                                     embed_dim=32, num_heads=2, num_group=16, group_size=8, layout="MT", **DEC)
    out = pre(torch.randn(2, 256, 3))
    out.loss.backward()
    assert out.pred.shape == (2, 9, 8, 3)
