import pytest
import torch

from pointmap.ops import selective_scan, selective_scan_ref
from pointmap.ops.testing import scan_inputs

NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]


def run(fn, t, softplus=True, use=("D", "z", "delta_bias"), **kw):
    extra = {k: t[k] for k in use}
    return fn(t["u"], t["delta"], t["A"], t["B"], t["C"], delta_softplus=softplus, **extra, **kw)


def grads(t, out, seed=0):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    for v in t.values():
        v.grad = None
    (out * g).sum().backward()
    return {k: v.grad.clone() for k, v in t.items() if v.grad is not None}


@pytest.mark.parametrize("bc", ["variable", "constant", "grouped"])
@pytest.mark.parametrize("Bsz,D,L,N", [(1, 4, 1, 2), (2, 8, 17, 4), (2, 6, 64, 16), (1, 4, 130, 3)])
@pytest.mark.parametrize("softplus", [True, False])
def test_torch_matches_reference_float32(bc, Bsz, D, L, N, softplus):
    t = scan_inputs(Bsz, D, L, N, bc=bc, seed=L)
    if not softplus:  # keep the deltas positive, as a Mamba layer makes them
        t["delta"] = t["delta"].detach().abs().requires_grad_()
    ref = run(selective_scan_ref, t, softplus)
    g_ref = grads(t, ref)
    out = run(lambda *a, **k: selective_scan(*a, backend="torch", **k), t, softplus)
    g = grads(t, out)
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4)
    assert g.keys() == g_ref.keys() == set(NAMES)
    for k in NAMES:
        scale = g_ref[k].abs().max().clamp_min(1.0)
        assert (g[k] - g_ref[k]).abs().max() <= 1e-4 * scale, k


@pytest.mark.parametrize("use", [(), ("D",), ("z",), ("delta_bias",)])
def test_optional_arguments(use):
    t = scan_inputs(2, 4, 9, 3, seed=1)
    out = run(lambda *a, **k: selective_scan(*a, backend="torch", **k), t, use=use)
    assert torch.allclose(out, run(selective_scan_ref, t, use=use), atol=1e-5)


def test_last_state():
    t = scan_inputs(2, 4, 9, 3, requires_grad=False)
    out, last = run(lambda *a, **k: selective_scan(*a, backend="torch", **k), t, return_last_state=True)
    out_r, last_r = run(selective_scan_ref, t, return_last_state=True)
    assert last.shape == (2, 4, 3) and torch.allclose(last, last_r, atol=1e-5)
    assert torch.allclose(out, out_r, atol=1e-5)


@pytest.mark.parametrize("bc", ["variable", "constant", "grouped"])
def test_gradcheck_float64(bc):
    t = scan_inputs(2, 4, 7, 3, dtype=torch.float64, bc=bc, seed=2)
    keys = list(t)

    def f(*vals):
        kw = dict(zip(keys, vals))
        return selective_scan(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], kw["D"], kw["z"],
                              kw["delta_bias"], delta_softplus=True, backend="torch")

    assert torch.autograd.gradcheck(f, tuple(t[k] for k in keys))


def test_reference_gradcheck_float64():
    t = scan_inputs(1, 2, 5, 2, dtype=torch.float64, seed=3)
    keys = list(t)

    def f(*vals):
        kw = dict(zip(keys, vals))
        return selective_scan_ref(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], kw["D"], kw["z"],
                                  kw["delta_bias"], delta_softplus=True)

    assert torch.autograd.gradcheck(f, tuple(t[k] for k in keys))


def test_dtype_follows_input():
    t = scan_inputs(1, 4, 8, 2, requires_grad=False)
    out = selective_scan(t["u"].bfloat16(), t["delta"].bfloat16(), t["A"], t["B"], t["C"], delta_softplus=True)
    assert out.dtype == torch.bfloat16


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch", "mamba_ssm"])
def test_gpu_backends_match_reference(backend):
    from pointmap.ops import available_backends
    if backend not in available_backends("selective_scan"):
        pytest.skip(f"{backend} not available")
    t = scan_inputs(4, 64, 64, 16, seed=4)
    ref = run(selective_scan_ref, t)
    g_ref = grads(t, ref)
    tc = {k: v.detach().cuda().requires_grad_() for k, v in t.items()}
    out = run(lambda *a, **k: selective_scan(*a, backend=backend, **k), tc)
    g = grads(tc, out)
    assert torch.allclose(out.cpu(), ref, atol=1e-3, rtol=1e-3)
    for k in NAMES:
        scale = g_ref[k].abs().max().clamp_min(1.0)
        assert (g[k].cpu() - g_ref[k]).abs().max() <= 2e-3 * scale, k
