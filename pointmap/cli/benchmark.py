"""Benchmarks: every op on every backend here, and the pretraining step, as ratios measured in one run.

    pointmap benchmark --ops [--json FILE] [--quick]
    pointmap benchmark --step [--cfg map_demo] [--batch B] [--points N] [--json FILE]
                              [--device cpu] [--amp bf16] [--compile] [--threads 1 2] [--busy]
    pointmap benchmark --scan [--json FILE]     # selective_scan backends, fp32 and bf16 inputs
    pointmap benchmark --onnx [--presets hybridnet_s pointmae pointmamba] [--json FILE]
    pointmap benchmark --env

Each row times forward (and backward where the op has one) with warm-up, median of repeats, CUDA
synchronized. Ratios are "reference time / backend time" from the same process.

``--threads 1 2`` repeats ``--step`` with each CPU thread count; ``--busy`` repeats each with another
process spinning on one core beside it (a machine where other jobs run).

``--onnx`` exports each preset (40 classes) with ``pointmap export --onnx``'s exporter and times one cloud of
1024 points through it on one CPU thread: eager PyTorch (the backends ``auto`` picks) against onnxruntime
(:mod:`pointmap.cli.benchmark_onnx`).

``--step`` times the float32 step and, in the same process, the ``--amp`` one (autocast to bf16 or fp16)
and the ``torch.compile``d ones (``--compile``: inductor, on the CPU too); on CUDA both are on by default
(``--amp none --no-compile`` turns them off), on the CPU off.
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

import torch

from .. import env as pm_env
from ..errors import add_debug_flag, user_errors_exit
from ..ops import (available_backends, chamfer, chamfer_ref, fps, fps_ref, group, group_ref,
                          knn, knn_ref, selective_scan, selective_scan_ref, serialize, serialize_ref)
from ..ops.testing import random_cloud, scan_inputs, timeit
from .benchmark_onnx import ONNX_PRESETS, bench_onnx, print_onnx_rows  # noqa: F401 (bench_onnx: also from here)


def _rows(op, shape, candidates, ref_name, device, repeat):
    """Time every candidate; ratio = reference time / candidate time."""
    times = {}
    for name, fn in candidates.items():
        try:
            times[name] = timeit(fn, device, repeat=1 if name == ref_name and device.type == "cpu" else repeat)
        except RuntimeError as e:
            times[name] = None
            print(f"  {op} {name}: {e}", file=sys.stderr)
    ref = times.get(ref_name)
    rows = []
    for name, t in times.items():
        rows.append({"op": op, "shape": shape, "backend": name, "ms": None if t is None else round(t * 1e3, 3),
                     "speedup_vs_ref": None if (t is None or ref is None) else round(ref / t, 2)})
    return rows


def bench_ops(device, quick=False, repeat=5):
    rows = []
    gpu = device.type == "cuda"
    fps_shapes = [(128, 1024, 64), (32, 8192, 512)]
    for B, N, n in fps_shapes:
        xyz = random_cloud(B, N, device=device)
        cands = {"reference": lambda: fps_ref(xyz, n)}
        for b in available_backends("fps"):
            if b != "torch":
                # pointnet2_ops computes only the near-origin variant: timed on it (one elementwise pass more)
                kw = {"skip_near_origin": True} if b == "pointnet2_ops" else {}
                try:
                    fps(xyz[:1, :8], 2, backend=b, **kw)
                except RuntimeError:
                    continue
                cands[b] = (lambda b=b, kw=kw: fps(xyz, n, backend=b, **kw))
        if not gpu:
            try:
                import fpsample
                pts = xyz.numpy()
                cands["fpsample.fps_sampling"] = lambda: [fpsample.fps_sampling(p, n, start_idx=0) for p in pts]
                cands["fpsample.bucket_fps_kdline"] = lambda: [
                    fpsample.bucket_fps_kdline_sampling(p, n, h=7 if N > 2048 else 5, start_idx=0) for p in pts]
            except ImportError:
                pass
        rows += _rows("fps", f"B={B} N={N} n={n}", cands, "reference", device, repeat)

    q = random_cloud(128, 64, device=device, seed=1)
    p = random_cloud(128, 1024, device=device, seed=2)
    rows += _rows("knn", "B=128 M=64 N=1024 k=32", {"reference": lambda: knn_ref(q, p, 32),
                                                     "torch": lambda: knn(q, p, 32)}, "reference", device, repeat)
    xyz = random_cloud(128, 1024, device=device)
    rows += _rows("group", "B=128 N=1024 G=64 K=32", {"reference": lambda: group_ref(xyz, 64, 32),
                                                       "auto": lambda: group(xyz, 64, 32)}, "reference", device, repeat)
    c = random_cloud(128, 64, device=device)
    rows += _rows("serialize", "B=128 G=64 hilbert", {"reference": lambda: serialize_ref(c, "hilbert"),
                                                      "torch": lambda: serialize(c, "hilbert")}, "reference", device, repeat)

    P = 2048 if (quick and not gpu) else 8192
    a = random_cloud(P, 32, device=device, seed=3).requires_grad_()
    b = random_cloud(P, 32, device=device, seed=4)

    def cd(fn):
        def run():
            a.grad = None
            fn(a, b).backward()
        return run
    rows += _rows("chamfer fwd+bwd", f"{P} patches x 32 points", {
        "reference": cd(lambda x, y: chamfer_ref(x, y)),
        "torch": cd(lambda x, y: chamfer(x, y, backend="torch")),
        "cdist": cd(lambda x, y: torch.cdist(x, y).pow(2).min(2).values.mean() + torch.cdist(x, y).pow(2).min(1).values.mean()),
    }, "reference", device, repeat)

    shape = (128, 768, 64, 16) if gpu else (8, 768, 128, 16)
    if quick and not gpu:
        shape = (2, 768, 128, 16)
    return rows + bench_scan(device, [shape], repeat=repeat)


def bench_scan(device, shapes, repeat=5, dtypes=(torch.float32,)):
    """selective_scan forward+backward on every backend here (and the reference), per shape and dtype of
    u, delta, B, C, z (A, D, delta_bias stay float32, as a Mamba layer passes them). Rows carry the ratio
    to the reference and, where mamba_ssm runs, ``x_vs_mamba_ssm`` (its time / this backend's time)."""
    gpu = device.type == "cuda"
    rows = []
    for shape in shapes:
        for dtype in dtypes:
            t = scan_inputs(*shape, device=device, requires_grad=False)
            for k in ("u", "delta", "B", "C", "z"):
                t[k] = t[k].to(dtype)
            for v in t.values():
                v.requires_grad_()
            args = [t[k] for k in ("u", "delta", "A", "B", "C", "D", "z")]

            def ss(fn):
                def run():
                    for v in t.values():
                        v.grad = None
                    fn(*args, delta_bias=t["delta_bias"], delta_softplus=True).float().sum().backward()
                return run
            cands = {"reference": ss(selective_scan_ref)}
            for bk in available_backends("selective_scan"):
                if bk != "reference" and (bk not in ("mamba_ssm", "triton") or gpu):
                    cands[bk] = ss(lambda *x, bk=bk, **k: selective_scan(*x, backend=bk, **k))
            name = "selective_scan fwd+bwd" + ("" if dtype == torch.float32 else f" {str(dtype)[6:]}")
            got = _rows(name, "B={} D={} L={} N={}".format(*shape), cands, "reference", device, repeat)
            mamba = next((r["ms"] for r in got if r["backend"] == "mamba_ssm" and r["ms"]), None)
            for r in got:
                if mamba and r["ms"]:
                    r["x_vs_mamba_ssm"] = round(mamba / r["ms"], 2)
            rows += got
    return rows


_AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _step_variants(device, amp=None, compile=None):
    """(name, model kind, autocast dtype or None, compile, selective_scan backend, fps backend).

    amp: "none", "bf16", "fp16" or None (bf16 on CUDA, none on the CPU); compile: bool or None (True on
    CUDA, False on the CPU). The float32 eager step is always there, to compare against. Every
    selective_scan backend that runs here is timed eager; the compiled steps use the one auto picks.
    """
    cuda = device.type == "cuda"
    scans = ["torch"] + [b for b in ("triton", "mamba_ssm") if cuda and b in available_backends("selective_scan")]
    amp_dtype = _AMP[amp if amp is not None else ("bf16" if cuda else "none")]
    compile = cuda if compile is None else compile
    out = [("baseline: Point-MAE-sized MAE, fp32, unfused attention, PyTorch FPS", "baseline", None, False, "torch", "torch")]
    names = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    for scan in scans:
        for dt in [None] + ([amp_dtype] if amp_dtype is not None else []):
            # compiling takes minutes per variant: only with the scan backend that auto picks (the last)
            for comp in [False] + ([True] if compile and scan == scans[-1] else []):
                name = f"MAP {names[dt]}{' compiled' if comp else ''}, scan={scan}"
                out.append((name, "map", dt, comp, scan, "auto"))
    return out


def _build_step_model(kind, cfg_path):
    from ..models import create_pretrainer
    from ..layers.attention import Attention

    if kind == "baseline":
        model = create_pretrainer("pointmae", objective="mae", mask_ratio=0.6)
        for m in model.modules():
            if isinstance(m, Attention):
                m.fused_attn = False
        return model
    if cfg_path:
        from ..config import load_config
        from ..engine.tasks import build_task

        return build_task(load_config(cfg_path)).build_model({})
    return create_pretrainer("hybridnet_s", objective="map", mask_ratio=0.5)


def bench_step(device, cfg_path=None, batch=128, points=1024, steps=10, include_baseline=True, amp=None,
               compile=None):
    """Samples/s of one optimizer step (grouping on the device, encoder, decoder, loss, backward, AdamW).

    amp, compile: the extra variants (see :func:`_step_variants`)."""
    from ..ops import set_backend

    x = random_cloud(batch, points, device=device)
    rows, base = [], None
    for name, kind, dt, comp, scan, fps_backend in _step_variants(device, amp, compile):
        if kind == "baseline" and not include_baseline:
            continue
        set_backend("selective_scan", scan)
        set_backend("fps", fps_backend)
        try:
            model = _build_step_model(kind, cfg_path).to(device).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            fwd = torch.compile(model) if comp else model

            def step():
                with torch.autocast(device.type, dtype=dt, enabled=dt is not None):
                    loss = fwd(x).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            first = time.perf_counter()
            step()  # the first call compiles (and warms up the eager step)
            if device.type == "cuda":
                torch.cuda.synchronize()
            first = time.perf_counter() - first
            t = timeit(step, device, repeat=steps, warmup=2 if comp else 0, budget_s=60)
            row = {"variant": name, "batch": batch, "points": points, "ms_per_step": round(t * 1e3, 2),
                   "first_step_s": round(first, 2),
                   "samples_per_s": round(batch / t, 1),
                   "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}
            if device.type == "cuda":
                row["peak_mem_GiB"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
        except Exception as e:  # report a failing variant (e.g. torch.compile without a compiler) and go on
            row = {"variant": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        finally:
            set_backend("selective_scan", None)
            set_backend("fps", None)
        if kind == "baseline" and "samples_per_s" in row:
            base = row["samples_per_s"]
        if base and "samples_per_s" in row:
            row["x_vs_baseline"] = round(row["samples_per_s"] / base, 2)
        rows.append(row)
    return rows


@contextlib.contextmanager
def _busy_core(on: bool):
    """With ``on``: another process spinning on one core for the block (a machine where other jobs run)."""
    if not on:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.kill()
        proc.wait()


def print_step_rows(rows, device, busy=False):
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# pretraining step on {name}{', another process busy on a core' if busy else ''} (torch {torch.__version__})")
    for r in rows:
        if "error" in r:
            print(f"{r['variant']:72s} failed: {r['error']}")
            continue
        extra = f"  peak {r['peak_mem_GiB']} GiB" if "peak_mem_GiB" in r else ""
        ratio = f"  x{r['x_vs_baseline']:.2f} vs baseline" if "x_vs_baseline" in r else ""
        print(f"{r['variant']:72s} B={r['batch']} N={r['points']} {r['ms_per_step']:9.2f} ms "
              f"{r['samples_per_s']:9.1f} samples/s  {r['params_M']}M params{extra}{ratio}")


def print_rows(rows, device):
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# ops on {name} (torch {torch.__version__})")
    print(f"{'op':32s} {'shape':28s} {'backend':28s} {'ms':>10s} {'x vs ref':>9s} {'x vs mamba_ssm':>15s}")
    for r in rows:
        ms = "n/a" if r["ms"] is None else f"{r['ms']:.3f}"
        sp = "" if r["speedup_vs_ref"] is None else f"{r['speedup_vs_ref']:.2f}"
        vm = f"{r['x_vs_mamba_ssm']:.2f}" if "x_vs_mamba_ssm" in r else ""
        print(f"{r['op']:32s} {r['shape']:28s} {r['backend']:28s} {ms:>10s} {sp:>9s} {vm:>15s}")


def main(argv=None, prog=None):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", action="store_true", help="time every op on every backend available here")
    ap.add_argument("--env", action="store_true", help="print the backends each op can use here")
    ap.add_argument("--scan", action="store_true",
                    help="time selective_scan on every backend (Triton, mamba-ssm, PyTorch), fp32 and bf16 inputs")
    ap.add_argument("--step", action="store_true", help="time the MAP pretraining step against the baseline step")
    ap.add_argument("--onnx", action="store_true",
                    help="one cloud on one CPU thread: eager PyTorch vs onnxruntime, per preset")
    ap.add_argument("--presets", nargs="+", default=list(ONNX_PRESETS), help="--onnx: the presets to time")
    ap.add_argument("--cfg", help="--step: build the pretrainer from this config (default: hybridnet_s)")
    ap.add_argument("--batch", type=int, default=None, help="--step batch size (default 128, or the config's)")
    ap.add_argument("--points", type=int, default=None, help="--step points per cloud (default 1024, or the config's)")
    ap.add_argument("--steps", type=int, default=10, help="--step: timed steps per variant")
    ap.add_argument("--no-baseline", action="store_true", help="--step: skip the Point-MAE-sized baseline")
    ap.add_argument("--amp", choices=sorted(_AMP), default=None,
                    help="--step: also time the step under autocast to this dtype (default: bf16 on CUDA, none on CPU)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="--step: also time torch.compile'd steps (default: on CUDA yes, on CPU no)")
    ap.add_argument("--threads", type=int, nargs="+", default=None, help="--step: CPU thread counts to time")
    ap.add_argument("--busy", action="store_true", help="--step: also time each beside a process spinning on a core")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="smaller CPU shapes (a smoke run)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    add_debug_flag(ap)
    args = ap.parse_args(argv)
    if not (args.ops or args.env or args.step or args.scan or args.onnx):
        ap.error("choose --ops, --scan, --step, --onnx and/or --env")
    with user_errors_exit(args.debug):
        run(args)


def run(args) -> None:
    out = {"env": pm_env.report()}
    if args.env:
        print(pm_env.format_report(dict(out["env"], ops={k: dict(v) for k, v in out["env"]["ops"].items()})))
    if args.ops:
        device = torch.device(args.device)
        out["device"] = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
        out["ops"] = bench_ops(device, quick=args.quick, repeat=args.repeat)
        print_rows(out["ops"], device)
    if args.scan:
        device = torch.device(args.device)
        out["device"] = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
        shapes = [(128, 768, 64, 16), (32, 768, 256, 16)] if device.type == "cuda" else [(2, 768, 128, 16)]
        out["scan"] = bench_scan(device, shapes, repeat=args.repeat, dtypes=(torch.float32, torch.bfloat16))
        print_rows(out["scan"], device)
    if args.step:
        device = torch.device(args.device)
        batch, points = args.batch or 128, args.points or 1024
        if args.cfg:
            from ..config import load_config
            cfg = load_config(args.cfg)
            batch = args.batch or cfg.data.batch_size
            points = args.points or int(cfg.data.options.get("num_points", 1024))
        out["device"] = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
        out["step"] = []
        for threads in args.threads or [torch.get_num_threads()]:
            for busy in ([False, True] if args.busy else [False]):
                torch.set_num_threads(threads)
                with _busy_core(busy):
                    rows = bench_step(device, args.cfg, batch, points, steps=args.steps,
                                      include_baseline=not args.no_baseline, amp=args.amp, compile=args.compile)
                out["step"] += [{**r, "threads": threads, "busy": busy} for r in rows]
                print_step_rows(rows, device, busy)
    if args.onnx:
        out["command"] = "python tools/benchmark.py " + " ".join(sys.argv[1:])
        out["onnx"] = bench_onnx(args.presets, repeat=args.repeat)
        print_onnx_rows(out["onnx"])
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=1)
        os.replace(tmp, args.json)

