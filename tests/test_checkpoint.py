"""Checkpoint import: pointmap's own, and the peers' pretraining / finetuned files at full size (key names
and shapes from tests/fixtures/peers/*_state_dicts.json, values synthesized), loud on what does not fit."""
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import pointmap
from pointmap.models import CheckpointError, load_checkpoint

PEERS = Path(__file__).resolve().parent / "fixtures" / "peers"
PEER_JSON = PEERS / "point_mae_state_dicts.json"


def _point_mae_shapes(kind: str, num_classes: int = 40) -> dict:
    """Point-MAE's parameter and buffer names and shapes (C=384, 12 blocks, K=32), written out here."""
    enc = {}
    for name, (cin, cout) in (("first_conv", (3, 128)), ("second_conv", (512, 512))):
        mid = 128 if name == "first_conv" else 512
        last = (256, 128) if name == "first_conv" else (384, 512)
        enc.update({f"encoder.{name}.0.weight": [mid, cin, 1], f"encoder.{name}.0.bias": [mid],
                    **{f"encoder.{name}.1.{p}": [mid] for p in ("weight", "bias", "running_mean", "running_var")},
                    f"encoder.{name}.1.num_batches_tracked": [],
                    f"encoder.{name}.3.weight": [last[0], last[1], 1], f"encoder.{name}.3.bias": [last[0]]})
    pos = lambda p: {f"{p}.0.weight": [128, 3], f"{p}.0.bias": [128], f"{p}.2.weight": [384, 128], f"{p}.2.bias": [384]}

    def blocks(prefix, n):
        out = {}
        for i in range(n):
            b = f"{prefix}.{i}."
            out.update({b + "norm1.weight": [384], b + "norm1.bias": [384], b + "norm2.weight": [384],
                        b + "norm2.bias": [384], b + "mlp.fc1.weight": [1536, 384], b + "mlp.fc1.bias": [1536],
                        b + "mlp.fc2.weight": [384, 1536], b + "mlp.fc2.bias": [384],
                        b + "attn.qkv.weight": [1152, 384], b + "attn.proj.weight": [384, 384],
                        b + "attn.proj.bias": [384]})
        return out

    norm = lambda p: {f"{p}.weight": [384], f"{p}.bias": [384]}
    if kind == "partseg":  # segmentation/models/pt.py get_model(50): G=128, no cls token
        bn = lambda p, c: {**{f"{p}.{q}": [c] for q in ("weight", "bias", "running_mean", "running_var")},
                           f"{p}.num_batches_tracked": []}
        conv = lambda p, cin, cout: {f"{p}.weight": [cout, cin, 1], f"{p}.bias": [cout]}
        head = {"label_conv.0.weight": [64, 16, 1], **bn("label_conv.1", 64),
                **conv("propagation_0.mlp_convs.0", 1152 + 3, 1536), **bn("propagation_0.mlp_bns.0", 1536),
                **conv("propagation_0.mlp_convs.1", 1536, 1024), **bn("propagation_0.mlp_bns.1", 1024),
                **conv("convs1", 3392, 512), **bn("bns1", 512), **conv("convs2", 512, 256), **bn("bns2", 256),
                **conv("convs3", 256, 50)}
        return {**enc, **pos("pos_embed"), **blocks("blocks.blocks", 12), **norm("norm"), **head}
    if kind == "finetune":
        head = {}
        for i, (cin, cout) in zip((0, 4, 8), ((768, 256), (256, 256), (256, num_classes))):
            head.update({f"cls_head_finetune.{i}.weight": [cout, cin], f"cls_head_finetune.{i}.bias": [cout]})
            if i < 8:
                head.update({f"cls_head_finetune.{i + 1}.{p}": [cout] for p in ("weight", "bias", "running_mean", "running_var")})
                head[f"cls_head_finetune.{i + 1}.num_batches_tracked"] = []
        return {"cls_token": [1, 1, 384], "cls_pos": [1, 1, 384], **enc, **pos("pos_embed"),
                **blocks("blocks.blocks", 12), **norm("norm"), **head}
    mae = {f"MAE_encoder.{k}": v for k, v in {**enc, **pos("pos_embed"), **blocks("blocks.blocks", 12), **norm("norm")}.items()}
    return {"mask_token": [1, 1, 384], **mae, **pos("decoder_pos_embed"), **blocks("MAE_decoder.blocks", 4),
            **norm("MAE_decoder.norm"), "increase_dim.0.weight": [96, 384, 1], "increase_dim.0.bias": [96]}


