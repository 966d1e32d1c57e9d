"""How closely the peer presets compute what the peers' own code computes: the largest difference, in float64,
between each preset loaded with a peer's weights and that peer's recorded outputs (tests/fixtures/peers/, made
by the peers' code), and the size of each peer quirk a preset does not keep by default. docs/models.md quotes
these figures (docs/map2d.md those of the MAP 2D release's presets); tests/test_peer_fidelity.py and
tests/test_map2d*.py hold each below its tolerance and check the pages against docs/fidelity.json.

The Mamba presets' figures depend on the CPU: the peers form A = −exp(A_log) in float32, and float32 ``exp``
differs in the last bit between CPUs (the fixtures were made on an AMD EPYC). So the file records the machine
(CPU model name), how many of the fixtures' A values this CPU's float32 exp puts one ulp or more from the
correctly rounded value, and how far each figure moves when every element of A moves by one ulp
(``one_ulp_of_a``: what the tests' tolerance for these presets is sized from). Where torch uses MKL, the
figures are measured once more in a fresh process with ``MKL_CBWR=COMPATIBLE`` (``mkl_compatible``): MKL's
code path that gives the same results on every CPU, which reproduces the fixtures' own A.

    python tools/fidelity.py                          # the table
    python tools/fidelity.py --json docs/fidelity.json
"""
import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile

import torch

from _common import main

import pointmap
from pointmap.atomic import atomic_write
from pointmap.errors import add_debug_flag
from pointmap.layers import MambaMixer
from pointmap.layers import mamba as mamba_layer
from pointmap.models import load_checkpoint, pooled_features

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
                                        max_diff(pooled_features(model, x), out["features"]))}
        model, x, out = _preset("pointmamba", tmp)
        res["pointmamba"] = {"batch": max(max_diff(model(x), out["logits"]),
                                          max_diff(pooled_features(model, x), out["features"])),
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
                                                   max_diff(pooled_features(model, x), out["features"]))
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


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo's "model name", else what the platform module says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How many float32 steps apart a and b are (same sign, finite)."""
    return (a.view(torch.int32).long() - b.view(torch.int32).long()).abs()


def float32_exp() -> dict:
    """The fixtures' A = −exp(A_log) as this CPU forms it in float32, against the correctly rounded value:
    {"values", "off_by_one_ulp" (how many differ), "max_ulp"}."""
    logs = [v.reshape(-1) for name in ("pointmamba", "map3d", "mamba3d", "mamba_mixer")
            for k, v in fixture(name)["state_dict"].items() if k.endswith(("A_log", "A_b_log"))]
    a_log = torch.cat(logs)
    off = _ulps(mamba_layer.float32_a(a_log), (-torch.exp(a_log.float().double())).float())
    return {"values": a_log.numel(), "off_by_one_ulp": int((off > 0).sum()), "max_ulp": int(off.max())}


@contextlib.contextmanager
def a_one_ulp_off(seed: int = 0):
    """Inside, every Mamba mixer's float32 A is one ulp up or down (a random sign per element, seeded): what
    a CPU whose float32 exp differs in the last bit everywhere would compute."""
    form = mamba_layer.float32_a
    gen = torch.Generator().manual_seed(seed)

    def nudged(a_log):
        a = form(a_log)
        step = torch.randint(0, 2, a.shape, generator=gen, dtype=torch.int32) * 2 - 1
        return (a.view(torch.int32) + step).view(torch.float32)

    mamba_layer.float32_a = nudged
    try:
        yield
    finally:
        mamba_layer.float32_a = form


def one_ulp_of_a(base: dict) -> dict:
    """{preset: the most any of its reproduced figures moves with A one ulp off (:func:`a_one_ulp_off`)}."""
    with a_one_ulp_off():
        nudged = measure()
    return {preset: max(abs(nudged[preset][k] - v) for k, v in figures.items() if not k.endswith("_quirk"))
            for preset, figures in base.items()}


def mkl_compatible():
    """The differences of :func:`measure`, measured in a fresh process with ``MKL_CBWR=COMPATIBLE`` (MKL's
    CPU-independent code path); None where torch has no MKL or this process already runs with MKL_CBWR set."""
    if not torch.backends.mkl.is_available() or os.environ.get("MKL_CBWR"):
        return None
    tools = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "MKL_CBWR": "COMPATIBLE",
           "PYTHONPATH": os.pathsep.join(p for p in (tools, os.environ.get("PYTHONPATH")) if p)}
    code = "import json, fidelity; print(json.dumps(fidelity.measure()))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def sci(x: float, digits: int = 0) -> str:
    """How docs/models.md writes a difference: ``2e-16``, ``1.7e-2``."""
    mantissa, exp = f"{x:.{digits}e}".split("e")
    return f"{mantissa}e{int(exp)}"


def _run():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=None, metavar="FILE", help="write the figures as JSON to FILE")
    add_debug_flag(p)
    args = p.parse_args()
    differences = measure()
    res = {"cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
           "mkl": torch.backends.mkl.is_available(), "dtype": "float64", "differences": differences,
           "float32_exp": float32_exp(), "one_ulp_of_a": one_ulp_of_a(differences)}
    compatible = mkl_compatible()
    if compatible is not None:
        res["mkl_compatible"] = compatible
    if args.json:
        atomic_write(os.path.abspath(args.json), lambda f: f.write(json.dumps(res, indent=1) + "\n"), binary=False)
    return res


def _summary(res) -> str:
    e = res["float32_exp"]
    lines = [f"{res['cpu']} ({res['cpu_capability']}): float32 exp puts {e['off_by_one_ulp']} of the fixtures' "
             f"{e['values']} A values {e['max_ulp']} ulp from correctly rounded"]
    lines += [f"{preset:15s} {fig:22s} {sci(v, 1)}" for preset, figs in res["differences"].items()
              for fig, v in figs.items()]
    lines += [f"{preset:15s} {'one ulp of A moves it':22s} {sci(v, 1)}" for preset, v in res["one_ulp_of_a"].items()]
    lines += [f"{preset:15s} {fig + ' (MKL_CBWR=COMPATIBLE)':22s} {sci(v, 1)}"
              for preset, figs in res.get("mkl_compatible", {}).items() for fig, v in figs.items()
              if not fig.endswith("_quirk")]
    return "\n".join(lines)


if __name__ == "__main__":
    main(_run, summary=_summary)
