"""Checkpoint import: Point-MAE pretraining / finetuned checkpoints and pointmap's own."""
import json
import math
from pathlib import Path

import pytest
import torch

import pointmap
from pointmap.models import load_checkpoint

PEER_JSON = Path(__file__).resolve().parents[2] / "shared" / "peers" / "point_mae_state_dicts.json"


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
    if PEER_JSON.exists():
        data = json.loads(PEER_JSON.read_text())
        return data["point_mae_finetune_cls40" if kind == "finetune" else "point_mae_pretrain"]
    return _point_mae_shapes(kind)


def _synthesize(path, shapes: dict, prefix: str = "module.") -> dict:
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.tensor(7) if not s else torch.randn(*s, generator=g)) for k, s in shapes.items()}
    torch.save({"base_model": {prefix + k: v for k, v in state.items()}, "epoch": 300}, path)
    return state


def _head_keys(model) -> set:
    """The head's keys a load can miss (BatchNorm fills a missing num_batches_tracked silently)."""
    return {k for k in model.state_dict() if k.startswith("head.") and not k.endswith("num_batches_tracked")}


@pytest.mark.skipif(not PEER_JSON.exists(), reason="the peers' JSON is not beside this checkout")
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


def test_shape_mismatch_names_key_and_shapes(tmp_path):
    _synthesize(tmp_path / "ft.pth", _shapes("finetune"), prefix="")
    model = pointmap.create_model("pointmae", num_classes=15)
    with pytest.raises(ValueError, match=r"'head\.8\.weight'.*\(40, 256\).*\(15, 256\)"):
        load_checkpoint(model, str(tmp_path / "ft.pth"), source="point_mae")


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
