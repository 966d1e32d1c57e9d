"""tools/export.py: a trained demo run -> model.safetensors + config.json + README.md + config.yaml -> create_model(...,
pretrained=DIR) with the same logits; --ckpt DIR and --eval DIR in the tools; bad inputs as one line, exit 2,
nothing written."""
import json
import os

import pytest
import torch

import pointmap
from pointmap.config import load_config
from pointmap.engine import Trainer, load_file
from pointmap.engine.tasks import pretrainer_args
from pointmap.models import load_pretrained

from .test_tools import CFGS, TINY_FINETUNE, git_head, pretrained, tool  # noqa: F401


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A tiny finetuning run of the demo config: its folder."""
    out = tmp_path_factory.mktemp("exp")
    cfg = load_config(os.path.join(CFGS, "finetune_demo.yaml"), TINY_FINETUNE + [f"train.output_dir={out}"])
    return Trainer(cfg, device="cpu").fit()["work_dir"]


def _export(src, out, monkeypatch, capsys, *extra):
    return tool("export.py", "--ckpt", str(src), "--out", str(out), *extra, monkeypatch=monkeypatch, capsys=capsys)


def test_export_round_trip_gives_the_same_logits(finetuned, tmp_path, monkeypatch, capsys):
    code, out, err = _export(finetuned, tmp_path / "share", monkeypatch, capsys)
    assert code == 0, err
    assert out.startswith("hybridnet_s (num_classes=15) | test acc ") and "protocol clean" in out
    assert sorted(os.listdir(tmp_path / "share")) == ["README.md", "config.json", "config.yaml", "model.safetensors"]
    card = json.loads((tmp_path / "share" / "config.json").read_text())
    metrics = json.loads(open(os.path.join(finetuned, "metrics.json")).read())
    ckpt = load_file(os.path.join(finetuned, "ckpt-best.pth"))
    cfg = ckpt["config"]
    assert card["preset"] == "hybridnet_s" and card["args"] == cfg["model"]["args"]
    assert card["head"] == {"num_classes": 15}
    assert card["transforms"] == cfg["data"]["test_transforms"] and card["num_points"] == 64
    assert card["classes"][:3] == ["sphere", "ellipsoid", "box"] and len(card["classes"]) == 15
    assert card["metrics"]["test"] == metrics["test"] and card["protocol"] == "clean"
    assert card["source"] == os.path.join(finetuned, "ckpt-best.pth") and card["format"] == "pointmap"
    assert card["provenance"]["trained"]["git_commit"] == git_head() == card["provenance"]["exported"]["git_commit"]
    assert card["provenance"]["exported"]["pointmap_version"] == pointmap.__version__

    model = pointmap.create_model("hybridnet_s", pretrained=str(tmp_path / "share")).eval()
    trained = pointmap.create_model("hybridnet_s", num_classes=15, **cfg["model"]["args"])
    trained.load_state_dict(ckpt["model"])
    x = torch.rand(3, 64, 3)
    assert torch.equal(model(x), trained.eval()(x))
    with pytest.raises(ValueError, match="holds weights of preset 'hybridnet_s', not 'pointmae'"):
        pointmap.create_model("pointmae", pretrained=str(tmp_path / "share"))


def test_an_export_is_a_ckpt_for_the_tools(finetuned, tmp_path, monkeypatch, capsys):
    """--eval DIR reproduces the run's test metrics; --ckpt DIR starts a finetuning run from it."""
    assert _export(finetuned, tmp_path / "share", monkeypatch, capsys)[0] == 0
    args = ["--cfg", os.path.join(CFGS, "finetune_demo.yaml"), "--device", "cpu", *TINY_FINETUNE,
            f"train.output_dir={tmp_path / 'exp'}"]
    code, out, err = tool("finetune_modelnet.py", *args, "--eval", "--ckpt", str(tmp_path / "share"),
                          monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    scored = json.loads((tmp_path / "exp" / "finetune_demo" / "default" / "eval" / "metrics.json").read_text())
    assert scored["test"] == json.loads(open(os.path.join(finetuned, "metrics.json")).read())["test"]
    code, out, err = tool("finetune_modelnet.py", *args, "--ckpt", str(tmp_path / "share"), "--exp-name", "again",
                          monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err


def test_a_pretraining_run_exports_its_whole_pretrainer(pretrained, tmp_path, monkeypatch, capsys):  # noqa: F811
    code, out, err = _export(pretrained, tmp_path / "pre", monkeypatch, capsys)
    assert code == 0, err
    ckpt = load_file(pretrained)
    from pointmap.config import config_from_dict

    cfg = config_from_dict(ckpt["config"])
    card = pointmap.models.read_card(str(tmp_path / "pre"))
    assert card.head == {} and card.pretrainer == pretrainer_args(cfg) and card.classes is None
    assert card.transforms == [{"name": "normalize"}] and card.protocol is None   # the train transforms, unaugmented
    pre = pointmap.create_pretrainer(card.preset, **card.pretrainer, **card.args)
    load_pretrained(pre, str(tmp_path / "pre"), whole=True)
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in pre.state_dict().items())
    encoder = pointmap.create_model(card.preset, pretrained=str(tmp_path / "pre"))  # the encoder alone
    assert all(torch.equal(v, ckpt["model"]["encoder." + k]) for k, v in encoder.state_dict().items())
    code, out, err = tool("visualize.py", "--ckpt", str(tmp_path / "pre"), "--dataset", "synthetic_pretrain",
                          "--out", str(tmp_path / "x.png"), "--backend", "matplotlib", "--size", "480x150",
                          monkeypatch=monkeypatch, capsys=capsys)          # its config.yaml travels with it
    assert code == 0, err


def _leftovers(folder):
    return [f for f in os.listdir(folder) if f.startswith(".tmp-")]


@pytest.mark.parametrize("case", ["no_run", "empty_folder", "text_file", "peer_file", "taken", "changed"])
def test_bad_inputs_are_one_line_and_write_nothing(case, finetuned, tmp_path, monkeypatch, capsys):
    src, out, expect = tmp_path / "nope", tmp_path / "share", {
        "no_run": "no such run folder or checkpoint: ", "empty_folder": "holds no ckpt-best.pth or ckpt-last.pth",
        "text_file": "is not a readable torch checkpoint", "taken": "already holds files: pass --overwrite",
        "peer_file": "is not a pointmap run's checkpoint (no 'model' and 'config' entries)",
        "changed": "its sha256 is not the"}[case]
    if case == "empty_folder":
        src.mkdir()
    elif case == "text_file":
        src.write_text("not weights\n")
    elif case == "peer_file":
        torch.save({"base_model": {"blocks.blocks.0.attn.qkv.weight": torch.zeros(3, 1)}}, src)
    elif case in ("taken", "changed"):
        src = finetuned
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
    if case == "changed":
        assert _export(src, out, monkeypatch, capsys, "--overwrite")[0] == 0
        assert sorted(os.listdir(out)) == ["README.md", "config.json", "config.yaml", "model.safetensors"]  # notes.txt replaced
        with open(out / "model.safetensors", "r+b") as f:
            f.seek(-4, 2)
            f.write(b"\1\2\3\4")
        with pytest.raises(ValueError, match=expect):
            pointmap.create_model("hybridnet_s", pretrained=str(out))
        return
    code, stdout, err = _export(src, out, monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], err
    assert (sorted(os.listdir(out)) == ["notes.txt"]) if case == "taken" else not out.exists()
    assert _leftovers(tmp_path) == []
