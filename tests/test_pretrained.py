"""The registry of published weights (pointmap/models/pretrained.yaml): every file the peers link, each entry
in agreement with its recipe in cfgs/ and with the peer's key names at full size, and each one downloaded
from a server on 127.0.0.1 in its peer's layout and loaded whole by create_model(..., pretrained=...)."""
import os
import re

import pytest
import torch

import pointmap
from pointmap.hub import parse_hub_spec
from pointmap.config import load_config
from pointmap.data import label_space
from pointmap.engine import build_task, input_transforms
from pointmap.engine.tasks import pretrainer_args
from pointmap.errors import UserError
from pointmap.models import CheckpointError, load_pretrained, load_state, objective_config, pretrained_card

from ._hub import PEERS, TINY, hub, key_table, peer_bytes, serve_entry, tiny_model  # noqa: F401

CFGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cfgs")
# the point-cloud peers' files; the MAP 2D release's and Mamba-Reg's (format map2d): tests/test_map2d.py
ENTRIES = [n for n in pointmap.list_pretrained() if pretrained_card(n).format != "map2d"]
PEER_NAMES = {"Point-MAE": "pointmae", "PointMamba": "pointmamba", "Mamba3D": "mamba3d"}


def _published():
    """Rows of published_checkpoints.md: (peer, README line, reported number or None, URL)."""
    rows, peer = [], None
    for line in (PEERS / "published_checkpoints.md").read_text().splitlines():
        m = re.match(r"\| (?:([\w-]+) )?\((?:README\.md)?:(\d+)\) \| [^|]+ \| ([^|]+) \| (https://\S+) \|$", line)
        if m:
            peer = m.group(1) or peer
            number = re.match(r"([\d.]+) %", m.group(3).strip())
            rows.append((PEER_NAMES[peer], int(m.group(2)), float(number.group(1)) if number else None, m.group(4)))
    return rows


def _link(card) -> str:
    """The link a peer's README gives for an entry's file (a Hub-hosted one: its resolve URL at the revision)."""
    if not card.url.startswith("hf-hub:"):
        return card.url
    repo, file, _ = parse_hub_spec(card.url)
    return f"https://huggingface.co/{repo}/resolve/{card.revision}/{file}"


def test_the_table_is_every_published_file():
    rows = _published()
    assert len(rows) == len(ENTRIES) == 17
    by_url = {_link(pretrained_card(name)): pretrained_card(name) for name in ENTRIES}
    assert sorted(by_url) == sorted(url for *_, url in rows)
    for peer, line, number, url in rows:
        card = by_url[url]
        assert card.name.startswith(peer + ".") and card.preset == peer
        assert card.source.endswith(f"README.md:{line}")
        reported = list(card.metrics.get("reported", {}).values())
        assert reported == ([number] if number is not None else []), card.name
        assert card.licence == ("MIT (the repository's LICENSE)" if peer == "pointmae" else "not stated")


def test_one_default_per_preset_and_the_filter():
    defaults = sorted(n for n in ENTRIES if pretrained_card(n).default)
    assert defaults == ["mamba3d.shapenet55_pointmae", "pointmae.shapenet55", "pointmamba.shapenet55"]
    assert len(pointmap.list_pretrained("pointmae.*")) == 7 and len(pointmap.list_pretrained("map2d.*")) == 5
    hardest = ["mamba3d.scan_hardest_pointmae", "mamba3d.scan_hardest_scratch", "pointmae.scan_hardest",
               "pointmamba.scan_hardest"]
    assert pointmap.list_pretrained("*scan_hardest*") == hardest


@pytest.mark.parametrize("name", ENTRIES)
def test_an_entry_agrees_with_its_recipe(name):
    """Preset, arguments, head, pretrainer, data, transforms and protocol are those of cfgs/<config>."""
    card = pretrained_card(name)
    cfg = load_config(os.path.join(CFGS, card.config))
    assert card.preset == cfg.model.name and card.args == cfg.model.args
    assert card.data == {"name": cfg.data.name, **({"options": cfg.data.options} if cfg.data.options else {})}
    transforms, points = input_transforms(cfg)
    assert card.transforms == transforms and points in (None, card.num_points)
    if cfg.task == "pretrain":
        # the same objective, whether a setting at its default is written out (the recipe's) or not (the card's)
        assert objective_config(**card.pretrainer) == objective_config(**pretrainer_args(cfg))
        assert card.head == {} and card.protocol is None
        assert card.classes is None and card.metrics == {}
        return
    assert card.pretrainer is None and card.protocol == cfg.eval.protocol == "peer"
    space = label_space(cfg.data.name, cfg.data.options)
    if cfg.task == "partseg":
        assert card.head == {"num_parts": space["num_parts"], "num_categories": space["num_categories"]}
        assert len(card.class_names) == space["num_categories"]
    else:
        assert card.head == {"num_classes": space["num_classes"]} and len(card.class_names) == space["num_classes"]
    build_task(cfg)  # the recipe validates


@pytest.mark.parametrize("name", ENTRIES)
def test_the_peers_full_size_file_fills_the_entrys_model_whole(name):
    """The peer's key names and shapes at full size (tests/fixtures/peers) against the model the entry builds."""
    card = pretrained_card(name)
    with torch.device("meta"):
        if card.pretrainer is not None:
            model = pointmap.create_pretrainer(card.preset, **card.pretrainer, **card.args)
        else:
            model = pointmap.create_model(card.preset, **card.model_kwargs())
        state = {k: torch.empty(s) for k, s in key_table(card).items()}
    res = load_state(model, state, name, card.format, whole=True)
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert res.ignored_keys == (["cls_token", "cls_pos"] if name == "mamba3d.shapenet55_pointmae" else [])


