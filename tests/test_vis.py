"""pointmap.vis: panels, both renderers, the fallback, PLY files, mesh input, the image grid, the tool, the hook."""
import importlib
import os
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import pointmap
from pointmap.config import config_from_dict, config_to_dict
from pointmap.models import patchify
from pointmap.vis import (ROLE_COLORS, image_grid, image_reconstructions, load_input, read_ply, read_points_file,
                          reconstruction_figure, reconstruction_panels, run_pretrainer, unpatchify)
from pointmap.vis import render as render_mod

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(embed_dim=32, layout="MT", num_heads=2, num_group=16, group_size=16, drop_path_rate=0.0)
SIZE = (480, 150)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return pointmap.create_pretrainer("hybridnet_s", decoder_depth=1, decoder_heads=2, **TINY).eval()


@pytest.fixture(scope="module")
def cloud():
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.normalize(torch.randn(256, 3, generator=g), dim=-1)  # points on a sphere


def role_pixels(image, role, tol=3):
    """How many pixels have exactly (up to ``tol``) the role's colour."""
    rgb = np.round(np.asarray(ROLE_COLORS[role]) * 255)
    return int((np.abs(image.astype(int) - rgb).max(-1) <= tol).sum())


def check_picture(path, size):
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (size[1], size[0], 3)
    assert image.astype(float).var() > 100.0, "blank picture"
    for role in ROLE_COLORS:
        assert role_pixels(image, role) >= 20, f"no {role} colour in the picture"
    return image


def test_panels_hold_each_role(model, cloud):
    out = run_pretrainer(model, cloud[None], seed=3)
    panels = {p.name: p for p in reconstruction_panels(cloud[None], out)}
    k, m = 16, int(out.mask.sum())
    assert len(panels["input"].points) == 256
    assert len(panels["visible"].points) == (16 - m) * k and len(panels["masked"].points) == m * k
    assert len(panels["reconstruction"].points) == 16 * k
    assert np.allclose(panels["masked"].colors, ROLE_COLORS["masked"])
    assert np.allclose(panels["reconstruction"].colors[-m * k:], ROLE_COLORS["predicted"])
    again = run_pretrainer(model, cloud[None], seed=3)  # same seed, same mask
    assert torch.equal(out.mask, again.mask) and torch.equal(out.pred, again.pred)
    by_patch = reconstruction_panels(cloud[None], out, color_by="patch")
    assert np.array_equal(by_patch[2].colors, by_patch[3].colors[-m * k:])  # truth and guess share hues
    assert len(np.unique(by_patch[2].colors, axis=0)) == m


def test_matplotlib_picture(model, cloud, tmp_path):
    fig = reconstruction_figure(model, cloud, size=SIZE, backend="matplotlib")
    fig.save(str(tmp_path / "r.png"))
    check_picture(tmp_path / "r.png", SIZE)
    assert f"{fig.chamfer:.4g}" in fig.caption and fig.num_masked == 8 and fig.num_patches == 16


def test_open3d_picture(model, cloud, tmp_path):
    problem = render_mod.open3d_problem()
    if problem:
        pytest.skip(problem)
    try:
        fig = reconstruction_figure(model, cloud, size=SIZE, backend="open3d")
    except RuntimeError as e:
        pytest.skip(f"Open3D cannot render on this machine: {e}")
    fig.save(str(tmp_path / "r.png"))
    check_picture(tmp_path / "r.png", SIZE)


def test_fallback_without_open3d_draws_the_same_panels(model, cloud, monkeypatch):
    import logging

    monkeypatch.setitem(sys.modules, "open3d", None)  # import open3d -> ImportError
    monkeypatch.setattr(render_mod, "_O3D_IMPORT_PROBLEM", "unchecked")
    monkeypatch.setattr(render_mod, "_WARNED", set())
    monkeypatch.delenv("POINTMAP_VIS_BACKEND", raising=False)
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    render_mod.logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once, as a log line, not also as a warning
            auto = reconstruction_figure(model, cloud, size=SIZE, backend="auto")
            reconstruction_figure(model, cloud, size=SIZE, backend="auto")
    finally:
        render_mod.logger.removeHandler(handler)
    said = [r.getMessage() for r in records if "matplotlib instead of Open3D" in r.getMessage()]
    assert len(said) == 1 and "open3d cannot be imported" in said[0]
    direct = reconstruction_figure(model, cloud, size=SIZE, backend="matplotlib")
    assert np.array_equal(auto.image, direct.image)
    for role in ROLE_COLORS:
        assert role_pixels(auto.image, role) >= 20
    with pytest.raises(RuntimeError, match="open3d cannot be imported"):
        reconstruction_figure(model, cloud, size=SIZE, backend="open3d")


