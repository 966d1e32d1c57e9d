"""How closely the peer presets compute what the peers' own code computes: the largest difference, in float64,
between each preset loaded with a peer's weights and that peer's recorded outputs (tests/fixtures/peers/, made
by the peers' code), and the size of each peer quirk a preset does not keep by default. docs/models.md (and
docs/map2d.md, the MAP 2D release's) quotes these figures; tests/test_peer_fidelity.py holds each below 1e-10 and
checks the pages against docs/fidelity.json.

    python tools/fidelity.py                          # the table
    python tools/fidelity.py --json docs/fidelity.json
"""
import argparse
import json
import os
import sys
import tempfile

import torch

from _common import main

import pointmap
from pointmap.atomic import atomic_write
from pointmap.errors import add_debug_flag
from pointmap.layers import MambaMixer
from pointmap.models import load_checkpoint

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests", "fixtures", "peers")
REDUCED = dict(num_classes=10, embed_dim=48, num_group=32, group_size=16)  # the fixtures' reduced models
PRESETS = {"point_mae": ("pointmae", "TT"), "pointmamba": ("pointmamba", "MM"), "map3d": ("map3d_official", "MMMT"),
           "mamba3d": ("mamba3d", "MMM")}


def fixture(name: str) -> dict:
    """tests/fixtures/peers/<name>.pt: the reduced model's state dict, its input and the peer's outputs."""
    return torch.load(os.path.join(FIXTURES, f"{name}.pt"), weights_only=True)


def load_preset(name: str, folder: str, **overrides):
    """The preset for fixture ``name``, in float64, with the peer's weights loaded through ``load_checkpoint``
    from a checkpoint file saved in ``folder`` the way the peers save them; (model, fixture, LoadResult)."""
    fx = fixture(name)
    preset, layout = PRESETS[name]
    model = pointmap.create_model(preset, layout=layout, **{**REDUCED, **overrides}).double().eval()
    path = os.path.join(folder, f"{name}.pth")
    torch.save({"base_model": {"module." + k: v for k, v in fx["state_dict"].items()}, "epoch": 300}, path)
    return model, fx, load_checkpoint(model, path, source="auto")


MAP2D_NOT_IN_MAMBA_REG = ("blocks.", "decoder_", "mask_token", "ar_pred.")  # MAP's keys Mamba-Reg's model lacks


def use_recorded_a(encoder, mixer_a) -> None:
    """Each mixer's A as the release's run formed it (map2d.pt's ``mixer_A``: float32 values, used in float64
    here instead of A = −exp(A_log) formed in float32, whose last bits depend on the CPU's exp)."""
    for blk, a in zip(encoder.blocks, mixer_a):
        blk.mixer.a_float32 = False
        with torch.no_grad():
            blk.mixer.A_log.copy_(torch.log(-a[0]))
            blk.mixer.A_b_log.copy_(torch.log(-a[1]))


def load_map2d(folder: str, form: str = "pretrainer", recorded_a: bool = True, **overrides):
    """The MAP 2D preset for map2d.pt, in float64: ``form`` ``pretrainer`` (the release's objective),
    ``hybrid`` (the register classifier with the attention blocks) or ``mambar`` (Mamba-Reg's). The weights are
    saved in ``folder`` as the release's main.py saves them (``{"model", "model_ema", "args"}``; for ``mambar``
    Mamba-Reg's keys) and read by the public loader; ``recorded_a``: :func:`use_recorded_a`. (model, fixture,
    LoadResult)."""
    import argparse

    fx = fixture("map2d")
    c = fx["config"]
    size = dict(img_size=c["img_size"], embed_dim=c["embed_dim"], depth=c["depth"], num_heads=c["num_heads"])
    state = fx["state_dict"]
    if form == "pretrainer":
        model = pointmap.create_pretrainer("map_tiny_patch16_224", decoder_embed_dim=c["decoder_embed_dim"],
                                           decoder_num_heads=c["decoder_num_heads"], **size, **overrides)
    else:
        name = "mambar_tiny_patch16_224" if form == "mambar" else "map_tiny_patch16_224"
        model = pointmap.create_model(name, num_classes=c["num_classes"], num_registers=c["num_cls_tokens"],
                                      reduce=c["cls_reduce"], **size, **overrides)
        if form == "mambar":
            state = {k: v for k, v in state.items() if not k.startswith(MAP2D_NOT_IN_MAMBA_REG)}
    model = model.double().eval()
    path = os.path.join(folder, f"map2d_{form}.pth")
    torch.save({"model": state, "model_ema": state, "epoch": 1599, "args": argparse.Namespace(model=fx["model"])}, path)
    res = load_checkpoint(model, path, source="auto", whole=True)
    if recorded_a:
        use_recorded_a(model.encoder, fx["outputs"]["mixer_A"])
    return model, fx, res


