"""The tools end to end on tiny models and data: demo pretrain -> finetune, ScanObjectNN on fixture h5
files, and every bad input as a one-line error with exit code 2."""
import json
import os
import runpy
import subprocess
import sys

import numpy as np
import pytest
import torch

import pointmap
from pointmap.config import load_config
from pointmap.engine import Trainer, load_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, "tools")
CFGS = os.path.join(REPO, "cfgs")
TINY_MODEL = "model.args={embed_dim: 16, layout: MT, num_heads: 2, num_group: 4, group_size: 8, drop_path_rate: 0.0}"
TINY = [TINY_MODEL, "optim.epochs=1", "optim.warmup_epochs=0", "data.batch_size=8", "data.num_workers=0",
        "train.progress=false"]
TINY_PRETRAIN = TINY + ["objective.decoder_depth=1", "objective.decoder_heads=2",
                        "data.options={size: 16, num_points: 64}"]
TINY_FINETUNE = TINY + ["data.options={num_points: 64, samples_per_class: 2}"]


def tool(name, *argv, monkeypatch, capsys, lines=False):
    """Run tools/<name>.py in this process; returns (exit code, last stdout line, stderr). Logs go to
    stdout before the summary line; stderr holds the error line (and nothing of the logs). ``lines``:
    (exit code, every stdout line, every stderr line) instead."""
    monkeypatch.setattr(sys, "argv", [name, *argv])
    monkeypatch.syspath_prepend(TOOLS)
    code = 0
    try:
        runpy.run_path(os.path.join(TOOLS, name), run_name="__main__")
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    if lines:
        return code, out.out.strip().splitlines(), out.err.strip().splitlines()
    return code, out.out.strip().splitlines()[-1] if out.out.strip() else "", out.err


