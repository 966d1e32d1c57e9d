"""How closely the peer presets compute what the peers' own code computes: the largest difference, in float64,
between each preset loaded with a peer's weights and that peer's recorded outputs (tests/fixtures/peers/, made
by the peers' code), and the size of each peer quirk a preset does not keep by default. docs/models.md quotes
these figures; tests/test_peer_fidelity.py holds each below 1e-10 and checks the page against docs/fidelity.json.

    python tools/fidelity.py                          # the table
    python tools/fidelity.py --json docs/fidelity.json
"""
import argparse
import json
import os
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
