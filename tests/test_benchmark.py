import json
import os
import subprocess
import sys

import pytest
import torch

from pointmap.cli import benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_step_benchmark_reports_samples_per_second():
    rows = benchmark.bench_step(torch.device("cpu"), os.path.join(ROOT, "cfgs", "map_demo.yaml"), batch=2,
                                points=256, steps=1, include_baseline=False)
    assert len(rows) == 1 and "error" not in rows[0], rows
    assert rows[0]["samples_per_s"] > 0 and rows[0]["params_M"] > 0


def test_rows_give_ratio_to_reference():
    rows = benchmark._rows("op", "s", {"reference": lambda: sum(range(20000)), "fast": lambda: None}, "reference",
                           torch.device("cpu"), repeat=2)
    by = {r["backend"]: r for r in rows}
    assert by["reference"]["speedup_vs_ref"] == 1.0 and by["fast"]["speedup_vs_ref"] > 1.0


def test_cli_env_json(tmp_path):
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, "tools/benchmark.py", "--env", "--json", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(out.read_text())
    assert set(data["env"]["ops"]) >= {"fps", "knn", "chamfer", "selective_scan"}


def test_step_variants_amp_and_compile_on_cpu():
    names = [v[0] for v in benchmark._step_variants(torch.device("cpu"), amp="bf16", compile=True)]
    assert names[1:] == ["MAP fp32, scan=torch", "MAP fp32 compiled, scan=torch", "MAP bf16, scan=torch",
                         "MAP bf16 compiled, scan=torch"]
    assert [v[0] for v in benchmark._step_variants(torch.device("cpu"))][1:] == ["MAP fp32, scan=torch"]


def test_step_benchmark_bf16_on_cpu():
    rows = benchmark.bench_step(torch.device("cpu"), os.path.join(ROOT, "cfgs", "map_demo.yaml"), batch=2,
                                points=256, steps=1, include_baseline=False, amp="bf16", compile=False)
    assert [r["variant"] for r in rows] == ["MAP fp32, scan=torch", "MAP bf16, scan=torch"]
    assert all("error" not in r and r["ms_per_step"] > 0 for r in rows), rows


def test_scan_benchmark_rows():
    rows = benchmark.bench_scan(torch.device("cpu"), [(1, 8, 16, 4)], repeat=1, dtypes=(torch.float32, torch.bfloat16))
    assert {(r["op"], r["backend"]) for r in rows} == {
        (op, b) for op in ("selective_scan fwd+bwd", "selective_scan fwd+bwd bfloat16") for b in ("reference", "torch")}
    assert all(r["ms"] > 0 for r in rows)



def test_busy_core_spins_another_process_only_inside_the_block(monkeypatch):
    started = []
    popen = subprocess.Popen
    monkeypatch.setattr(benchmark.subprocess, "Popen", lambda *a, **k: started.append(popen(*a, **k)) or started[-1])
    with benchmark._busy_core(True):
        assert len(started) == 1 and started[0].poll() is None  # spinning
    assert started[0].poll() is not None  # killed and reaped at the end of the block
    with benchmark._busy_core(False):
        assert len(started) == 1


@pytest.mark.slow
def test_onnx_benchmark_times_eager_and_onnxruntime_on_one_thread():
    threads = torch.get_num_threads()
    rows = benchmark.bench_onnx(("pointmae",), points=64, repeat=1, embed_dim=16, layout="T", num_heads=2,
                                num_group=4, group_size=8)
    assert [(r["preset"], r["points"], r["threads"]) for r in rows] == [("pointmae", 64, 1)]
    r = rows[0]
    assert r["eager_ms"] > 0 and r["onnxruntime_ms"] > 0 and r["export_s"] > 0 and 0 <= r["max_abs_diff"] <= 1e-4
    assert abs(r["onnx_x_vs_eager"] - r["eager_ms"] / r["onnxruntime_ms"]) < 0.05 * r["onnx_x_vs_eager"] + 0.01
    assert torch.get_num_threads() == threads  # one thread only while timing