def _shapes(kind: str) -> dict:
    data = json.loads(PEER_JSON.read_text())
    return data["point_mae_finetune_cls40" if kind == "finetune" else "point_mae_pretrain"]


def _peer_shapes(peer: str, kind: str) -> dict:
    return json.loads((PEERS / f"{peer}_state_dicts.json").read_text())[f"{peer}_{kind}"]


def _synthesize(path, shapes: dict, prefix: str = "module.", key: str = "base_model", **extra) -> dict:
    """A file of ``shapes``' names with random values, saved under ``key`` (beside ``extra``) as a peer does."""
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.tensor(7) if not s else torch.randn(*s, generator=g)) for k, s in shapes.items()}
    torch.save({key: {prefix + k: v for k, v in state.items()}, "epoch": 300, **extra}, path)
    return state


def _head_keys(model) -> set:
    """The head's keys a load can miss (BatchNorm fills a missing num_batches_tracked silently)."""
    return {k for k in model.state_dict() if k.startswith("head.") and not k.endswith("num_batches_tracked")}


def test_written_out_names_agree_with_the_peer_json():
    data = json.loads(PEER_JSON.read_text())
    assert _point_mae_shapes("finetune") == data["point_mae_finetune_cls40"]
    assert _point_mae_shapes("pretrain") == data["point_mae_pretrain"]


def test_point_mae_finetuned_checkpoint_loads_completely(tmp_path):
    shapes = _shapes("finetune")
    n = sum(math.prod(s) for k, s in shapes.items() if "running" not in k and "num_batches" not in k)
    assert n == 22_099_752
    state = _synthesize(tmp_path / "ft.pth", shapes)
    model = pointmap.create_model("pointmae", num_classes=40)
    res = load_checkpoint(model, str(tmp_path / "ft.pth"), source="point_mae")
    assert res.missing_keys == [] and res.unexpected_keys == [] and res.ignored_keys == []
    assert torch.equal(model.encoder.blocks[3].mixer.qkv.weight, state["blocks.blocks.3.attn.qkv.weight"])
    assert torch.equal(model.head[8].bias, state["cls_head_finetune.8.bias"])
    assert torch.equal(model.encoder.tokenizer.second_conv[1].running_var, state["encoder.second_conv.1.running_var"])
    assert torch.equal(model.cls_pos, state["cls_pos"])


def test_point_mae_pretraining_checkpoint_loads(tmp_path):
    state = _synthesize(tmp_path / "pre.pth", _shapes("pretrain"))
    path = str(tmp_path / "pre.pth")
    encoder = pointmap.create_model("pointmae")
    res = load_checkpoint(encoder, path)                                  # auto-detected
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert any(k.startswith("decoder.") for k in res.ignored_keys) and "mask_token" in res.ignored_keys
    assert torch.equal(encoder.norm.weight, state["MAE_encoder.norm.weight"])

    pre = pointmap.create_pretrainer(encoder, mask_ratio=0.6, objective="mae", decoder_depth=4, decoder_heads=6)
    res = load_checkpoint(pre, path)
    assert res.missing_keys == [] and res.unexpected_keys == [] and res.ignored_keys == []
    assert torch.equal(pre.predictor.weight, state["increase_dim.0.weight"].squeeze(-1))
    assert torch.equal(pre.decoder.blocks[2].mixer.proj.bias, state["MAE_decoder.blocks.2.attn.proj.bias"])

    clf = pointmap.create_model("pointmae", num_classes=15)
    res = load_checkpoint(clf, path, source="point_mae")
    assert res.unexpected_keys == []
    assert set(res.missing_keys) == {"cls_token", "cls_pos"} | _head_keys(clf)


def _point_mae_seg(**kw):
    return pointmap.create_model("pointmae", num_parts=50, num_categories=16, seg_head="point_mae", num_group=128, **kw)


def test_point_mae_part_seg_names_are_point_mae_s():
    """The written-out part-seg shapes have exactly the parameter names Point-MAE's model has, and its count."""
    recorded = json.loads((PEERS / "point_mae_partseg_params.json").read_text())
    params = {k: s for k, s in _point_mae_shapes("partseg").items() if "running" not in k and "num_batches" not in k}
    assert sorted(params) == recorded["names"]
    assert sum(math.prod(s) for s in params.values()) == recorded["total_params"] == 27_063_730


