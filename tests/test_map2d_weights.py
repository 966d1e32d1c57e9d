"""MAP 2D weights: files in the release's layout (main.py's ``{"model", "model_ema", "args"}``) into the pretrainer,
the classifiers and the encoder; the registry entries (the release's OneDrive files, Mamba-Reg's Hub files); the
docs page's figures."""
import json
import math
import os
import re

import pytest
import torch

import pointmap

from ._hub import hub  # noqa: F401
from .test_map2d import SIZES, fidelity, fixture, reduced, state_table  # noqa: F401  (fixture: a pytest fixture)


# ---- weights in the release's layout ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def release_file(tmp_path_factory):
    """A file as the release's main.py saves one, with every key and shape of the tiny model's table (random
    values): ``{"model": ..., "model_ema": ..., "args": argparse.Namespace, ...}``."""
    import argparse

    g = torch.Generator().manual_seed(0)
    table = state_table()["map2d_tiny"]
    model = {k: torch.randn(*shape, generator=g) for k, shape in table.items()}
    ema = {k: v + 1 for k, v in model.items()}
    path = str(tmp_path_factory.mktemp("map2d") / "map_tiny.pth")
    torch.save({"model": model, "model_ema": ema, "optimizer": {}, "epoch": 1599,
                "args": argparse.Namespace(model="map_tiny_patch16_224", lr=5e-4)}, path)
    return path, model


def test_map2d_release_file_ema_copy_loads_whole(release_file):
    """The file's ``model_ema`` (docs/map2d.md: read the file, load that copy)."""
    from pointmap.models import load_state, read_checkpoint
    from pointmap.models.convert import map2d_to_pointmap

    path, model = release_file
    pre = pointmap.create_pretrainer("map_tiny_patch16_224")
    ckpt = read_checkpoint(path)
    result = load_state(pre, ckpt["model_ema"], f"{path} (model_ema)", whole=True)
    assert result.source == "map2d" and not result.missing_keys and not result.unexpected_keys
    renamed = map2d_to_pointmap({k: v + 1 for k, v in model.items()})
    assert all(torch.equal(v, renamed[k]) for k, v in pre.state_dict().items())


def test_map2d_release_file_loads_whole_into_the_pretrainer(release_file):
    from pointmap.models.convert import map2d_to_pointmap

    path, model = release_file
    pre = pointmap.create_pretrainer("map_tiny_patch16_224", pretrained=path)
    held = pre.state_dict()
    renamed = map2d_to_pointmap(model)
    unused = {"cls_token", "cls_pos", "neck.weight", "norm_neck.weight", "head.weight", "head.bias"}
    assert set(held) == set(renamed) - unused                       # every encoder and decoder tensor, nothing else
    assert all(torch.equal(held[k], renamed[k]) for k in held)
    assert len([k for k in held if k.startswith("encoder.blocks.") and ".attn_block." in k]) == 8 * 12


def test_map2d_release_file_loads_whole_into_the_classifier(release_file):
    from pointmap.models.convert import map2d_to_pointmap

    path, model = release_file
    clf = pointmap.create_model("map_tiny_patch16_224", num_classes=1000, pretrained=path)
    renamed = map2d_to_pointmap(model)
    held = clf.state_dict()
    assert all(torch.equal(held[k], renamed[k]) for k in held)        # registers, their table and the head too
    assert set(renamed) - set(held) == {k for k in renamed if k.startswith("decoder.")}
    enc = pointmap.create_model("map_tiny_patch16_224", pretrained=path)
    assert all(torch.equal(v, renamed["encoder." + k]) for k, v in enc.state_dict().items())
    with pytest.raises(pointmap.models.CheckpointError, match="no place in the model"):
        pointmap.create_model("mambar_tiny_patch16_224", num_classes=1000, pretrained=path)


# ---- registry entries: the release's five OneDrive files, Mamba-Reg's three Hub files -----------------------------
MAP2D_ENTRIES = [n for n in pointmap.list_pretrained() if pointmap.models.pretrained_card(n).format == "map2d"]


def test_map2d_entries_are_the_published_files():
    cards = [pointmap.models.pretrained_card(n) for n in MAP2D_ENTRIES]
    assert sorted(c.preset for c in cards) == sorted([f"map_{s}_patch16_224" for s in SIZES] +
                                                      [f"mambar_{s}_patch16_224" for s in ("small", "base", "large")])
    for c in cards:
        assert c.default and c.licence == "not stated"
        if c.preset.startswith("map_"):   # OneDrive share links: a page, the file fetched by hand
            assert c.url is None and c.page.startswith("https://1drv.ms/u/c/12e5c3dbeffd0594/") and c.pretrainer == {}
            assert c.by_hand == f"map2d/{c.preset}.pth" and c.head == {}
        else:
            assert c.url == f"hf-hub:Wangf3014/Mamba-Reg/{c.preset}.pth" and c.revision == "main"  # through huggingface_hub
            assert c.head == {"num_classes": 1000} and c.protocol == "peer" and c.pretrainer is None