@pytest.mark.parametrize("name", ENTRIES)
def test_every_entry_downloads_and_loads_whole(name, hub):  # noqa: F811
    card, peer = serve_entry(hub, name)
    tiny = TINY[card.preset]
    if card.pretrainer is not None:
        torch.manual_seed(1)
        model = tiny_model(card, seed=1)
        res = load_pretrained(model, name, whole=True)
        assert res.source == card.format and res.ignored_keys == []
    else:
        model = pointmap.create_model(card.preset, pretrained=name, **tiny)
    assert model.state_dict().keys() == peer.state_dict().keys()
    assert all(torch.equal(v, peer.state_dict()[k]) for k, v in model.state_dict().items())
    if card.pretrainer is None:
        x = torch.rand(2, 256, 3)
        args = (x, torch.tensor([0, 3])) if card.head.get("num_parts") else (x,)
        assert torch.equal(model.eval()(*args), peer.eval()(*args))
    assert hub.gets(card.url) == [None]


def test_pretrained_true_is_the_presets_default_entry_with_a_new_head(hub):  # noqa: F811
    card, peer = serve_entry(hub, "pointmamba.shapenet55")
    model = pointmap.create_model("pointmamba", num_classes=40, pretrained=True, **TINY["pointmamba"])
    assert all(torch.equal(v, peer.encoder.state_dict()[k]) for k, v in model.encoder.state_dict().items())
    assert model.num_classes == 40
    encoder = pointmap.create_model("pointmamba", pretrained=True, **TINY["pointmamba"])  # the encoder alone
    assert encoder.state_dict().keys() == peer.encoder.state_dict().keys()
    assert hub.gets(card.url) == [None]                                 # downloaded once


def test_a_file_that_does_not_fit_its_entry_is_an_error(hub):  # noqa: F811
    card = pretrained_card("pointmae.scan_hardest")
    other = pointmap.create_model("pointmae", num_classes=10, **TINY["pointmae"])  # 10 classes, not 15
    hub.add(card.url, peer_bytes(card, other))
    with pytest.raises(CheckpointError, match=r"\(point_mae format\) into Classifier: 14 tensors of the model are not "
                                              r"in the file \(head\.0\.weight.*set aside: head\.0\.weight"):
        pointmap.create_model("pointmae", pretrained="pointmae.scan_hardest", **TINY["pointmae"])
    model = pointmap.create_model("pointmae", num_classes=10, pretrained="pointmae.scan_hardest", **TINY["pointmae"])
    assert torch.equal(model.head[8].weight, other.head[8].weight)      # a head of your own size: taken


def test_names_that_do_not_fit(tmp_path):
    with pytest.raises(UserError, match=r"no such file or folder, and not an entry of pointmap.list_pretrained\(\) "
                                        r"\(did you mean 'pointmae.scan_hardest'\?\)"):
        pointmap.create_model("pointmae", pretrained="pointmae.scan_hardset")
    with pytest.raises(UserError, match=r"holds weights of preset 'pointmae', not 'pointmamba'"):
        pointmap.create_model("pointmamba", pretrained="pointmae.scan_hardest")
    with pytest.raises(UserError, match="preset 'hybridnet_s' has no published weights"):
        pointmap.create_model("hybridnet_s", pretrained=True)
    with pytest.raises(UserError, match="unknown model 'pointmea'"):
        pointmap.create_model("pointmea", pretrained=True)


def test_offline_a_missing_entry_names_its_url_and_cache_path():
    card = pretrained_card("pointmae.scan_hardest")                     # conftest: offline, an empty home
    with pytest.raises(UserError, match=re.escape(f"{card.url} is not in the cache: put the file at ")):
        pointmap.create_model("pointmae", pretrained="pointmae.scan_hardest")


def test_a_checkpoint_file_as_pretrained(tmp_path):
    card = pretrained_card("pointmamba.scan_objbg")
    peer = tiny_model(card)
    (tmp_path / "ft.pth").write_bytes(peer_bytes(card, peer))
    model = pointmap.create_model("pointmamba", num_classes=15, pretrained=str(tmp_path / "ft.pth"),
                                  **TINY["pointmamba"])
    assert all(torch.equal(v, peer.state_dict()[k]) for k, v in model.state_dict().items())


def test_the_readme_table_is_the_registry():
    """docs/models.md "Pretrained weights": one row per entry, the peer's number and the entry's own recipe; a
    finetuned entry is scored (--eval), a pretraining one finetuned from."""
    section = open(os.path.join(os.path.dirname(CFGS), "docs", "models.md"), encoding="utf-8").read()
    section = section[section.index("## Pretrained weights"):]
    row = r"^\| `([\w.]+)` \| [^|]+ \| ([^|]+) \| `(tools/\S+\.py) --cfg cfgs/(\S+) --ckpt ([\w.]+)( --eval)?` \|$"
    rows = re.findall(row, section, flags=re.M)
    assert len(rows) == 17 and sorted(r[0] for r in rows) == ENTRIES
    for name, number, tool_path, config, ckpt, evaluate in rows:
        card = pretrained_card(name)
        assert ckpt == name and os.path.isfile(os.path.join(os.path.dirname(CFGS), tool_path))
        reported = list(card.metrics.get("reported", {}).values())
        assert number.strip() == "–" if not reported else float(number.split(" %")[0]) == reported[0]
        if card.pretrainer is None:
            assert evaluate and config == card.config
        else:
            assert not evaluate and config.startswith(card.config.split("/")[0] + "/finetune_")