def test_point_mae_part_seg_checkpoint_loads_completely(tmp_path):
    """A file as Point-MAE's segmentation/main.py saves it: the state dict under model_state_dict, numpy
    metrics and the optimizer's state beside it."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))]).state_dict()
    state = _synthesize(tmp_path / "best_model.pth", _point_mae_shapes("partseg"), prefix="", key="model_state_dict",
                        train_acc=np.float64(0.95), test_acc=np.float64(0.94), class_avg_iou=np.float64(0.84),
                        inctance_avg_iou=np.float64(0.86), optimizer_state_dict=opt)
    model = _point_mae_seg()
    res = load_checkpoint(model, str(tmp_path / "best_model.pth"))
    assert res.source == "point_mae"
    assert res.missing_keys == [] and res.unexpected_keys == [] and res.ignored_keys == []
    head = model.head
    assert torch.equal(head.label_conv[0].weight, state["label_conv.0.weight"])
    assert torch.equal(head.propagation[4].running_var, state["propagation_0.mlp_bns.1.running_var"])
    assert torch.equal(head.propagation[3].weight, state["propagation_0.mlp_convs.1.weight"])
    assert torch.equal(head.mlp[5].bias, state["bns2.bias"]) and torch.equal(head.mlp[7].weight, state["convs3.weight"])
    assert torch.equal(model.encoder.blocks[11].mixer.qkv.weight, state["blocks.blocks.11.attn.qkv.weight"])
    # into pointmap's own part-seg head or a classifier: the encoder loads, Point-MAE's head is set aside
    for other in (pointmap.create_model("pointmae", num_parts=50, num_group=128),
                  pointmap.create_model("pointmae", num_classes=16)):
        res = load_checkpoint(other, str(tmp_path / "best_model.pth"))
        assert res.unexpected_keys == [] and len(res.ignored_keys) == 36 and all(k.startswith("head.") for k in res.ignored_keys)


def test_point_mae_pretraining_checkpoint_into_its_part_seg_model(tmp_path):
    state = _synthesize(tmp_path / "pre.pth", _shapes("pretrain"))
    model = _point_mae_seg()
    res = load_checkpoint(model, str(tmp_path / "pre.pth"))
    assert res.source == "point_mae" and res.unexpected_keys == [] and set(res.missing_keys) == _head_keys(model)
    assert "mask_token" in res.ignored_keys
    assert torch.equal(model.encoder.blocks[3].mlp.fc2.weight, state["MAE_encoder.blocks.blocks.3.mlp.fc2.weight"])


def test_shape_mismatch_names_key_and_shapes(tmp_path):
    _synthesize(tmp_path / "ft.pth", _shapes("finetune"), prefix="")
    model = pointmap.create_model("pointmae", num_classes=15, embed_dim=192, num_heads=3)
    with pytest.raises(CheckpointError, match=r"point_mae format.*'cls_token' has shape "
                                              r"\(1, 1, 384\) in the checkpoint but \(1, 1, 192\)"):
        load_checkpoint(model, str(tmp_path / "ft.pth"))


def test_a_head_of_another_shape_is_set_aside(tmp_path):
    """A 40-class finetuned file into a 15-class model: the encoder loads, the head is listed as ignored."""
    _synthesize(tmp_path / "ft.pth", _shapes("finetune"))
    model = pointmap.create_model("pointmae", num_classes=15)
    res = load_checkpoint(model, str(tmp_path / "ft.pth"))
    assert res.unexpected_keys == [] and set(res.missing_keys) == _head_keys(model)
    head = {k.replace("cls_head_finetune.", "head.") for k in _shapes("finetune") if k.startswith("cls_head_finetune.")}
    assert set(res.ignored_keys) == head


def test_pointmap_round_trip(tmp_path):
    tiny = dict(embed_dim=32, num_heads=2, num_group=16, group_size=8, layout="MT")
    pre = pointmap.create_pretrainer("hybridnet_s", decoder_heads=2, **tiny)
    torch.save({"model": pre.state_dict(), "epoch": 1}, tmp_path / "ckpt-last.pth")
    clf = pointmap.create_model("hybridnet_s", num_classes=4, **tiny)
    res = load_checkpoint(clf, str(tmp_path / "ckpt-last.pth"))
    assert res.unexpected_keys == [] and "mask_token" in res.ignored_keys
    assert set(res.missing_keys) == {"cls_token", "cls_pos"} | _head_keys(clf)
    assert torch.equal(clf.encoder.blocks[0].mixer.A_log, pre.encoder.blocks[0].mixer.A_log)
    with pytest.raises(ValueError, match="source"):
        load_checkpoint(clf, str(tmp_path / "ckpt-last.pth"), source="pointgpt")


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("kind,classes,params", [("finetune_cls40", 40, 12_297_768), ("finetune_cls15", 15, 12_291_343)])
def test_pointmamba_finetuned_checkpoint_loads_completely(kind, classes, params, tmp_path):
    shapes = _peer_shapes("pointmamba", kind)
    state = _synthesize(tmp_path / "pm.pth", shapes)
    model = pointmap.create_model("pointmamba", num_classes=classes)
    assert _count(model) == params                                        # PointMambaScan's count
    res = load_checkpoint(model, str(tmp_path / "pm.pth"))
    assert res.source == "pointmamba"
    assert res.missing_keys == [] and res.unexpected_keys == [] and res.ignored_keys == []
    assert torch.equal(model.encoder.order_shift[1], state["OrderScale_beta_2"])
    assert torch.equal(model.encoder.blocks[11].mixer.A_log, state["blocks.layers.11.mixer.A_log"])
    assert torch.equal(model.encoder.blocks[5].norm1.bias, state["blocks.layers.5.norm.bias"])
    assert torch.equal(model.encoder.norm.weight, state["blocks.norm_f.weight"])


def test_pointmamba_pretraining_checkpoint_fills_the_encoder(tmp_path):
    state = _synthesize(tmp_path / "pre.pth", _peer_shapes("pointmamba", "pretrain"))
    model = pointmap.create_model("pointmamba", num_classes=40)
    res = load_checkpoint(model, str(tmp_path / "pre.pth"))
    assert res.source == "pointmamba" and res.unexpected_keys == []
    assert set(res.missing_keys) == _head_keys(model)
    assert "mask_token" in res.ignored_keys and any(k.startswith("decoder.blocks.3.mixer.") for k in res.ignored_keys)
    assert torch.equal(model.encoder.order_scale[0], state["MAE_encoder.OrderScale_gamma_1"])


def test_pointmamba_pretraining_checkpoint_loads_whole_into_its_pretrainer(tmp_path):
    shapes = _peer_shapes("pointmamba", "pretrain")
    state = _synthesize(tmp_path / "pre.pth", shapes)
    pre = pointmap.create_pretrainer("pointmamba", objective="mae", mask_ratio=0.6, decoder_type="mamba")
    assert _count(pre) == sum(math.prod(s) for k, s in shapes.items() if "running" not in k and "num_batches" not in k)
    res = load_checkpoint(pre, str(tmp_path / "pre.pth"), source="auto")
    assert res.source == "pointmamba"
    assert res.missing_keys == [] and res.unexpected_keys == [] and res.ignored_keys == []
    assert torch.equal(pre.decoder.blocks[3].mixer.A_log, state["MAE_decoder.blocks.layers.3.mixer.A_log"])
    assert torch.equal(pre.decoder.blocks[0].norm1.bias, state["MAE_decoder.blocks.layers.0.norm.bias"])
    assert torch.equal(pre.decoder.norm.weight, state["MAE_decoder.blocks.norm_f.weight"])
    assert torch.equal(pre.predictor.weight, state["increase_dim.0.weight"].squeeze(-1))
    assert torch.equal(pre.decoder_pos_embed[2].bias, state["decoder_pos_embed.2.bias"])
    assert torch.equal(pre.mask_token, state["mask_token"])
    assert torch.equal(pre.encoder.order_shift[1], state["MAE_encoder.OrderScale_beta_2"])
    assert torch.equal(pre.encoder.norm.bias, state["MAE_encoder.blocks.norm_f.bias"])
    with pytest.raises(CheckpointError, match=r"pointmamba format.*have no place in the model"):
        load_checkpoint(pointmap.create_pretrainer("pointmamba", objective="mae"), str(tmp_path / "pre.pth"))


@pytest.mark.parametrize("kind,classes,params", [("finetune_cls15", 15, 25_220_623), ("finetune_cls40", 40, 25_227_048)])
def test_map3d_finetuned_checkpoint_loads_completely(kind, classes, params, tmp_path):
    state = _synthesize(tmp_path / "m.pth", _peer_shapes("map3d", kind))
    model = pointmap.create_model("map3d_official", num_classes=classes)
    assert _count(model) == params                                        # the release's Mamba3D count
    res = load_checkpoint(model, str(tmp_path / "m.pth"))
    assert res.source == "map3d"
    assert res.missing_keys == [] and res.unexpected_keys == [] and res.ignored_keys == []
    blocks = model.encoder.blocks
    assert torch.equal(blocks[5].mlp.D_b, state["blocks.blocks.4.mixer.D_b"])            # 5th M is block 5
    assert torch.equal(blocks[7].mixer.alpha, state["blocks.blocks_vit.1.lfa.lga.affine_alpha_feat"].flatten())
    assert torch.equal(blocks[15].mlp.mixer.qkv.weight, state["blocks.blocks_vit.3.mixer.attn.qkv.weight"])
    assert torch.equal(blocks[0].mixer.proj.weight, state["blocks.blocks.0.lfa.mlp.share_mlp.weight"].squeeze(-1))


@pytest.mark.parametrize("kind,classes,params", [("finetune_cls15", 15, 16_927_759), ("finetune_cls40", 40, 16_934_184)])
def test_mamba3d_finetuned_checkpoint_loads_completely(kind, classes, params, tmp_path):
    """Mamba3D's own classifier: the map3d format with the target's all-Mamba layout."""
    state = _synthesize(tmp_path / "m.pth", _peer_shapes("mamba3d", kind))
    model = pointmap.create_model("mamba3d", num_classes=classes)
    assert _count(model) == params                                        # Mamba3D's count
    res = load_checkpoint(model, str(tmp_path / "m.pth"))
    assert res.source == "map3d"
    assert res.missing_keys == [] and res.unexpected_keys == [] and res.ignored_keys == []
    blocks = model.encoder.blocks
    assert torch.equal(blocks[4].mlp.D_b, state["blocks.blocks.4.mixer.D_b"])            # no T: M i is block i
    assert torch.equal(blocks[11].mixer.beta, state["blocks.blocks.11.lfa.lga.affine_beta_feat"].flatten())
    assert torch.equal(model.head[8].weight, state["cls_head_finetune.8.weight"])


@pytest.mark.parametrize("peer,layout,last", [("map3d", "MMMT" * 4, "encoder.blocks.15.mlp.mixer.qkv.weight"),
                                               ("mamba3d", "M" * 12, "encoder.blocks.11.mlp.A_b_log")])
def test_map3d_converter_infers_the_files_own_layout(peer, layout, last):
    """Without a target layout the converter places the blocks as the file's class had them."""
    from pointmap.models import map3d_to_pointmap

    state = {k: torch.zeros(s) for k, s in _peer_shapes(peer, "finetune_cls15").items()}
    names = list(map3d_to_pointmap(state))
    assert names == list(map3d_to_pointmap(state, layout)) and last in names