@pytest.mark.parametrize("name", MAP2D_ENTRIES)
def test_map2d_entry_fills_its_model_whole_at_full_size(name):
    """The release's key names and shapes at full size (map2d_state_dicts.json; Mamba-Reg's: the same less the
    attention blocks and the decoder) against the model the entry builds."""
    card = pointmap.models.pretrained_card(name)
    size = card.preset.split("_")[1]
    table = state_table()[f"map2d_{size}"]
    if card.preset.startswith("mambar_"):
        table = {k: s for k, s in table.items() if not k.startswith(fidelity.MAP2D_NOT_IN_MAMBA_REG)}
    with torch.device("meta"):
        if card.pretrainer is not None:
            model = pointmap.create_pretrainer(card.preset, **card.pretrainer, **card.args)
        else:
            model = pointmap.create_model(card.preset, **card.model_kwargs())
        state = {k: torch.empty(s) for k, s in table.items()}
    res = pointmap.models.load_state(model, state, name, card.format, whole=True)
    assert res.missing_keys == [] and res.unexpected_keys == []
    unused = ["cls_token", "cls_pos", "head.weight", "head.bias"] + ([] if size == "tiny" else
                                                                     ["neck.weight", "norm_neck.weight"])
    assert sorted(res.ignored_keys) == (sorted(unused) if card.pretrainer is not None else [])


def test_map2d_a_page_entry_is_fetched_by_hand_and_checked(fixture):  # noqa: F811
    import io

    from pointmap.download import ChecksumError, DownloadError, by_hand_path

    c = fixture["config"]
    kw = dict(**reduced(fixture), decoder_embed_dim=c["decoder_embed_dim"], decoder_num_heads=c["decoder_num_heads"])
    card = pointmap.models.pretrained_card("map2d.tiny")
    path = by_hand_path(card.by_hand)
    pattern = f"{re.escape(card.page)} shares its file through a web page.*put it at {re.escape(path)}$"
    with pytest.raises(DownloadError, match=pattern):
        pointmap.create_pretrainer("map_tiny_patch16_224", pretrained="map2d.tiny", **kw)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    buf = io.BytesIO()
    torch.save({"model": fixture["state_dict"], "model_ema": fixture["state_dict"], "epoch": 1599}, buf)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    for _ in range(2):                               # the first use records the file, the second checks it
        pre = pointmap.create_pretrainer("map_tiny_patch16_224", pretrained="map2d.tiny", **kw)
        assert torch.equal(pre.state_dict()["encoder.blocks.2.attn_block.mixer.qkv.weight"],
                           fixture["state_dict"]["blocks.0.attn.qkv.weight"].float())
    with open(path, "ab") as f:
        f.write(b"changed")
    with pytest.raises(ChecksumError, match="is not the file"):
        pointmap.create_pretrainer("map_tiny_patch16_224", pretrained="map2d.tiny", **kw)


def test_map2d_mamba_reg_entry_downloads_and_loads(fixture, hub):  # noqa: F811
    import io

    card = pointmap.models.pretrained_card("mambar.small")
    state = {k: v for k, v in fixture["state_dict"].items() if not k.startswith(fidelity.MAP2D_NOT_IN_MAMBA_REG)}
    buf = io.BytesIO()
    torch.save({"model": state}, buf)
    hub.add(card.url, buf.getvalue())
    c = fixture["config"]
    model = pointmap.create_model("mambar_small_patch16_224", num_classes=c["num_classes"], pretrained="mambar.small",
                                  num_registers=c["num_cls_tokens"], reduce=c["cls_reduce"], **reduced(fixture))
    renamed = pointmap.models.convert.map2d_to_pointmap(state)
    assert model.state_dict().keys() == renamed.keys()
    assert all(torch.equal(v, renamed[k].float()) for k, v in model.state_dict().items())
    assert hub.gets(card.url) == [None]


# ---- the docs page ------------------------------------------------------------------------------------------------
def _page() -> str:
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "map2d.md")
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_map2d_page_quotes_the_measured_fidelity_and_the_release_counts():
    docs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
    with open(os.path.join(docs, "fidelity.json"), encoding="utf-8") as f:
        d = json.load(f)["differences"]
    m, r, sci = d["map_tiny_patch16_224"], d["mambar_tiny_patch16_224"], fidelity.sci
    raw = _page()
    page = " ".join(raw.split())
    assert (f"encoder tokens {sci(m['encoder_tokens'])}, prediction {sci(m['pred'])} and loss {sci(m['loss'])}, and "
            f"Mamba-Reg's logits {sci(r['logits'])}") in page
    assert all(v < 1e-12 for v in (*m.values(), *r.values()))          # what the tests assert
    for size in SIZES:
        count = sum(math.prod(s) for s in state_table()[f"map2d_{size}"].values())
        rows = [line for line in raw.splitlines() if line.startswith(f"| `map_{size}_patch16_224` |")]
        assert len(rows) == 1 and rows[0].endswith(f"| {count:,} |"), size


def test_map2d_positional_table_of_another_grid_is_resampled():
    """A 128 px file (8×8 table) into a 224 px model (14×14): bicubic, as Mamba-Reg's --finetune; the same grid
    loads unchanged."""
    import torch.nn.functional as F

    small = pointmap.create_model("mambar_tiny_patch16_224", num_classes=5, img_size=128, depth=2)
    big = pointmap.create_model("mambar_tiny_patch16_224", num_classes=5, depth=2)
    pointmap.models.load_state(big, small.state_dict(), "stage1.pth", whole=True)
    grid = small.encoder.pos_embed.reshape(1, 8, 8, 192).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(14, 14), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 196, 192)
    assert torch.equal(big.encoder.pos_embed, want)
    same = pointmap.create_model("mambar_tiny_patch16_224", num_classes=5, img_size=128, depth=2)
    pointmap.models.load_state(same, small.state_dict(), "stage1.pth", whole=True)
    assert torch.equal(same.encoder.pos_embed, small.encoder.pos_embed)
    encoder = pointmap.create_model("mambar_tiny_patch16_224", depth=2)       # an encoder alone: no prefix
    pointmap.models.load_state(encoder, small.state_dict(), "stage1.pth")
    assert torch.equal(encoder.pos_embed, want)
