"""The Triton selective scan against the reference, case by case: shared by the interpreter tests (run
as ``TRITON_INTERPRET=1 python -m tests._triton_scan_cases``, which prints one JSON object) and by the
GPU tests (called in-process on CUDA tensors).

Each case compares the output, the last state and the gradient of every input (u, delta, A, B, C, D,
z, delta_bias) with ``selective_scan_ref`` computed in float64 on the CPU, and returns the largest
error of each, divided by max(1, largest magnitude of the reference value).
"""
import json
import sys
import time

import torch

from pointmap.ops import selective_scan_ref
from pointmap.ops.testing import scan_inputs

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")

# name: (batch, channels, L, N, dtype of u/delta/B/C/z, B/C layout, softplus, optional args, block_d)
CASES = {
    "f64-variable-L13-blocks": (2, 6, 13, 3, "float64", "variable", True, ("D", "z", "delta_bias"), 4),
    "f64-constant-L7-nosoftplus": (1, 4, 7, 2, "float64", "constant", False, ("D", "z", "delta_bias"), None),
    "f64-grouped-L17-blocks": (1, 8, 17, 4, "float64", "grouped", True, ("D", "z", "delta_bias"), 2),
    "f64-mixed-B-grouped-C-variable": (2, 8, 9, 4, "float64", "mixed", True, ("D", "z", "delta_bias"), 2),
    "f64-no-optional-args": (2, 4, 5, 3, "float64", "variable", True, (), None),
    "f32-variable-L33-N16": (2, 8, 33, 16, "float32", "variable", True, ("D", "z", "delta_bias"), None),
    "f32-grouped-L64": (1, 4, 64, 4, "float32", "grouped", True, ("D", "z", "delta_bias"), None),
    "bf16-variable-L20": (2, 8, 20, 4, "bfloat16", "variable", True, ("D", "z", "delta_bias"), None),
}
LOW = ("u", "delta", "B", "C", "z")  # what a Mamba layer passes in its activation dtype


def inputs(case):
    Bsz, D, L, N, dtype, bc, softplus, use, _ = CASES[case]
    t = scan_inputs(Bsz, D, L, N, dtype=torch.float64, bc="grouped" if bc == "mixed" else bc, seed=L,
                    requires_grad=False)
    if bc == "mixed":
        t["C"] = scan_inputs(Bsz, D, L, N, dtype=torch.float64, bc="variable", seed=L + 1, requires_grad=False)["C"]
    if not softplus:  # keep the deltas positive, as a Mamba layer makes them
        t["delta"] = t["delta"].abs()
    dt = getattr(torch, dtype)
    for k in LOW:  # rounded once, so the reference sees the same values
        t[k] = t[k].to(dt).double()
    keep = {"u", "delta", "A", "B", "C"} | set(use)
    return {k: v for k, v in t.items() if k in keep}, dt, softplus


def run_case(case, device="cpu"):
    from pointmap.ops.selective_scan_triton import selective_scan_triton

    start = time.perf_counter()
    t, dt, softplus = inputs(case)
    block_d = CASES[case][-1]
    # the incoming gradient as the output's dtype carries it, so the reference sees the same values
    g = torch.randn(t["u"].shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(dt).double()
    ref_in = {k: v.clone().requires_grad_() for k, v in t.items()}
    ref, ref_last = selective_scan_ref(**ref_in, delta_softplus=softplus, return_last_state=True)
    (ref * g).sum().backward()
    tri_in = {k: (v.to(dt) if k in LOW else v.to(torch.float32 if dt != torch.float64 else dt))
              .to(device).requires_grad_() for k, v in t.items()}
    out, last = selective_scan_triton(**tri_in, delta_softplus=softplus, return_last_state=True, block_d=block_d)
    (out.double() * g.to(device)).sum().backward()

    def err(a, b):
        return float((a.detach().double().cpu() - b.detach()).abs().max() / b.detach().abs().max().clamp_min(1.0))

    res = {"out": err(out, ref), "last_state": err(last, ref_last),
           "dtypes_ok": out.dtype == tri_in["u"].dtype and all(tri_in[k].grad.dtype == tri_in[k].dtype for k in t),
           "grads": {k: err(tri_in[k].grad, ref_in[k].grad) for k in t},
           # bf16 rule (STYLE): compare with what rounding the float64 reference to the same dtype costs
           "rounding": err(ref.to(dt), ref)}
    res["seconds"] = round(time.perf_counter() - start, 2)
    return res


def selfcheck_verdict(device="cpu"):
    """What the kernel's own first-use check (pointmap.ops.selective_scan.selfcheck) says of it: None = agrees."""
    from pointmap.ops.selective_scan import selective_scan_torch, selfcheck
    from pointmap.ops.selective_scan_triton import selective_scan_triton

    return selfcheck(selective_scan_triton, selective_scan_torch, torch.device(device))


def main():
    names = sys.argv[1:] or list(CASES)
    json.dump({"selfcheck": selfcheck_verdict(), **{c: run_case(c) for c in names}}, sys.stdout)


if __name__ == "__main__":
    main()
