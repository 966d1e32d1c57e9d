"""``pointmap benchmark --onnx``: one cloud through each preset on one CPU thread, eager PyTorch against
onnxruntime running the model that ``pointmap export --onnx`` writes (a ratio measured in one process)."""
import os
import tempfile

import torch

from ..ops.testing import random_cloud, timeit

ONNX_PRESETS = ("hybridnet_s", "pointmae", "pointmamba")


def bench_onnx(presets=ONNX_PRESETS, points=1024, repeat=20, folder=None, **preset_args):
    """One cloud through each preset on one CPU thread: eager PyTorch vs onnxruntime (``onnx_x_vs_eager``: eager
    time / onnxruntime time), with the export's seconds and its checked logit difference. ``preset_args``:
    overrides for every preset (a smaller model in the tests)."""
    from ..engine.onnx_export import export_onnx, onnx_session
    from ..models import create_model

    device, rows = torch.device("cpu"), []
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        for name in presets:
            model = create_model(name, num_classes=40, **preset_args).eval()
            path = os.path.join(tmp, f"{name}.onnx")
            report = export_onnx(model, path, num_points=points)
            cloud = random_cloud(1, points, seed=5)
            session = onnx_session(path, threads=1)
            torch.set_num_threads(1)
            try:
                with torch.no_grad():
                    eager = timeit(lambda: model(cloud), device, repeat=repeat, warmup=2)
                ort = timeit(lambda: session.run(["logits"], {"points": cloud.numpy()}), device, repeat=repeat,
                             warmup=2)
            finally:
                torch.set_num_threads(threads)
            rows.append({"preset": name, "points": points, "threads": 1, "eager_ms": round(eager * 1e3, 2),
                         "onnxruntime_ms": round(ort * 1e3, 2), "onnx_x_vs_eager": round(eager / ort, 2),
                         "export_s": round(report.seconds, 1), "max_abs_diff": report.max_abs_diff})
    return rows


def print_onnx_rows(rows):
    import onnxruntime

    print(f"# one cloud, one CPU thread: eager torch {torch.__version__} vs onnxruntime {onnxruntime.__version__}")
    for r in rows:
        print(f"{r['preset']:14s} N={r['points']} eager {r['eager_ms']:9.2f} ms  onnxruntime {r['onnxruntime_ms']:9.2f} "
              f"ms  x{r['onnx_x_vs_eager']:.2f}  (export {r['export_s']} s, max |diff| {r['max_abs_diff']:.1e})")