def test_ply_files_load_back(model, cloud, tmp_path):
    import trimesh

    fig = reconstruction_figure(model, cloud, size=SIZE, backend="matplotlib")
    written = fig.save(ply_dir=str(tmp_path / "ply"))
    assert sorted(os.listdir(tmp_path / "ply")) == ["input.ply", "masked.ply", "reconstruction.ply", "visible.ply"]
    for panel in fig.panels:
        pts, colors = read_ply(written[panel.name])
        assert np.array_equal(pts, panel.points)
        assert np.abs(colors - panel.colors).max() <= 1 / 255 + 1e-6
        other = trimesh.load(written[panel.name])  # an independent reader
        assert len(other.vertices) == len(panel.points)
        assert np.allclose(other.vertices, panel.points, atol=1e-6)


@pytest.mark.parametrize("ext", [".obj", ".off", ".ply"])
def test_mesh_input_is_sampled_and_rendered(model, tmp_path, ext):
    import trimesh

    mesh = trimesh.creation.box(extents=(2.0, 1.0, 0.5))
    path = tmp_path / f"box{ext}"
    mesh.export(path)
    pts = load_input(path, 300, seed=0)
    assert pts.shape == (300, 3)
    assert torch.allclose(pts.norm(dim=-1).max(), torch.tensor(1.0), atol=1e-5)
    raw = read_points_file(path, 300, seed=0)  # before normalization: on the box's faces, not inside
    assert np.allclose(np.abs(raw / [1.0, 0.5, 0.25]).max(-1), 1.0, atol=1e-5)
    fig = reconstruction_figure(model, pts, size=SIZE, backend="matplotlib")
    assert fig.image.shape == (SIZE[1], SIZE[0], 3) and fig.image.astype(float).var() > 100


def test_point_files(tmp_path, cloud):
    arr = cloud.numpy()
    np.save(tmp_path / "a.npy", arr)
    np.savetxt(tmp_path / "a.txt", arr, delimiter=",")
    np.savetxt(tmp_path / "a.xyz", np.concatenate([arr, arr], 1))  # extra columns (normals) are dropped
    for name in ("a.npy", "a.txt", "a.xyz"):
        assert load_input(tmp_path / name, 128).shape == (128, 3)
    assert load_input(tmp_path / "a.npy", 400).shape == (400, 3)  # padded with repeats
    with pytest.raises(ValueError, match="unknown extension"):
        load_input(tmp_path / "a.foo", 128)
    np.save(tmp_path / "bad.npy", arr[:, :2])
    with pytest.raises(ValueError, match=r"shape \(256, 2\)"):
        load_input(tmp_path / "bad.npy", 128)


def test_image_grid():
    torch.manual_seed(0)
    model = pointmap.create_pretrainer("hybridnet_image_s", img_size=16, patch_size=4, in_chans=1, embed_dim=32,
                                       layout="MT", num_heads=2, decoder_depth=1, decoder_heads=2).eval()
    images = torch.rand(3, 1, 16, 16)
    p = torch.rand(2, 16, 48)
    assert torch.equal(patchify(unpatchify(p, 4, 3, (4, 4)), 4), p)
    original, masked, recon, mse = image_reconstructions(model, images, seed=1)
    keep = masked != 0.5
    assert torch.equal(original, images) and keep.any() and (~keep).any()
    assert torch.allclose(recon[keep], images[keep])  # visible pixels are shown as they are
    grid = image_grid(model, images, seed=1, cell=32, pad=4)
    assert grid.shape == (34 + 3 * 36 + 4, 3 * 32 + 16, 3) and grid.astype(float).var() > 100 and mse > 0


# ----------------------------------------------------------------------------- the tool


