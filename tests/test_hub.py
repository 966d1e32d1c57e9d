"""hf-hub: names through huggingface_hub against the Hub of tests/_hub.py on 127.0.0.1 (HF_ENDPOINT): an
export loads by name, at a revision, offline from the cache; a missing repository, revision or file is one
line; an export's README.md is a Hub model card; --push-to-hub uploads the folder."""
import glob
import os
import re

import pytest
import torch
import yaml

import pointmap
from pointmap.download import DownloadError
from pointmap.errors import UserError
from pointmap.hub import parse_hub_spec

from ._hub import hub  # noqa: F401  (fixture)
from .test_export import _export, finetuned  # noqa: F401
from .test_tools import pretrained, tool  # noqa: F401


def _folder_files(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


@pytest.fixture(scope="module")
def shared(finetuned, tmp_path_factory):  # noqa: F811
    """An export of the tiny finetuning run, and the same run's export with its last layer changed."""
    from pointmap.engine import export_run, load_file

    out = tmp_path_factory.mktemp("exports")
    export_run(finetuned, str(out / "a"))
    raw = load_file(os.path.join(finetuned, "ckpt-best.pth"))
    last = [k for k in raw["model"] if k.endswith("weight")][-1]
    raw["model"][last] = raw["model"][last] + 1.0
    torch.save(raw, out / "ckpt-best.pth")
    export_run(str(out / "ckpt-best.pth"), str(out / "b"))
    return out / "a", out / "b"


def test_parse_hub_spec():
    assert parse_hub_spec("hf-hub:me/map-demo") == ("me/map-demo", None, None)
    assert parse_hub_spec("hf-hub:me/map-demo@v1.0") == ("me/map-demo", None, "v1.0")
    assert parse_hub_spec("hf-hub:hanx/Mamba3D/a_b/ckpt-best.pth") == ("hanx/Mamba3D", "a_b/ckpt-best.pth", None)
    for bad in ("hf-hub:me", "hf-hub:me/", "hf-hub:/x", "hf-hub:me/x@", "hf-hub:me/x/../y"):
        with pytest.raises(UserError, match="is not a Hub name"):
            parse_hub_spec(bad)


def test_an_export_loads_by_name_at_a_revision_and_offline_from_the_cache(shared, hub, monkeypatch):  # noqa: F811
    a, b = shared
    hub.add_hf("me/tiny", _folder_files(a), revision="v1")
    commit = hub.add_hf("me/tiny", _folder_files(b), revision="main")
    x = torch.rand(2, 64, 3)
    want_a = pointmap.create_model("hybridnet_s", pretrained=str(a)).eval()(x)
    want_b = pointmap.create_model("hybridnet_s", pretrained=str(b)).eval()(x)
    assert not torch.equal(want_a, want_b)
    for spec, want in (("hf-hub:me/tiny@v1", want_a), ("hf-hub:me/tiny", want_b), (f"hf-hub:me/tiny@{commit}", want_b)):
        model = pointmap.create_model("hybridnet_s", pretrained=spec).eval()
        assert torch.equal(model(x), want), spec
    assert os.listdir(os.environ["HF_HUB_CACHE"]) and any("models--me--tiny" in d for d in os.listdir(os.environ["HF_HUB_CACHE"]))

    hub.close()  # no server, offline: the cache answers
    gets = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert torch.equal(pointmap.create_model("hybridnet_s", pretrained="hf-hub:me/tiny@v1").eval()(x), want_a)
    assert len(hub.requests) == gets
    with pytest.raises(DownloadError, match=r"^hf-hub:me/other: config.json is not in the Hugging Face cache and "
                                            r"offline \(POINTMAP_OFFLINE / HF_HUB_OFFLINE\)$"):
        pointmap.create_model("hybridnet_s", pretrained="hf-hub:me/other")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("POINTMAP_OFFLINE", "1")  # pointmap's own switch keeps the Hub offline too
    assert torch.equal(pointmap.create_model("hybridnet_s", pretrained="hf-hub:me/tiny@v1").eval()(x), want_a)


@pytest.mark.parametrize("spec, message", [
    ("hf-hub:me/nothing", "hf-hub:me/nothing: no such model repository on http://127.0.0.1:"),
    ("hf-hub:me/tiny@v9", "hf-hub:me/tiny@v9: me/tiny has no revision 'v9' on http://127.0.0.1:"),
    ("hf-hub:me/empty", "hf-hub:me/empty: the repository has no file 'config.json'"),
    ("hf-hub:me/tiny/model.safetensors", "name the repository of an export (hf-hub:owner/repo[@revision])"),
])
def test_a_missing_repository_revision_or_file_is_one_line(spec, message, shared, hub, tmp_path, capsys,  # noqa: F811
                                                          monkeypatch):
    hub.add_hf("me/tiny", _folder_files(shared[0]))
    hub.add_hf("me/empty", {"notes.txt": b"nothing\n"})
    with pytest.raises(UserError) as info:
        pointmap.create_model("hybridnet_s", pretrained=spec)
    assert message in str(info.value) and "\n" not in str(info.value)
    code, _, err = tool("finetune_modelnet.py", "--cfg", "finetune_demo", "--ckpt", spec, "--device", "cpu",
                        f"train.output_dir={tmp_path}", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 2 and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not glob.glob(str(tmp_path / "**" / "ckpt-*.pth"), recursive=True)  # no run trained


def test_an_export_readme_is_a_hub_model_card(shared):
    a, _ = shared
    text = (a / "README.md").read_text()
    m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    meta = yaml.safe_load(m.group(1))
    assert meta["library_name"] == "pointmap" and meta["license"] == "apache-2.0"
    assert {"pointmap", "point-cloud", "hybridnet_s", "classification"} <= set(meta["tags"])
    assert meta["datasets"] == ["synthetic"] and "acc" in meta["metrics"]
    assert 'pointmap.create_model("hybridnet_s", pretrained="FOLDER")' in text
    card = pointmap.models.read_card(str(a))
    assert card.licence == "apache-2.0" and f"| test acc | {card.metrics['test']['acc']:.2f} |" in text


def test_push_to_hub_uploads_the_folder_with_huggingface_hub(finetuned, tmp_path, monkeypatch, capsys):  # noqa: F811
    """The upload itself is huggingface_hub's (its commit API is not served here): what it is asked to do."""
    import huggingface_hub

    calls = []

    class Info:
        commit_url = "http://127.0.0.1/me/demo/commit/abc"

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(
        ("create", self.endpoint, repo_id, kw["exist_ok"], kw["private"])))
    def upload_folder(self, folder_path, repo_id, **kw):
        readme = open(os.path.join(folder_path, "README.md")).read()
        calls.append(("upload", repo_id, sorted(os.listdir(folder_path)), readme))
        return Info()

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    code, out, err = _export(finetuned, tmp_path / "share", monkeypatch, capsys, "--push-to-hub", "me/demo",
                             "--licence", "mit")
    assert code == 0, err
    assert out == "uploaded to hf-hub:me/demo | http://127.0.0.1/me/demo/commit/abc"
    assert calls[0] == ("create", "http://127.0.0.1:9", "me/demo", True, False)
    assert calls[1][:3] == ("upload", "me/demo", ["README.md", "config.json", "config.yaml", "model.safetensors"])
    assert 'pretrained="hf-hub:me/demo")' in calls[1][3] and "license: mit" in calls[1][3]


def test_visualize_an_export_on_the_hub_with_its_own_config(pretrained, hub, tmp_path, monkeypatch, capsys):  # noqa: F811
    from pointmap.engine import export_run

    export_run(os.path.dirname(pretrained), str(tmp_path / "pre"))
    hub.add_hf("me/pre", _folder_files(tmp_path / "pre"))
    code, out, err = tool("visualize.py", "--ckpt", "hf-hub:me/pre", "--dataset", "synthetic_pretrain",
                          "--out", str(tmp_path / "x.png"), "--backend", "matplotlib", "--size", "480x150",
                          monkeypatch=monkeypatch, capsys=capsys)  # no --cfg: the export's config.yaml
    assert code == 0, err
    assert "Chamfer L2" in out and (tmp_path / "x.png").is_file()