def git_head():
    """``git rev-parse HEAD`` of the checkout the imported pointmap comes from (None outside one)."""
    r = subprocess.run(["git", "-C", os.path.dirname(pointmap.__file__), "rev-parse", "HEAD"], capture_output=True,
                       text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def assert_meta(folder, script, status="finished"):
    """``folder/meta.json`` records the checkout's commit, the versions, the command and how it ended."""
    meta = json.loads(open(os.path.join(folder, "meta.json"), encoding="utf-8").read())
    assert meta["git_commit"] == git_head() and isinstance(meta["git_dirty"], (bool, type(None)))
    assert meta["status"] == status and meta["start"] and meta["end"], meta
    assert meta["torch_version"] == torch.__version__ and meta["pointmap_version"] == pointmap.__version__
    assert meta["python_version"] and meta["device_name"] and meta["world_size"] == 1
    assert script in meta["command"] and meta["command"].startswith("python ")
    return meta


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny MAP pretraining run of the demo config (shared by the finetuning tests)."""
    out = tmp_path_factory.mktemp("exp")
    cfg = load_config(os.path.join(CFGS, "map_demo.yaml"), TINY_PRETRAIN + [f"train.output_dir={out}"])
    res = Trainer(cfg, device="cpu").fit()
    return os.path.join(res["work_dir"], "ckpt-last.pth")


def test_pretrain_tool_writes_run_folder(tmp_path, monkeypatch, capsys):
    code, out, err = tool("pretrain.py", "--cfg", os.path.join(CFGS, "map_demo.yaml"), "--exp-name", "t",
                          "--device", "cpu", *TINY_PRETRAIN, f"train.output_dir={tmp_path}",
                          monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    run = tmp_path / "map_demo" / "t"
    assert {"config.yaml", "log.txt", "ckpt-last.pth", "ckpt-best.pth", "metrics.json", "tb"} <= set(os.listdir(run))
    assert out.startswith("protocol clean | best epoch 1 (train loss") and str(run) in out
    assert_meta(run, "pretrain.py")
    again = tool("pretrain.py", "--cfg", os.path.join(CFGS, "map_demo.yaml"), "--exp-name", "t", "--device", "cpu",
                 *TINY_PRETRAIN, f"train.output_dir={tmp_path}", monkeypatch=monkeypatch, capsys=capsys)
    assert again[0] == 2 and "already holds a run: pass --resume" in again[2]
    resumed = tool("pretrain.py", "--cfg", os.path.join(CFGS, "map_demo.yaml"), "--exp-name", "t", "--device", "cpu",
                   "--resume", *TINY_PRETRAIN, f"train.output_dir={tmp_path}", monkeypatch=monkeypatch, capsys=capsys)
    assert resumed[0] == 0 and resumed[1] == out  # a finished run resumes to the same summary


def test_map_meshes_config_pretrains_on_a_mesh_folder(tmp_path, monkeypatch, capsys):
    import trimesh

    (tmp_path / "meshes" / "box").mkdir(parents=True)
    for i in range(3):
        trimesh.creation.box(extents=(1, 1 + i / 4, 0.5)).export(tmp_path / "meshes" / "box" / f"b{i}.obj")
    trimesh.creation.icosphere(subdivisions=2).export(tmp_path / "meshes" / "ball.ply")
    code, out, err = tool("pretrain.py", "--cfg", os.path.join(CFGS, "map_meshes.yaml"), "--device", "cpu",
                          f"data.root={tmp_path / 'meshes'}", *TINY, "objective.decoder_depth=1",
                          "objective.decoder_heads=2", "data.batch_size=2", f"train.output_dir={tmp_path / 'exp'}",
                          monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert out.startswith("protocol clean | best epoch 1 (train loss") and "map_meshes" in out


def test_image_demo_pretrains_on_digits(tmp_path, monkeypatch, capsys):
    code, out, err = tool("pretrain.py", "--cfg", os.path.join(CFGS, "map_image_demo.yaml"), "--device", "cpu",
                          "model.args={img_size: 16, patch_size: 4, in_chans: 1, embed_dim: 16, layout: MT, num_heads: 2}",
                          "data.options={size: 16}", "objective.decoder_heads=2", "optim.epochs=1", "data.batch_size=128",
                          "train.progress=false", f"train.output_dir={tmp_path}", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert out.startswith("protocol clean | best epoch 1 (val loss")


def test_finetune_loads_pretrained_weights(pretrained, tmp_path):
    cfg = load_config(os.path.join(CFGS, "finetune_demo.yaml"), TINY_FINETUNE + [f"train.output_dir={tmp_path}"])
    cfg.pretrained = pretrained
    trainer = Trainer(cfg, device="cpu")
    trainer.setup()
    src = load_file(pretrained)["model"]
    model = trainer.module.state_dict()
    enc = [k for k in src if k.startswith("encoder.")]
    assert enc and all(torch.equal(model[k], src[k]) for k in enc)
    fresh = Trainer(load_config(os.path.join(CFGS, "finetune_demo.yaml"), TINY_FINETUNE), device="cpu")
    fresh.task.num_classes = 15
    scratch = fresh.task.build_model({}).state_dict()
    assert not torch.equal(scratch["encoder.pos_embed.0.weight"], src["encoder.pos_embed.0.weight"])


def test_finetune_tool_reports_test_accuracy_with_protocol(pretrained, tmp_path, monkeypatch, capsys):
    code, out, err = tool("finetune_modelnet.py", "--cfg", os.path.join(CFGS, "finetune_demo.yaml"),
                          "--ckpt", pretrained, "--device", "cpu", *TINY_FINETUNE, f"train.output_dir={tmp_path}",
                          "eval.vote=2", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert out.startswith("protocol clean | best epoch 1 (val acc") and "| test acc " in out and "test vote acc" in out
    assert_meta(tmp_path / "finetune_demo" / "default", "finetune_modelnet.py")


def test_finetune_tool_seeds_mean_std(pretrained, tmp_path, monkeypatch, capsys):
    code, out, err = tool("finetune_modelnet.py", "--cfg", os.path.join(CFGS, "finetune_demo.yaml"),
                          "--device", "cpu", "--protocol", "peer", *TINY_FINETUNE, f"train.output_dir={tmp_path}",
                          "--seeds", "0", "1", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert out.startswith("protocol peer | 2 seeds [0, 1] | test acc ") and " ± " in out
    assert sorted(os.listdir(tmp_path / "finetune_demo" / "default")) == ["meta.json", "metrics.json", "seed0", "seed1"]
    for folder in ("", "seed0", "seed1"):
        assert_meta(tmp_path / "finetune_demo" / "default" / folder, "finetune_modelnet.py")


def _scanobjectnn_fixture(root, n=30, points=128):
    import h5py

    rng = np.random.default_rng(0)
    for split in ("training", "test"):
        path = root / "ScanObjectNN" / "main_split" / f"{split}_objectdataset_augmentedrot_scale75.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            f["data"] = rng.normal(size=(n, points, 3)).astype(np.float32)
            f["label"] = (np.arange(n) % 15).astype(np.int64)


def test_scanobjectnn_tool_end_to_end_on_fixture_data(pretrained, tmp_path, monkeypatch, capsys):
    _scanobjectnn_fixture(tmp_path / "data")
    code, out, err = tool("finetune_scanobjectnn.py", "--variant", "hardest", "--ckpt", pretrained, "--device", "cpu",
                          *TINY, f"data.root={tmp_path / 'data'}", f"train.output_dir={tmp_path / 'exp'}",
                          "data.train_transforms=[{name: sample, num_points: 64}]",
                          "data.test_transforms=[{name: sample, num_points: 64, method: first}]",
                          monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert "| test acc " in out and os.path.isdir(tmp_path / "exp" / "finetune_scan_hardest" / "default")
    assert_meta(tmp_path / "exp" / "finetune_scan_hardest" / "default", "finetune_scanobjectnn.py")


PEER_FIXTURES = os.path.join(REPO, "tests", "fixtures", "peers")


def _peer_file(path, peer, drop):
    """A reduced peer checkpoint (tests/fixtures/peers) with the tensors whose names contain ``drop`` removed."""
    state = torch.load(os.path.join(PEER_FIXTURES, f"{peer}.pt"), weights_only=True)["state_dict"]
    torch.save({"base_model": {k: v for k, v in state.items() if drop not in k}}, path)
    return str(path)


@pytest.mark.parametrize("case", ["missing_cfg", "unreadable_cfg", "unknown_key", "wrong_type", "bad_ckpt", "misfit_ckpt",
                                  "pointmamba_blocks_missing", "map3d_blocks_missing", "unknown_ckpt", "text_ckpt",
                                  "incomplete_root", "nan_loss", "resume_missing", "model_args_typo",
                                  "meshes_options"])
def test_bad_input_is_one_line_error_exit_2(case, pretrained, tmp_path, monkeypatch, capsys):
    name, cfg, extra = "finetune_modelnet.py", os.path.join(CFGS, "finetune_demo.yaml"), []
    expect = {
        "missing_cfg": "config file not found", "unreadable_cfg": "cannot read config",
        "unknown_key": "did you mean 'optim.lr'", "wrong_type": "'data.batch_size' must be int",
        "bad_ckpt": "'encoder.pos_embed.2.weight' has shape (16, 128) in the checkpoint but (24, 128)",
        "misfit_ckpt": "(pointmap format) into Classifier: 9 of 44 encoder tensors are not in the file (encoder.blocks.0.",
        "pointmamba_blocks_missing": "(pointmamba format) into Classifier: 11 of 46 encoder tensors are not in the file "
                                     "(encoder.blocks.1.norm1.weight",
        "map3d_blocks_missing": "(map3d format) into Classifier: 21 of 121 encoder tensors are not in the file "
                                "(encoder.blocks.3.",
        "unknown_ckpt": "unknown format (1 tensors, first keys backbone.fc.weight); pointmap reads",
        "text_ckpt": "is not a readable torch checkpoint", "incomplete_root": "not found:",
        "nan_loss": "loss is nan at epoch 1, step",
        "resume_missing": "nothing to resume",
        "model_args_typo": "model.args: unknown argument 'embed_dimm' of hybridnet_s (did you mean 'embed_dim'?)",
        "meshes_options": "data.options: unknown argument 'size' of data set 'meshes'",
    }[case]
    if case == "missing_cfg":
        cfg = str(tmp_path / "nope.yaml")
    elif case == "unreadable_cfg":
        cfg = str(tmp_path / "bad.yaml")
        (tmp_path / "bad.yaml").write_text("optim: {lr: [\n")
    elif case == "unknown_key":
        extra = ["optim.lrr=1"]
    elif case == "wrong_type":
        extra = ["data.batch_size=big"]
    elif case == "bad_ckpt":
        extra = ["--ckpt", pretrained, "model.args.embed_dim=24"]
    elif case == "misfit_ckpt":
        extra = ["--ckpt", pretrained, "model.args.layout=TT"]
    elif case == "pointmamba_blocks_missing":
        extra = ["--ckpt", _peer_file(tmp_path / "pm.pth", "pointmamba", "layers.1."), "model.name=pointmamba",
                 "model.args={embed_dim: 48, layout: MM, num_group: 32, group_size: 16}"]
    elif case == "map3d_blocks_missing":
        extra = ["--ckpt", _peer_file(tmp_path / "m.pth", "map3d", "blocks_vit."), "model.name=map3d_official",
                 "model.args={embed_dim: 48, layout: MMMT, num_group: 32, group_size: 16}"]
    elif case == "unknown_ckpt":
        torch.save({"state_dict": {"backbone.fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
        extra = ["--ckpt", str(tmp_path / "other.pth")]
    elif case == "text_ckpt":
        (tmp_path / "notes.pth").write_text("not weights\n")
        extra = ["--ckpt", str(tmp_path / "notes.pth")]
    elif case == "incomplete_root":
        name, cfg = "finetune_scanobjectnn.py", os.path.join(CFGS, "finetune_scan_objbg.yaml")
        extra = [f"data.root={tmp_path}"]
    elif case == "resume_missing":
        extra = ["--resume"]
    elif case == "model_args_typo":
        extra = ["model.args.embed_dimm=128"]
    elif case == "meshes_options":  # the demo's data.options (size) do not fit the mesh folder
        name, cfg = "pretrain.py", os.path.join(CFGS, "map_demo.yaml")
        extra = TINY_PRETRAIN + ["data.name=meshes", f"data.root={tmp_path}"]
    elif case == "nan_loss":
        name, cfg = "pretrain.py", os.path.join(CFGS, "map_demo.yaml")
        extra = TINY_PRETRAIN + ["optim.lr=1e30", "optim.epochs=2"]
    args = ["--cfg", cfg, "--device", "cpu", f"train.output_dir={tmp_path / 'exp'}"]
    args += TINY_FINETUNE if name == "finetune_modelnet.py" else TINY
    code, out, err = tool(name, *args, *extra, monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and not out.startswith("protocol ")
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0] and expect in errors[0], err
    if case.endswith("_ckpt") or case.endswith("_missing"):  # nothing trained, no checkpoint written
        run = tmp_path / "exp" / "finetune_demo" / "default"
        assert not run.exists() or not [f for f in os.listdir(run) if f.endswith(".pth")]
    if case in ("model_args_typo", "meshes_options"):  # rejected before the run folder exists
        assert not (tmp_path / "exp").exists()
    if case == "nan_loss":
        ckpts = [f for f in os.listdir(tmp_path / "exp" / "map_demo" / "default") if f.endswith(".pth")]
        assert "stopped before applying it" in err and (ckpts == [] or "ckpt-last.pth" in err)


def test_help_lists_only_the_flags_a_tool_reads(monkeypatch, capsys):
    monkeypatch.syspath_prepend(TOOLS)
    helps = {}
    for name in ("pretrain.py", "finetune_modelnet.py"):
        monkeypatch.setattr(sys, "argv", [name, "--help"])
        with pytest.raises(SystemExit):
            runpy.run_path(os.path.join(TOOLS, name), run_name="__main__")
        helps[name] = capsys.readouterr().out
    assert "--protocol" not in helps["pretrain.py"] and "--linear-probe" not in helps["pretrain.py"]
    assert "--protocol" in helps["finetune_modelnet.py"] and "--linear-probe" in helps["finetune_modelnet.py"]
    assert "PointMamba" in helps["pretrain.py"]                         # --ckpt names the peer formats


@pytest.mark.slow
def test_the_main_job_repeats_its_figures_in_fresh_processes(tmp_path):
    """The demo's command run twice, each in a fresh process with the environment as it is (no OMP_NUM_THREADS
    set by the test): the same losses to the last bit (train.cpu_threads fixes the thread count)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    losses = []
    for name in ("a", "b"):
        r = subprocess.run([sys.executable, os.path.join(TOOLS, "pretrain.py"), "--cfg", os.path.join(CFGS, "map_demo.yaml"),
                            "--exp-name", name, "data.options={size: 64, num_points: 256}", "optim.epochs=2",
                            f"train.output_dir={tmp_path}", "train.progress=false"], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        history = json.loads((tmp_path / "map_demo" / name / "metrics.json").read_text())["history"]
        losses.append([h["train"]["loss"] for h in history])
    assert losses[0] == losses[1] and len(losses[0]) == 2
