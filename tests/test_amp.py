"""bf16 autocast on the CPU: the code path CUDA training takes (Mamba mixer, selective scan, attention,
grouping, Chamfer, decoder, heads), and every custom op fed bf16 inputs or run under autocast.

Tolerances, stated once: under bf16 autocast a training step's loss is within 2% (relative) of the
float32 step's with the same weights, data and masks, and the gradient (all parameters as one vector)
points the same way: cosine similarity >= 0.99 for pretraining (measured 0.9999 for the three presets),
>= 0.9 for finetuning (measured 0.94-0.99: the BatchNorm head over a batch of 8 tiny-model features
amplifies bf16 rounding; the loss there agrees to 0.3%).
"""
import copy

import pytest
import torch
import torch.nn.functional as F

import pointmap
from pointmap.data.synthetic import SyntheticShapes
from pointmap.ops import chamfer, chamfer_ref, fps, fps_ref, group, group_ref, knn, knn_ref, selective_scan, selective_scan_ref
from pointmap.ops.testing import random_cloud, scan_inputs

TINY = dict(embed_dim=32, num_heads=2, num_group=16, group_size=8, drop_path_rate=0.0)
DEC = dict(decoder_heads=2, decoder_depth=2, decoder_drop_path_rate=0.0)
LAYOUTS = {"hybridnet_s": "MT", "pointmamba": "MM", "map3d_official": "MT"}
LOSS_RTOL = 2e-2
GRAD_COS = {"pretrain": 0.99, "finetune": 0.9}


def amp(enabled=True):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


@pytest.fixture(scope="module")
def clouds():
    ds = SyntheticShapes("train", size=8, num_points=256, seed=0)
    samples = [ds[i] for i in range(8)]
    return torch.stack([s["points"][:, :3] for s in samples]).float(), torch.tensor([int(s["label"]) for s in samples])


def train_step(model, points, labels, bf16):
    """One step's loss and gradients; pretraining when ``labels`` is None, else classification."""
    torch.manual_seed(1)
    model.zero_grad(set_to_none=True)
    with amp(bf16):
        if labels is None:
            loss = model(points, generator=torch.Generator().manual_seed(1)).loss
        else:
            loss = F.cross_entropy(model(points), labels)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("task", ["pretrain", "finetune"])
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_bf16_autocast_step_matches_float32(name, task, clouds):
    points, labels = clouds
    torch.manual_seed(0)
    if task == "pretrain":
        model, labels = pointmap.create_pretrainer(name, layout=LAYOUTS[name], **DEC, **TINY), None
    else:
        model = pointmap.create_model(name, num_classes=int(labels.max()) + 1, layout=LAYOUTS[name],
                                      head_dropout=0.0, **TINY)
    loss32, g32 = train_step(copy.deepcopy(model), points, labels, bf16=False)
    loss16, g16 = train_step(copy.deepcopy(model), points, labels, bf16=True)
    assert loss16.dtype == torch.float32 and torch.isfinite(loss16)
    assert g16.keys() == g32.keys() == {n for n, _ in model.named_parameters()}
    assert all(torch.isfinite(g).all() and g.dtype == torch.float32 for g in g16.values())
    assert abs(loss16 - loss32) <= LOSS_RTOL * abs(loss32), (loss16.item(), loss32.item())
    flat32 = torch.cat([g32[k].flatten() for k in g32])
    flat16 = torch.cat([g16[k].flatten() for k in g32])
    cos = F.cosine_similarity(flat16, flat32, dim=0).item()
    assert cos >= GRAD_COS[task], cos


# The ops: bf16 inputs are accepted (computed in float32 on purpose where rounding would change the
# answer), and autocast around an op changes nothing.

def test_fps_bf16_input_gives_the_indices_of_its_float32_values():
    x = random_cloud(2, 300).bfloat16()
    assert torch.equal(fps(x, 32), fps_ref(x.float(), 32))
    with amp():
        assert torch.equal(fps(x.float(), 32), fps_ref(x.float(), 32))


def test_knn_bf16_input_is_exact_in_float32():
    q, p = random_cloud(2, 40, seed=1).bfloat16(), random_cloud(2, 500, seed=2).bfloat16()
    d, i = knn(q, p, 16)
    d_ref, i_ref = knn_ref(q.float(), p.float(), 16)
    assert d.dtype == torch.float32 and torch.equal(i, i_ref) and torch.equal(d, d_ref)


def test_knn_and_group_unchanged_under_autocast():
    q, p = random_cloud(2, 40, seed=1), random_cloud(2, 500, seed=2)
    d_ref, i_ref = knn(q, p, 16)
    nb_ref, c_ref = group_ref(p, 16, 8)
    with amp():
        d, i = knn(q, p, 16)
        nb, c = group(p, 16, 8)
    assert torch.equal(i, i_ref) and torch.equal(d, d_ref)
    assert torch.equal(nb, nb_ref) and torch.equal(c, c_ref)


def test_group_accepts_bf16():
    x = random_cloud(2, 300).bfloat16()
    nb, c = group(x, 16, 8)
    nb_ref, c_ref = group_ref(x.float(), 16, 8)
    assert nb.dtype == c.dtype == torch.bfloat16
    assert torch.equal(c.float(), c_ref) and torch.allclose(nb.float(), nb_ref, atol=1e-2)


@pytest.mark.parametrize("norm", [1, 2])
def test_chamfer_float32_under_autocast_and_for_bf16(norm):
    a, b = random_cloud(64, 32, seed=3).requires_grad_(), random_cloud(64, 32, seed=4)
    ref = chamfer_ref(a, b, norm=norm)
    with amp():  # a bf16 matmul would pick other nearest points
        out = chamfer(a, b, norm=norm)
    assert out.dtype == torch.float32 and torch.allclose(out, ref, rtol=1e-6, atol=0)
    out16 = chamfer(a.detach().bfloat16(), b.bfloat16(), norm=norm)
    assert out16.dtype == torch.float32
    assert torch.allclose(out16, chamfer_ref(a.detach().bfloat16().float(), b.bfloat16().float(), norm=norm), rtol=1e-6)


ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def test_selective_scan_bf16_within_twice_plain_rounding():
    """STYLE's rule: off from the float32 reference by at most twice what bf16 rounding of that reference
    is off, plus a small atol; the gradients come back in the inputs' dtypes."""
    t = scan_inputs(2, 8, 33, 4, requires_grad=False)
    ref = selective_scan_ref(*[t[k] for k in ARGS], delta_softplus=True)
    low = {k: (v.bfloat16() if k in ("u", "delta", "B", "C", "z") else v).requires_grad_() for k, v in t.items()}
    out = selective_scan(*[low[k] for k in ARGS], delta_softplus=True)
    ref_low = selective_scan_ref(*[low[k].detach().float() for k in ARGS], delta_softplus=True)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref_low).abs().max() <= 2 * (ref_low.bfloat16().float() - ref_low).abs().max() + 1e-3
    out.float().sum().backward()
    assert all(low[k].grad.dtype == low[k].dtype and torch.isfinite(low[k].grad).all() for k in ARGS)
    with amp():
        out_amp = selective_scan(*[t[k] for k in ARGS], delta_softplus=True)
    assert out_amp.dtype == torch.float32 and torch.allclose(out_amp, ref, atol=1e-5)
