"""``--ckpt <entry>`` on the tools that take --ckpt (pretrain, finetune, --eval, few-shot, visualize), the
entries' files served in their peers' layouts from 127.0.0.1 and downloaded once into a temporary home."""
import os

import numpy as np
import pytest
import yaml

from ._hub import TINY, hub, serve_entry  # noqa: F401
from .test_tools import CFGS, TINY as TINY_RUN, _scanobjectnn_fixture, tool

POINTMAE = "model.args={embed_dim: 48, layout: TT, num_heads: 6, num_group: 32, group_size: 16, drop_path_rate: 0.0}"
RUN = [a for a in TINY_RUN if not a.startswith("model.args=")] + ["model.name=pointmae", POINTMAE]


def _run_config(folder):
    return yaml.safe_load(open(os.path.join(folder, "config.yaml"), encoding="utf-8"))


def test_finetune_from_an_entry(hub, tmp_path, monkeypatch, capsys):  # noqa: F811
    card, _ = serve_entry(hub, "pointmae.modelnet40_1k")
    code, out, err = tool("finetune_modelnet.py", "--cfg", os.path.join(CFGS, "finetune_demo.yaml"), "--device", "cpu",
                          *RUN, "data.options={num_points: 64, samples_per_class: 2}",
                          "--ckpt", "pointmae.modelnet40_1k",
                          f"train.output_dir={tmp_path / 'exp'}", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    run = tmp_path / "exp" / "finetune_demo" / "default"
    assert _run_config(run)["pretrained"] == "pointmae.modelnet40_1k"   # the run records the entry's name
    assert "loaded checkpoint" in (run / "log.txt").read_text()
    assert hub.gets(card.url) == [None]


def test_pretrain_from_an_entry(hub, tmp_path, monkeypatch, capsys):  # noqa: F811
    card, _ = serve_entry(hub, "pointmae.shapenet55")
    code, out, err = tool("pretrain.py", "--cfg", os.path.join(CFGS, "point_mae", "pretrain.yaml"), "--device", "cpu",
                          *RUN, "objective.decoder_depth=1", "data.name=synthetic_pretrain",
                          "data.options={size: 16, num_points: 64}", "data.train_transforms=[{name: normalize}]",
                          "--ckpt", "pointmae.shapenet55", f"train.output_dir={tmp_path / 'exp'}",
                          monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    log = (tmp_path / "exp" / "point_mae" / "pretrain" / "default" / "log.txt").read_text()
    assert "(point_mae format) into MAPPretrainer" in log and "missing none, ignored none" in log
    assert hub.gets(card.url) == [None]


def test_eval_a_published_finetuned_file(hub, tmp_path, monkeypatch, capsys):  # noqa: F811
    """--eval scores the entry's own weights (every tensor, its head too) on the test split."""
    serve_entry(hub, "pointmae.scan_hardest")
    _scanobjectnn_fixture(tmp_path / "data")
    args = ["--cfg", os.path.join(CFGS, "point_mae", "finetune_scan_hardest.yaml"), "--device", "cpu", *RUN,
            f"data.root={tmp_path / 'data'}", f"train.output_dir={tmp_path / 'exp'}", "--eval"]
    code, out, err = tool("finetune_scanobjectnn.py", *args, "--ckpt", "pointmae.scan_hardest", monkeypatch=monkeypatch,
                          capsys=capsys)
    assert code == 0, err
    assert "evaluated pointmae.scan_hardest" in out and "| test acc " in out and out.startswith("protocol peer")
    serve_entry(hub, "pointmae.shapenet55")
    code, out, err = tool("finetune_scanobjectnn.py", *args, "--ckpt", "pointmae.shapenet55", monkeypatch=monkeypatch,
                          capsys=capsys)                                 # a pretraining file has no head
    assert code == 2 and "tensors of the model are not in the file (cls_token" in err.strip().splitlines()[-1]


def test_fewshot_from_an_entry(hub, tmp_path, monkeypatch, capsys):  # noqa: F811
    card, _ = serve_entry(hub, "pointmae.modelnet40_1k")
    code, out, err = tool("fewshot.py", "--way", "2", "--shot", "3", "--folds", "0-1", "--device", "cpu", *RUN,
                          "data.batch_size=2", "data.options={num_points: 64, num_query: 2}", "--ckpt",
                          "pointmae.modelnet40_1k", f"train.output_dir={tmp_path}", monkeypatch=monkeypatch,
                          capsys=capsys)
    assert code == 0, err
    assert "2-way 3-shot, 2 folds" in out and hub.gets(card.url) == [None]  # two runs, one download


def test_visualize_an_entry_with_its_recipe(hub, tmp_path, monkeypatch, capsys):  # noqa: F811
    """No --cfg: the entry's recipe (cfgs/point_mae/pretrain.yaml), here with the fixture's small sizes."""
    serve_entry(hub, "pointmae.shapenet55")
    np.save(tmp_path / "cloud.npy", np.random.default_rng(0).normal(size=(256, 3)).astype(np.float32))
    code, out, err = tool("visualize.py", "--ckpt", "pointmae.shapenet55", "--input", str(tmp_path / "cloud.npy"),
                          "--num-points", "256", "--out", str(tmp_path / "recon.png"), "--backend", "matplotlib",
                          "--size", "480x150", POINTMAE, "objective.decoder_depth=1", monkeypatch=monkeypatch,
                          capsys=capsys)
    assert code == 0, err
    assert "cloud.npy | Chamfer L2" in out and os.path.getsize(tmp_path / "recon.png") > 0


@pytest.mark.parametrize("name", ["finetune_modelnet.py", "visualize.py"])
def test_offline_without_the_file_is_one_line(name, tmp_path, monkeypatch, capsys):
    """conftest: offline, an empty home: the error names the URL and where to put the file; exit 2."""
    argv = ["--ckpt", "pointmae.scan_hardest", "--device", "cpu"]
    argv += ["--out", str(tmp_path / "x.png"), "--input", str(tmp_path / "c.npy")] if name == "visualize.py" else \
        [*TINY_RUN, f"train.output_dir={tmp_path}"]
    np.save(tmp_path / "c.npy", np.zeros((8, 3), np.float32))
    code, out, err = tool(name, *argv, monkeypatch=monkeypatch, capsys=capsys)
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("error: offline (POINTMAP_OFFLINE=1) and https://github.com/Pang-Yatian/"
                                              "Point-MAE/releases/download/main/scan_hardest.pth is not in the cache: "
                                              "put the file at "), err
    assert [ln for ln in lines if ln.startswith("error: ")] == [lines[-1]]