def _preset(name, folder, **overrides):
    model, fx, _ = load_preset(name, folder, **overrides)
    return model, fx["input"], fx["outputs"]


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


def _one_at_a_time(model, x):
    return torch.cat([model(x[i:i + 1]) for i in range(len(x))])


@torch.no_grad()
def measure() -> dict:
    """{preset: {figure: largest absolute difference}}; ``*_quirk`` figures are peer behaviour a preset leaves
    out by default (how far the default is from the peer there), the others what it reproduces."""
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        model, x, out = _preset("point_mae", tmp)
        res["pointmae"] = {"batch": max(max_diff(model(x), out["logits"]),
                                        max_diff(model.forward_features(x), out["features"]))}
        model, x, out = _preset("pointmamba", tmp)
        res["pointmamba"] = {"batch": max(max_diff(model(x), out["logits"]),
                                          max_diff(model.forward_features(x), out["features"])),
                             "one_at_a_time": max_diff(_one_at_a_time(model, x), out["b1_logits"]),
                             "batch_depth_quirk": max_diff(out["logits"][2], out["b1_logits"][2])}
        for name in ("map3d", "mamba3d"):
            model, x, out = _preset(name, tmp)
            logits = model(x)
            figures = {"one_at_a_time": max_diff(_one_at_a_time(model, x), out["b1_logits"]),
                       "batch_cloud_0": max_diff(logits[0], out["logits"][0]),
                       "sample0_pooling_quirk": max_diff(logits[1:], out["logits"][1:])}
            model, x, out = _preset(name, tmp, global_pool="cls_maxmean_sample0")
            figures["batch_sample0_pooling"] = max(max_diff(model(x), out["logits"]),
                                                   max_diff(model.forward_features(x), out["features"]))
            res[PRESETS[name][0]] = figures
        pre, fx, _ = load_map2d(tmp)
        o, x = fx["outputs"], fx["input"]
        out = pre(x, mask=o["mask"].bool())
        vis = (~o["mask"].bool()).nonzero()[:, 1].reshape(len(x), -1)
        tokens, _ = pre.encoder.forward_tokens(o["encoder_input"])
        res["map_tiny_patch16_224"] = {"encoder_tokens": max_diff(tokens, o["encoder_tokens"]),
                                       "pred": max_diff(pre.decoder(tokens, vis), o["pred"]),
                                       "loss": max_diff(out.loss, o["loss"])}
        clf, fx, _ = load_map2d(tmp, "mambar")
        res["mambar_tiny_patch16_224"] = {"logits": max_diff(clf(x), fx["mambar"]["outputs"]["logits"])}
    fx = fixture("mamba_mixer")
    mixer = MambaMixer(**{k: v for k, v in fx["config"].items() if k != "use_fast_path"}).double().eval()
    mixer.load_state_dict(fx["state_dict"])
    res["mamba_mixer"] = {"y": max_diff(mixer(fx["input"]), fx["outputs"]["y"])}
    return res


def sci(x: float, digits: int = 0) -> str:
    """How docs/models.md writes a difference: ``2e-16``, ``1.7e-2``."""
    mantissa, exp = f"{x:.{digits}e}".split("e")
    return f"{mantissa}e{int(exp)}"


def _run():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=None, metavar="FILE", help="write the figures as JSON to FILE")
    add_debug_flag(p)
    args = p.parse_args()
    res = {"torch": torch.__version__, "dtype": "float64", "differences": measure()}
    if args.json:
        atomic_write(os.path.abspath(args.json), lambda f: f.write(json.dumps(res, indent=1) + "\n"), binary=False)
    return res


def _summary(res) -> str:
    return "\n".join(f"{preset:15s} {fig:22s} {sci(v, 1)}" for preset, figs in res["differences"].items()
                     for fig, v in figs.items())


if __name__ == "__main__":
    main(_run, summary=_summary)
