"""Kernels no GPU has run yet check themselves on first use: a kernel made to return wrong values is
caught, warned about once with the figures, and the PyTorch path runs instead, so a training run gives
the PyTorch path's numbers; POINTMAP_TRUST_KERNELS=1 skips the check. On this CPU machine the kernels
are stand-ins: the real backends' entries with their function replaced and made to run here."""
import json
import os
import warnings

import pytest
import torch

from pointmap.config import load_config
from pointmap.engine import Trainer
from pointmap.ops import KernelMismatchWarning, _backend, fps, fps_ref, kernel_checks, selective_scan
from pointmap.ops.selective_scan import selective_scan_torch
from pointmap.ops.testing import random_cloud, scan_inputs

DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cfgs", "map_demo.yaml")
SCAN_ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def stand_in(monkeypatch, op, name, fn):
    """Make ``op``'s registered backend ``name`` run ``fn`` on any tensors here, unchecked so far."""
    backend = next(b for b in _backend._REGISTRY[op] if b.name == name)
    assert backend.selfcheck is not None  # the real entry is one that checks itself
    monkeypatch.setattr(backend, "fn", fn)
    monkeypatch.setattr(backend, "available", lambda: True)
    monkeypatch.setattr(backend, "supports", lambda *t: True)
    monkeypatch.setattr(_backend, "_VERDICTS", {})
    monkeypatch.delenv("POINTMAP_TRUST_KERNELS", raising=False)


def wrong_scan(*args):
    out = selective_scan_torch(*args)
    return (out[0] * 1.5, out[1]) if isinstance(out, tuple) else out * 1.5


def test_a_wrong_fps_kernel_warns_once_and_the_reference_answers(monkeypatch):
    stand_in(monkeypatch, "fps", "cuda", lambda xyz, n: fps_ref(xyz, n).flip(-1))
    xyz = random_cloud(3, 200, seed=4)
    with pytest.warns(KernelMismatchWarning, match=r"fps backend 'cuda' disagrees with 'torch'.*128 of 128 indices"):
        assert torch.equal(fps(xyz, 16), fps_ref(xyz, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: the verdict is kept
        assert torch.equal(fps(xyz, 16), fps_ref(xyz, 16))
    assert kernel_checks()["fps cuda on cpu"].startswith("128 of 128 indices differ")


def test_a_kernel_that_agrees_is_used_and_trust_skips_the_check(monkeypatch):
    calls = []

    def right(xyz, n):
        calls.append(n)
        return fps_ref(xyz, n)

    stand_in(monkeypatch, "fps", "cuda", right)
    xyz = random_cloud(2, 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fps(xyz, 8)
    assert calls == [64, 8] and kernel_checks() == {"fps cuda on cpu": "agrees"}  # the check, then the call
    stand_in(monkeypatch, "fps", "cuda", lambda xyz, n: fps_ref(xyz, n).flip(-1))
    monkeypatch.setenv("POINTMAP_TRUST_KERNELS", "1")
    assert torch.equal(fps(xyz, 8), fps_ref(xyz, 8).flip(-1)) and kernel_checks() == {}


def test_a_wrong_scan_kernel_and_one_that_raises_fall_back(monkeypatch):
    t = scan_inputs(2, 4, 9, 3, requires_grad=False)
    want = selective_scan_torch(*(t[k] for k in SCAN_ARGS), True)
    stand_in(monkeypatch, "selective_scan", "triton", wrong_scan)
    with pytest.warns(KernelMismatchWarning, match="selective_scan backend 'triton'.*out off by 0.5 of its largest"):
        assert torch.equal(selective_scan(*(t[k] for k in SCAN_ARGS), delta_softplus=True), want)

    def broken(*args):
        raise RuntimeError("no kernel image is available for execution on the device")

    stand_in(monkeypatch, "selective_scan", "triton", broken)
    with pytest.warns(KernelMismatchWarning, match="its check raised RuntimeError: no kernel image"):
        assert torch.equal(selective_scan(*(t[k] for k in SCAN_ARGS), delta_softplus=True), want)
    assert selective_scan(*(t[k] for k in SCAN_ARGS), delta_softplus=True, backend="torch").equal(want)


def test_a_run_with_a_wrong_scan_kernel_equals_the_pytorch_path(tmp_path, monkeypatch):
    """The demo pretraining (Mamba blocks: selective_scan on every step) with the Triton entry replaced by
    a wrong kernel: the warning, the run's losses equal to a run told to use torch, both recorded."""
    tiny = ["optim.epochs=1", "optim.warmup_epochs=0", "data.batch_size=8", "train.progress=false",
            "data.options={size: 16, num_points: 64}", "objective.decoder_heads=2",
            "model.args={embed_dim: 16, num_heads: 2, layout: MT, num_group: 16, group_size: 8}"]
    stand_in(monkeypatch, "selective_scan", "triton", wrong_scan)
    with pytest.warns(KernelMismatchWarning, match="selective_scan backend 'triton' disagrees"):
        guarded = Trainer(load_config(DEMO, tiny), work_dir=str(tmp_path / "auto"), device="cpu").fit()
    forced = Trainer(load_config(DEMO, tiny + ["ops={selective_scan: torch}"]), work_dir=str(tmp_path / "torch"),
                     device="cpu").fit()
    assert guarded["history"][0]["train"] == forced["history"][0]["train"]
    meta = json.loads((tmp_path / "auto" / "meta.json").read_text())
    assert meta["backends"]["selective_scan"] == ["torch"]
    assert meta["kernel_checks"]["selective_scan triton on cpu"].startswith("out off by 0.5")
    assert torch.load(tmp_path / "auto" / "ckpt-last.pth", weights_only=False)["meta"]["backends"] == meta["backends"]