def tiny_config(**data):
    return config_from_dict({
        "task": "pretrain", "name": "tiny_vis",
        "model": {"name": "hybridnet_s", "args": TINY},
        "objective": {"decoder_depth": 1, "decoder_heads": 2},
        "data": {"name": "synthetic_pretrain", "options": {"size": 8, "num_points": 128}, "test_split": None,
                 "batch_size": 4, **data},
        "optim": {"epochs": 2, "warmup_epochs": 1},
        "train": {"progress": False},
    })


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("ckpt") / "ckpt-last.pth"
    torch.save({"model": model.state_dict(), "config": config_to_dict(tiny_config())}, path)
    return str(path)


@pytest.fixture(scope="module")
def tool():
    sys.path.insert(0, os.path.join(REPO, "tools"))
    try:
        return importlib.import_module("visualize")
    finally:
        sys.path.remove(os.path.join(REPO, "tools"))


def test_tool_draws_a_dataset_item(tool, ckpt, tmp_path, capsys):
    out = tmp_path / "recon.png"
    tool.main(["--ckpt", ckpt, "--dataset", "synthetic_pretrain", "--split", "val", "--index", "2", "--out", str(out),
               "--ply", str(tmp_path / "ply"), "--size", "480x150", "--backend", "matplotlib", "--mask-ratio", "0.75"])
    line = capsys.readouterr().out
    assert "synthetic_pretrain/val[2] | Chamfer L2" in line
    check_picture(out, SIZE)
    _, colors = read_ply(str(tmp_path / "ply" / "masked.ply"))
    assert len(colors) == 12 * 16  # int(0.75 * 16) patches of 16 points


@pytest.mark.parametrize("make_input, message", [
    (lambda d: d / "missing.npy", "input file not found"),
    (lambda d: (d / "a.foo").write_text("1 2 3") and d / "a.foo", "unknown extension"),
    (lambda d: np.save(d / "flat.npy", np.zeros((10, 2))) or d / "flat.npy", "shape (10, 2)"),
])
def test_tool_bad_input_exits_2_and_writes_nothing(tool, ckpt, tmp_path, capsys, make_input, message):
    src = make_input(tmp_path)
    out = tmp_path / "out" / "x.png"
    with pytest.raises(SystemExit) as exc:
        tool.main(["--ckpt", ckpt, "--input", str(src), "--out", str(out), "--ply", str(tmp_path / "ply"),
                   "--backend", "matplotlib"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists() and not (tmp_path / "ply").exists()


# ----------------------------------------------------------------------------- the training hook


def test_vis_hook_writes_png_and_tensorboard_image(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pointmap.engine import Trainer

    cfg = tiny_config()
    cfg.hooks = [{"name": "vis", "every": 1, "backend": "matplotlib", "size": [400, 120]}]
    Trainer(cfg, work_dir=str(tmp_path), device="cpu").fit()
    for epoch in (1, 2):
        image = np.asarray(Image.open(tmp_path / "vis" / f"epoch_{epoch:03d}.png").convert("RGB"))
        assert image.shape == (120, 400, 3) and role_pixels(image, "predicted") > 0
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0}).Reload()
    shown = events.Images("vis/reconstruction")
    assert [e.step for e in shown] == [1, 2] and (shown[0].width, shown[0].height) == (400, 120)


def test_tool_draws_an_image_grid(tool, tmp_path, capsys):
    torch.manual_seed(0)
    args = dict(img_size=16, patch_size=4, in_chans=1, embed_dim=32, layout="MT", num_heads=2)
    model = pointmap.create_pretrainer("hybridnet_image_s", decoder_depth=1, decoder_heads=2, **args)
    cfg = config_from_dict({"task": "pretrain", "model": {"name": "hybridnet_image_s", "args": args},
                            "objective": {"decoder_depth": 1, "decoder_heads": 2, "loss": "mse"},
                            "data": {"name": "digits", "options": {"size": 16}, "test_split": "val"}})
    path = tmp_path / "img.pth"
    torch.save({"model": model.state_dict(), "config": config_to_dict(cfg)}, path)
    out = tmp_path / "grid.png"
    tool.main(["--ckpt", str(path), "--out", str(out), "--num-images", "2"])
    assert "2 images" in capsys.readouterr().out
    grid = np.asarray(Image.open(out).convert("RGB"))
    assert grid.shape == (34 + 2 * 100 + 4, 3 * 96 + 16, 3) and grid.astype(float).var() > 100