def test_map3d_pretraining_checkpoint_loads_encoder_and_cls_token(tmp_path):
    state = _synthesize(tmp_path / "pre.pth", _peer_shapes("map3d", "pretrain"))
    model = pointmap.create_model("map3d_official", num_classes=15)
    res = load_checkpoint(model, str(tmp_path / "pre.pth"))
    assert res.source == "map3d" and res.unexpected_keys == [] and set(res.missing_keys) == _head_keys(model)
    assert torch.equal(model.cls_token, state["MAE_encoder.cls_token"])
    pre = pointmap.create_pretrainer(pointmap.create_model("map3d_official"), objective="mae", mask_ratio=0.6,
                                     decoder_depth=4, decoder_heads=6)
    res = load_checkpoint(pre, str(tmp_path / "pre.pth"))
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert torch.equal(pre.decoder.blocks[3].mixer.qkv.weight, state["MAE_decoder.blocks.3.attn.qkv.weight"])


def _drop(shapes: dict, pattern: str) -> dict:
    return {k: v for k, v in shapes.items() if pattern not in k}


@pytest.mark.parametrize("peer,preset,gone,source", [
    ("pointmamba", "pointmamba", "blocks.layers.3.", "auto"),
    ("map3d", "map3d_official", "blocks.blocks_vit.", "auto"),
    ("pointmamba", "pointmamba", None, "point_mae"),                     # the wrong format named by hand
    ("map3d", "pointmae", None, "auto"),                                  # a MAP 3D file into Point-MAE
    ("mamba3d", "map3d_official", None, "auto"),                          # Mamba3D's has no attention blocks
])
def test_incomplete_or_misfit_peer_files_are_errors(peer, preset, gone, source, tmp_path):
    shapes = _peer_shapes(peer, "finetune_cls15")
    _synthesize(tmp_path / "x.pth", _drop(shapes, gone) if gone else shapes)
    model = pointmap.create_model(preset, num_classes=15)
    fmt = {"mamba3d": "map3d"}.get(peer, peer) if source == "auto" else source
    with pytest.raises(CheckpointError, match=rf"\({fmt} format\).*encoder tensors are not in the file") as e:
        load_checkpoint(model, str(tmp_path / "x.pth"), source=source)
    assert "strict=False" in str(e.value) and "\n" not in str(e.value)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_partial_load_only_when_asked(tmp_path):
    _synthesize(tmp_path / "x.pth", _drop(_peer_shapes("pointmamba", "finetune_cls40"), "blocks.layers.3."))
    model = pointmap.create_model("pointmamba", num_classes=40)
    seen, log = _Records(), logging.getLogger("pointmap.models.checkpoint")
    log.addHandler(seen)  # the logger's own handler: independent of how other tests configured propagation
    try:
        res = load_checkpoint(model, str(tmp_path / "x.pth"), strict=False)
    finally:
        log.removeHandler(seen)
    assert len([k for k in res.missing_keys if ".blocks.3." in k]) == 11  # norm + 9 mixer tensors
    assert any(r.levelno == logging.WARNING and "partial load" in r.getMessage() for r in seen.records)


