"""Your own files through a trained model: pointmap.predict / embed / segment and tools/predict.py /
tools/embed.py on a folder of .ply .pcd .xyz .npy .obj files with one broken file."""
import json
import os

import numpy as np
import pytest
import torch

import pointmap
from pointmap.data import create_transform
from pointmap.data.io import read_points
from pointmap.engine import export_run
from pointmap.errors import UserError

from .test_export import finetuned  # noqa: F401  (a tiny finetuned demo run)
from .test_tools import tool


def run_tool(name, *argv, monkeypatch, capsys):
    """(exit code, stdout lines, stderr lines) of tools/<name> run in this process."""
    return tool(name, *map(str, argv), monkeypatch=monkeypatch, capsys=capsys, lines=True)


@pytest.fixture(scope="module")
def exported(finetuned, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("share") / "finetune_demo"
    export_run(finetuned, str(out))
    return str(out)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Six readable files of five formats (one in a subfolder), a broken .ply and a file that is no cloud."""
    import trimesh

    d = tmp_path_factory.mktemp("clouds")
    rng = np.random.default_rng(0)
    trimesh.PointCloud(rng.random((300, 3))).export(d / "a.ply")
    pts = rng.random((200, 3))
    (d / "b.pcd").write_text("VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 200\nHEIGHT 1\n"
                             "POINTS 200\nDATA ascii\n" + "\n".join(" ".join(map(str, r)) for r in pts))
    np.savetxt(d / "c.xyz", rng.random((150, 6)))
    np.save(d / "d.npy", rng.random((100, 3)).astype(np.float32))
    trimesh.creation.icosphere().export(d / "e.obj")
    (d / "sub").mkdir()
    np.save(d / "sub" / "f.npy", rng.random((80, 3)))
    (d / "broken.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 90\nproperty float x\n"
                                   b"end_header\n\x00\x01")
    (d / "notes.md").write_text("not a cloud")
    return d


READABLE = ["a.ply", "b.pcd", "c.xyz", "d.npy", "e.obj", "sub/f.npy"]


def test_predict_tool_on_a_folder(exported, folder, tmp_path, monkeypatch, capsys):
    classes = json.loads(open(os.path.join(exported, "config.json")).read())["classes"]
    code, out, err = run_tool("predict.py", "--model", exported, folder, "--topk", 3, "--out", tmp_path / "p.json",
                              monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and "broken.ply" in err[0] and "unreadable .ply" in err[0]
    assert [line.split(" | ")[0] for line in out] == [str(folder / f) for f in READABLE]
    for line in out:
        cells = line.split(" | ")[1:]
        assert len(cells) == 3 and all(c.rsplit(" ", 1)[0] in classes for c in cells)
        probs = [float(c.rsplit(" ", 1)[1]) for c in cells]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.001
    doc = json.loads((tmp_path / "p.json").read_text())
    assert [p["input"] for p in doc["predictions"]] == [str(folder / f) for f in READABLE]
    assert len(doc["errors"]) == 1 and doc["errors"][0]["input"] == str(folder / "broken.ply")

    # the same answers from Python
    files = [str(folder / f) for f in READABLE]
    model = pointmap.load_model(exported)
    assert model.pretrained_cfg["class_names"] == classes and model.pretrained_cfg["num_points"] == 64
    preds = pointmap.predict(model, files, topk=3)
    assert [p["classes"] for p in preds] == [p["classes"] for p in doc["predictions"]]
    assert np.allclose([p["probs"] for p in preds], [p["probs"] for p in doc["predictions"]])

    code, out, err = run_tool("predict.py", "--model", exported, *files[:2], "--out", tmp_path / "p.csv",
                              monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and not err and len(out) == 2
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0].startswith("input,error,class_1,label_1,prob_1") and len(rows) == 3


def test_tools_bad_model_or_no_files_is_one_line_exit_2(exported, tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    for argv, why in (((tmp_path / "nope", tmp_path), "model "), ((exported, tmp_path / "empty"), "no point or mesh files")):
        for name in ("predict.py", "embed.py"):
            extra = ("--out", tmp_path / "f.npy") if name == "embed.py" else ()
            code, out, err = run_tool(name, "--model", argv[0], argv[1], *extra, monkeypatch=monkeypatch, capsys=capsys)
            assert code == 2 and not out and len(err) == 1 and err[0].startswith("error: ") and why in err[0]
    assert not (tmp_path / "f.npy").exists()


def test_predict_is_the_model_on_the_cards_pipeline(exported, folder, finetuned):  # noqa: F811
    model = pointmap.load_model(finetuned)   # a run folder: the card tools/export.py would write
    cfg = model.pretrained_cfg
    path = folder / "c.xyz"
    torch.manual_seed(0)
    x = create_transform(cfg)(torch.from_numpy(read_points(path)))
    with torch.no_grad():
        probs = torch.softmax(model(x[None]), -1)[0]
    top = pointmap.predict(model, [path], topk=2)[0]
    assert top["labels"] == probs.topk(2).indices.tolist() and np.allclose(top["probs"], probs.topk(2).values)
    assert top["classes"] == [cfg["class_names"][i] for i in top["labels"]]
    arr = pointmap.predict(model, read_points(path), topk=2)[0]  # an array gives the same as its file
    assert arr["input"] == "<input 0>" and arr["labels"] == top["labels"]
    voted = pointmap.predict(model, [path], topk=2, vote=4)
    assert voted == pointmap.predict(model, [path], topk=2, vote=4) and voted[0]["probs"] != top["probs"]
    with pytest.raises(UserError, match="two.xyz: 2 points, fewer than the 8 the model needs"):
        pointmap.predict(model, [_two_points(folder)])
    with pytest.raises(UserError, match=r"shape \(2, 3\): expected \(N >= 8, >= 3\)"):
        pointmap.predict(model, [np.zeros((2, 3))])
    assert pointmap.predict(model, [str(folder / "a.ply"), folder / "b.pcd"], topk=1) == pointmap.predict(
        pointmap.load_model(exported), [str(folder / "a.ply"), folder / "b.pcd"], topk=1)  # run folder = its export
    with pytest.raises(UserError, match="predict needs a classifier"):
        pointmap.predict(pointmap.create_model("hybridnet_s", num_classes=0, **_TINY), [path])


def _two_points(folder):
    path = folder.parent / "two.xyz"
    path.write_text("0 0 0\n1 1 1\n")
    return path


_TINY = dict(embed_dim=16, layout="MT", num_heads=2, num_group=4, group_size=8)


def test_embed_tool_one_row_per_file(exported, folder, tmp_path, monkeypatch, capsys):
    files = [folder / f for f in READABLE]
    code, out, err = run_tool("embed.py", "--model", exported, *files, "--out", tmp_path / "feats.npy",
                              monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and not err and out[-1].startswith("6 files x 32 features")
    feats = np.load(tmp_path / "feats.npy")
    assert feats.shape == (6, 32)
    assert (tmp_path / "feats.txt").read_text().splitlines() == [str(f) for f in files]
    model = pointmap.load_model(exported)
    assert np.allclose(feats, pointmap.embed(model, files))
    x = torch.stack([pointmap.engine.inference.prepare_cloud(torch.from_numpy(read_points(f)), model.pretrained_cfg)[0]
                     for f in files[:2]])
    with torch.no_grad():
        assert np.allclose(feats[:2], model.forward_head(model.forward_features(x), pre_logits=True).numpy(), atol=1e-5)
    code, out, err = run_tool("embed.py", "--model", exported, folder, "--out", tmp_path / "all.npy",
                              monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and len(err) == 1 and "broken.ply" in err[0] and np.load(tmp_path / "all.npy").shape == (6, 32)


def test_part_segmentation_tool_writes_coloured_plys(folder, tmp_path, monkeypatch, capsys):
    from safetensors.torch import save_file

    from pointmap.vis import read_ply

    seg = pointmap.create_model("pointmae", num_parts=5, num_categories=2, **_TINY)
    share = tmp_path / "seg"
    share.mkdir()
    save_file(seg.state_dict(), str(share / "model.safetensors"))
    (share / "card.json").write_text(json.dumps({
        "name": "tiny_seg", "preset": "pointmae", "args": _TINY, "head": {"num_parts": 5, "num_categories": 2},
        "weights": "model.safetensors", "classes": ["mug", "lamp"], "num_points": 128,
        "data": {"name": "synthetic_parts"},  # mug: parts 0-1, lamp: parts 2-4
        "transforms": [{"name": "sample", "num_points": 128, "method": "fps"}, {"name": "normalize"}]}))
    code, out, err = run_tool("predict.py", "--model", share, folder / "a.ply", folder / "e.obj", "--category", "lamp",
                              "--out-dir", tmp_path / "parts", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0 and not err and len(out) == 2
    assert out[0].startswith(f"{folder / 'a.ply'} | 300 points | part ")
    points, colors = read_ply(str(tmp_path / "parts" / "a.ply"))
    assert points.shape == (300, 3) and np.allclose(points, read_points(folder / "a.ply"), atol=1e-6)
    model = pointmap.load_model(str(share))
    res = pointmap.segment(model, [folder / "a.ply"], category="lamp")[0]
    assert res["parts"].shape == (300,) and len(np.unique(colors, axis=0)) == len(np.unique(res["parts"]))
    assert model.pretrained_cfg["category_parts"] == {"mug": [0, 1], "lamp": [2, 3, 4]}
    assert set(res["parts"]) <= {2, 3, 4}                       # a lamp's own parts only
    assert set(pointmap.segment(model, [folder / "a.ply"], category="mug")[0]["parts"]) <= {0, 1}
    with pytest.raises(UserError, match="category 'desk' is not one of the model's categories \\(mug, lamp\\)"):
        pointmap.segment(model, [folder / "a.ply"], category="desk")


def _shipped_meshes():
    """Meshes that ship inside other projects' wheels: pybullet_data's bunny, duck and teddy (.obj), pyvista's
    airplane and ant (.ply with faces); [] for a package that is not installed."""
    files = []
    try:
        import pybullet_data
        files += [os.path.join(pybullet_data.getDataPath(), f) for f in ("bunny.obj", "duck.obj", "teddy2_VHACD_CHs.obj")]
    except ImportError:
        pass
    try:
        import pyvista.examples
        files += [os.path.join(os.path.dirname(pyvista.examples.__file__), f) for f in ("airplane.ply", "ant.ply")]
    except ImportError:
        pass
    return [f for f in files if os.path.isfile(f)]


def test_predict_on_meshes_no_one_here_wrote(exported, tmp_path, monkeypatch, capsys):
    files = _shipped_meshes()
    if not files:
        pytest.skip("neither pybullet nor pyvista is installed (pip install pybullet pyvista)")
    classes = json.loads(open(os.path.join(exported, "config.json")).read())["classes"]
    code, out, err = run_tool("predict.py", "--model", exported, *files, "--topk", 2, monkeypatch=monkeypatch,
                              capsys=capsys)
    assert code == 0 and not err and [line.split(" | ")[0] for line in out] == files
    assert all(c.rsplit(" ", 1)[0] in classes for line in out for c in line.split(" | ")[1:])
    for f in files:  # surfaces sampled, not vertices: as many points as asked, every one finite
        assert read_points(f, mesh_points=777).shape == (777, 3)


def test_the_page_quotes_what_tools_own_clouds_sh_wrote():
    """docs/own_clouds.md shows the outputs bash tools/own_clouds.sh wrote under docs/own_clouds/, verbatim."""
    import re

    docs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
    page = open(os.path.join(docs, "own_clouds.md"), encoding="utf-8").read()
    blocks = [b.strip() for b in re.findall(r"^```text\n(.*?)^```", page, flags=re.M | re.S)]
    files = ("predict.txt", "predict.err", "embed.txt", "segment.txt")
    for name in files:
        text = open(os.path.join(docs, "own_clouds", name), encoding="utf-8").read().strip()
        assert text in blocks, f"docs/own_clouds.md does not show docs/own_clouds/{name} as written"
    assert len(blocks) == len(files)
    lines = open(os.path.join(docs, "own_clouds", "predict.txt"), encoding="utf-8").read().strip().splitlines()
    doc = json.load(open(os.path.join(docs, "own_clouds", "predict.json"), encoding="utf-8"))
    assert lines[-1] == "exit 2" and len(doc["errors"]) == 1 and "broken.ply" in doc["errors"][0]["input"]
    assert [line.split(" | ")[0] for line in lines[:-1]] == [p["input"] for p in doc["predictions"]]
    assert [[c.rsplit(" ", 1)[0] for c in line.split(" | ")[1:]] for line in lines[:-1]] == [
        p["classes"] for p in doc["predictions"]]
    assert [[float(c.rsplit(" ", 1)[1]) for c in line.split(" | ")[1:]] for line in lines[:-1]] == [
        [round(x, 3) for x in p["probs"]] for p in doc["predictions"]]
