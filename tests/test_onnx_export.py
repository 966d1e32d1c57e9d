"""tools/export.py --onnx: model.onnx beside the weights, its logits (onnxruntime) equal to PyTorch's to 1e-4, for
any batch size; the ops' exported paths pick the reference's indices; bad cases as one line with nothing written.

One export of the tiny demo run is in the fast tests (tens of seconds on a busy 2-core machine); the
full-size presets are slow tests (minutes each)."""
import json
import os

import numpy as np
import pytest
import torch

import pointmap
from pointmap.engine import load_file
from pointmap.engine import onnx_export
from pointmap.engine.onnx_export import export_onnx, onnx_session, run_onnx, torch_ops
from pointmap.ops import fps_ref, knn_ref
from pointmap.ops.testing import cloud_with_duplicates, random_cloud

from .test_export import _export, _leftovers, finetuned  # noqa: F401
from .test_tools import pretrained  # noqa: F401

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TOL = 1e-4


def _near_origin(clouds: torch.Tensor) -> torch.Tensor:
    """Clouds with a few points within 1e-3 of the origin (pointnet2_ops' FPS quirk), and one at it."""
    clouds = clouds.clone()
    clouds[:, 5] = 0.0
    clouds[:, 9:12] *= 0.01
    return clouds


def _logits_match(path, model, clouds):
    got = torch.from_numpy(run_onnx(path, clouds.numpy()))
    with torch_ops(), torch.no_grad():
        want = model(clouds)
    assert got.shape == want.shape
    assert (got - want).abs().max() <= TOL * max(1.0, float(want.abs().max()))


def test_export_onnx_of_the_demo_run_gives_pytorch_s_logits_for_any_batch(finetuned, tmp_path, monkeypatch,  # noqa: F811
                                                                         capsys):
    code, out, err = _export(finetuned, tmp_path / "share", monkeypatch, capsys, "--onnx")
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "share")) == ["README.md", "config.json", "config.yaml", "model.onnx",
                                                     "model.safetensors"]
    card = json.loads((tmp_path / "share" / "config.json").read_text())
    onnx = card["provenance"]["onnx"]
    assert onnx["file"] == "model.onnx" and onnx["opset"] >= 17 and onnx["input"] == "points (B, 64, 3)"
    assert 0 <= onnx["max_abs_diff"] <= onnx["bound"] and "model.onnx: max |onnx - torch| " in out

    ckpt = load_file(os.path.join(finetuned, "ckpt-best.pth"))
    model = pointmap.create_model("hybridnet_s", num_classes=15, **ckpt["config"]["model"]["args"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    session = onnx_session(str(tmp_path / "share" / "model.onnx"), threads=1)
    assert [i.name for i in session.get_inputs()] == ["points"] and [o.name for o in session.get_outputs()] == ["logits"]
    for batch, seed in ((1, 3), (5, 4)):
        clouds = random_cloud(batch, 64, seed=seed)
        _logits_match(session, model, clouds)
    _logits_match(session, model, cloud_with_duplicates(2, 64))  # exact distance ties in FPS and KNN


@pytest.mark.parametrize("case", ["no_onnxruntime", "pretraining_run"])
def test_onnx_refusals_are_one_line_and_write_nothing(case, finetuned, pretrained, tmp_path, monkeypatch,  # noqa: F811
                                                      capsys):
    src, expect = finetuned, "ONNX export needs onnxruntime: pip install onnx onnxruntime onnxscript"
    if case == "no_onnxruntime":
        monkeypatch.setattr(onnx_export, "onnx_missing", lambda: ["onnxruntime"])
    else:
        src, expect = pretrained, "ONNX export takes a point-cloud classifier (points in, logits out); this run's model"
    code, out, err = _export(src, tmp_path / "share", monkeypatch, capsys, "--onnx")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], err
    assert not (tmp_path / "share").exists() and _leftovers(tmp_path) == []


@pytest.mark.slow
def test_onnx_that_differs_from_pytorch_is_refused_and_nothing_is_written(finetuned, tmp_path, monkeypatch,  # noqa: F811
                                                                         capsys):
    real = onnx_export.run_onnx
    monkeypatch.setattr(onnx_export, "run_onnx", lambda path, x: real(path, x) + 1e-3)
    code, out, err = _export(finetuned, tmp_path / "share", monkeypatch, capsys, "--onnx")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "the ONNX model's logits differ from PyTorch's by up to 0.001" in lines[0]
    assert not (tmp_path / "share").exists() and _leftovers(tmp_path) == []


class _Grouping(torch.nn.Module):
    def forward(self, xyz):
        return pointmap.ops.group(xyz, 12, 6, return_idx=True, skip_near_origin=True)[2]


@pytest.mark.slow
def test_exported_grouping_picks_the_reference_s_indices(tmp_path):
    """FPS (its loop, unrolled) and KNN (a stable sort as TopK) in the graph: the indices of fps_ref and
    knn_ref, on random clouds with near-origin points and on clouds with exact ties."""
    with torch_ops():
        program = torch.onnx.export(_Grouping().eval(), (random_cloud(2, 64),), input_names=["points"], output_names=["idx"],
                                    opset_version=onnx_export.OPSET, dynamo=True, verbose=False,
                                    dynamic_shapes={"xyz": {0: torch.export.Dim("batch", min=1)}},
                                    custom_translation_table={torch.ops.aten.sort.stable: onnx_export._sort_stable})
    program.save(str(tmp_path / "g.onnx"))
    session = onnx_session(str(tmp_path / "g.onnx"))
    for clouds in (_near_origin(random_cloud(3, 64, seed=7)), random_cloud(1, 64, seed=8), cloud_with_duplicates(4, 64)):
        got = session.run(None, {"points": clouds.numpy()})[0]
        center_idx = fps_ref(clouds, 12, skip_near_origin=True)
        centers = clouds.gather(1, center_idx[..., None].expand(-1, -1, 3))
        assert np.array_equal(got, knn_ref(centers, clouds, 6)[1].numpy())


@pytest.mark.slow
# hybridnet_s's full-size export (its same blocks as the demo model's, checked in the fast tests) takes about 7
# minutes on 2 cores: it is checked by `python tools/benchmark.py --onnx --presets hybridnet_s` instead
# (docs/benchmarks/onnx_cpu_hybridnet_s.json records the difference the export check found)
@pytest.mark.parametrize("preset", ["pointmae", "pointmamba"])
def test_full_size_presets_export_with_pytorch_s_logits(preset, tmp_path):
    model = pointmap.create_model(preset, num_classes=40).eval()
    report = export_onnx(model, str(tmp_path / "model.onnx"), num_points=1024)
    assert report.max_abs_diff <= report.bound
    _logits_match(str(tmp_path / "model.onnx"), model, _near_origin(random_cloud(2, 1024, seed=9)))


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["mamba3d", "map3d_official"])
def test_mamba3d_blocks_export_with_pytorch_s_logits(preset, tmp_path):
    """Mamba3D's blocks (LNP over the nearest centers, the channel-flipped bi-SSM), in a small model."""
    model = pointmap.create_model(preset, num_classes=15, embed_dim=16, layout="MT", num_heads=2, num_group=8,
                                  group_size=8).eval()
    report = export_onnx(model, str(tmp_path / "model.onnx"), num_points=64)
    assert report.max_abs_diff <= report.bound
    _logits_match(str(tmp_path / "model.onnx"), model, _near_origin(random_cloud(2, 64, seed=10)))