def test_unknown_and_unreadable_files(tmp_path):
    model = pointmap.create_model("pointmae", num_classes=15, embed_dim=32, num_heads=2, layout="TT")
    torch.save({"base_model": {"backbone.conv1.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"unknown format .*backbone\.conv1\.weight.*pointmap reads"):
        load_checkpoint(model, str(tmp_path / "other.pth"))
    (tmp_path / "notes.txt").write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match=r"notes\.txt is not a readable torch checkpoint"):
        load_checkpoint(model, str(tmp_path / "notes.txt"))
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(CheckpointError, match="expected a dict of tensors, got Tensor"):
        load_checkpoint(model, str(tmp_path / "tensor.pth"))


def test_part_segmenter_keeps_its_own_head(tmp_path):
    tiny = dict(embed_dim=32, num_heads=2, num_group=16, group_size=8, layout="MT")
    seg = pointmap.create_model("hybridnet_s", num_parts=50, **tiny)
    torch.save({"model": seg.state_dict()}, tmp_path / "seg.pth")
    other = pointmap.create_model("hybridnet_s", num_parts=50, **tiny)
    res = load_checkpoint(other, str(tmp_path / "seg.pth"))
    assert res.missing_keys == [] and res.ignored_keys == []
    assert torch.equal(other.head[0].weight, seg.head[0].weight)
    clf = pointmap.create_model("hybridnet_s", num_classes=4, **tiny)
    torch.save({"model": clf.state_dict()}, tmp_path / "clf.pth")
    res = load_checkpoint(other, str(tmp_path / "clf.pth"))
    assert res.unexpected_keys == [] and {k for k in res.ignored_keys if k.startswith("head.")}
    assert {k for k in res.missing_keys} == {k for k in other.state_dict() if k.startswith("head.")
                                             and not k.endswith("num_batches_tracked")}


def test_bare_encoder_state_into_a_classifier(tmp_path):
    tiny = dict(embed_dim=32, num_heads=2, num_group=16, group_size=8, layout="MT")
    enc = pointmap.create_model("hybridnet_s", **tiny)
    torch.save(enc.state_dict(), tmp_path / "enc.pth")
    clf = pointmap.create_model("hybridnet_s", num_classes=4, **tiny)
    res = load_checkpoint(clf, str(tmp_path / "enc.pth"))
    assert res.unexpected_keys == [] and set(res.missing_keys) == {"cls_token", "cls_pos"} | _head_keys(clf)
