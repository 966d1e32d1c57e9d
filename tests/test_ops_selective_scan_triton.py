"""The Triton selective scan (forward + backward) against the float64 reference.

On the CPU the kernels run under Triton's interpreter, in a subprocess started with TRITON_INTERPRET=1:
Triton reads that variable when a kernel is decorated, so setting it in this process could leave other
tests' kernels interpreted (or these compiled). Every case of ``tests/_triton_scan_cases.py`` runs in one
subprocess; each is then its own test. On CUDA the same cases run compiled (marker ``gpu``).
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from pointmap.ops import available_backends, selective_scan, selective_scan_ref
from tests import _triton_scan_cases as cases
from pointmap.ops.testing import scan_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

# largest error / max(1, |reference|): float64 runs agree to rounding; float32 ones to float32 rounding
# over a recurrence of L steps; bf16 inputs are exact in float32, and the output is bf16, so it may be
# off by twice the rounding of the reference to bf16 plus a small atol (STYLE's mamba-ssm rule).
TOL = {"float64": 1e-12, "float32": 1e-5, "bfloat16": 1e-5}


def check(case, res):
    dtype = cases.CASES[case][4]
    out_tol = 2 * res["rounding"] + 1e-3 if dtype == "bfloat16" else TOL[dtype]
    assert res["dtypes_ok"], res
    assert res["out"] <= out_tol, res
    assert res["last_state"] <= TOL[dtype], res
    assert set(res["grads"]) == {k for k in cases.NAMES if k in cases.inputs(case)[0]}
    for k, e in res["grads"].items():
        # a bf16 gradient is rounded once more, to its input's dtype
        tol = 2 * 2 ** -8 if dtype == "bfloat16" and k in cases.LOW else TOL[dtype]
        assert e <= tol, (k, res)


@pytest.fixture(scope="module")
def interpreted():
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "tests._triton_scan_cases"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


@needs_triton
@pytest.mark.slow
@pytest.mark.parametrize("case", list(cases.CASES))
def test_triton_interpreted_matches_reference(case, interpreted):
    check(case, interpreted[case])


@needs_triton
@pytest.mark.slow
def test_triton_interpreted_passes_its_first_use_check(interpreted):
    assert interpreted["selfcheck"] is None


def test_triton_backend_is_registered_and_refuses_cpu_tensors():
    t = scan_inputs(1, 4, 5, 2, requires_grad=False)
    with pytest.raises(RuntimeError, match="triton"):
        selective_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], backend="triton")
    if not torch.cuda.is_available():
        assert "triton" not in available_backends("selective_scan")


@pytest.mark.gpu
@needs_triton
@pytest.mark.parametrize("case", list(cases.CASES))
def test_triton_gpu_matches_reference(case):
    check(case, cases.run_case(case, device="cuda"))


@pytest.mark.gpu
@needs_triton
def test_triton_gpu_passes_its_first_use_check():
    assert cases.selfcheck_verdict("cuda") is None


@pytest.mark.gpu
@needs_triton
def test_triton_gpu_through_the_dispatcher(monkeypatch):
    assert "triton" in available_backends("selective_scan")
    t = scan_inputs(4, 64, 50, 16, seed=4)
    tc = {k: v.detach().cuda().requires_grad_() for k, v in t.items()}
    kw = dict(delta_softplus=True)
    ref = selective_scan_ref(*[t[k] for k in cases.NAMES], **kw)
    out = selective_scan(*[tc[k] for k in cases.NAMES], backend="triton", **kw)
    assert torch.allclose(out.cpu(), ref, atol=1e-4, rtol=1e-4)
    monkeypatch.setenv("POINTMAP_SELECTIVE_SCAN_BACKEND", "triton")
    assert torch.equal(selective_scan(*[tc[k] for k in cases.NAMES], **kw), out)
    monkeypatch.delenv("POINTMAP_SELECTIVE_SCAN_BACKEND")
    if "mamba_ssm" not in available_backends("selective_scan"):  # auto picks Triton without mamba-ssm
        assert torch.equal(selective_scan(*[tc[k] for k in cases.NAMES], **kw), out)
