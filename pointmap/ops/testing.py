"""Inputs for the ops' tests, benchmarks and kernel self-checks: random clouds, clouds with ties, the
arguments of a Mamba layer's selective scan; and the benchmarks' timer. Each input draws from its own seeded
generator, never from the global RNG, so calling one changes no other draw."""
import statistics
import time

import torch

__all__ = ["random_cloud", "cloud_with_duplicates", "scan_inputs", "timeit"]


def random_cloud(B, N, dtype=torch.float32, device="cpu", seed=0):
    """(B, N, 3) uniform in [-1, 1]^3."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, N, 3, generator=g, dtype=torch.float64).to(dtype=dtype, device=device) * 2 - 1


def cloud_with_duplicates(B, N, dtype=torch.float32, seed=0):
    """Points on a coarse grid, so many coincide and many distances tie exactly."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 4, (B, N, 3), generator=g).to(dtype) / 4)


def scan_inputs(Bsz, D, L, N, dtype=torch.float32, device="cpu", bc="variable", seed=0, requires_grad=True):
    """Arguments of selective_scan as a Mamba layer produces them (negative A, softplus deltas)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype=dtype, device=device)

    A = -torch.exp(r(D, N, scale=0.5)) * 2
    if bc == "constant":
        B, C = r(D, N), r(D, N)
    elif bc == "grouped":
        B, C = r(Bsz, 2, N, L), r(Bsz, 2, N, L)
    else:
        B, C = r(Bsz, N, L), r(Bsz, N, L)
    tensors = dict(u=r(Bsz, D, L), delta=r(Bsz, D, L, scale=0.5), A=A, B=B, C=C, D=r(D), z=r(Bsz, D, L),
                   delta_bias=r(D, scale=0.1))
    if requires_grad:
        for t in tensors.values():
            t.requires_grad_(True)
    return tensors


def timeit(fn, device, repeat=5, warmup=1, budget_s=20.0):
    """Median seconds of fn() over up to ``repeat`` runs (fewer if one run takes long)."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()
    for _ in range(warmup):
        fn()
    sync()
    times, start = [], time.perf_counter()
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > budget_s:
            break
    return statistics.median(times)
