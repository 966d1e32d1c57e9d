"""Bad input gets a ValueError naming the argument and the shape or value at fault."""
import pytest
import torch

from pointmap.ops import chamfer, fps, group, knn, selective_scan, serialize, set_backend
from pointmap.ops.testing import random_cloud


@pytest.mark.parametrize("call,match", [
    (lambda: fps(torch.rand(2, 10, 2), 4), r"xyz must have shape \(B, N, 3\), got \(2, 10, 2\)"),
    (lambda: fps(torch.rand(10, 3), 4), r"xyz must have shape \(B, N, 3\), got \(10, 3\)"),
    (lambda: fps(torch.rand(2, 10, 3), 11), r"n=11 is larger than N \(number of points\)=10"),
    (lambda: fps(torch.rand(2, 10, 3), 0), r"n must be >= 1, got 0"),
    (lambda: fps(torch.randint(0, 5, (2, 10, 3)), 4), r"xyz must be a floating-point tensor, got dtype torch.int64"),
    (lambda: fps(torch.tensor([[[0., 0, 0], [float("nan"), 0, 0]]]), 1),
     r"xyz has non-finite values \(first at index \(0, 1, 0\)\)"),
    (lambda: knn(torch.rand(1, 4, 3), torch.rand(1, 5, 3), 6), r"k=6 is larger than N"),
    (lambda: knn(torch.rand(1, 4, 3), torch.rand(2, 5, 3), 2), r"query and points have different batch sizes"),
    (lambda: knn(torch.rand(1, 4, 3), torch.rand(1, 5, 3).double(), 2), r"query is torch.float32 but points is torch.float64"),
    (lambda: knn(torch.rand(1, 4, 3), torch.tensor([[[float("inf"), 0, 0]]]), 1), r"points has non-finite values"),
    (lambda: group(torch.rand(1, 20, 3), 4, 21), r"group_size=21 is larger than N"),
    (lambda: group(torch.rand(1, 20, 3), 21, 4), r"num_group=21 is larger than N"),
    (lambda: chamfer(torch.rand(1, 4, 3), torch.rand(1, 5, 2)), r"b must have shape \(B, N, 3\), got \(1, 5, 2\)"),
    (lambda: chamfer(torch.rand(1, 4, 3), torch.rand(1, 5, 3), norm=3), r"norm must be 1 or 2, got 3"),
    (lambda: serialize(torch.rand(1, 8, 3), "peano"), r"unknown serialization order 'peano'"),
    (lambda: selective_scan(torch.rand(1, 4, 5), torch.rand(1, 4, 5), torch.rand(3, 2), torch.rand(1, 2, 5),
                            torch.rand(1, 2, 5)), r"A must have shape \(D=4, N\), got \(3, 2\)"),
    (lambda: selective_scan(torch.rand(1, 4, 5), torch.rand(1, 4, 5), torch.rand(4, 2), torch.rand(1, 3, 5),
                            torch.rand(1, 2, 5)), r"B must have shape"),
    (lambda: selective_scan(torch.rand(1, 4, 5), torch.rand(1, 4, 6), torch.rand(4, 2), torch.rand(1, 2, 5),
                            torch.rand(1, 2, 5)), r"delta must have the shape of u"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_unknown_backend_lists_choices():
    with pytest.raises(ValueError, match=r"unknown fps backend 'fast'; choose one of \['auto', 'cuda'"):
        fps(random_cloud(1, 8), 2, backend="fast")


def test_missing_backend_says_how_to_install():
    with pytest.raises(RuntimeError, match="install pointnet2_ops"):
        fps(random_cloud(1, 8), 2, backend="pointnet2_ops")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="mamba-ssm"):
            x = torch.rand(1, 4, 5)
            selective_scan(x, x, -torch.rand(4, 2), torch.rand(1, 2, 5), torch.rand(1, 2, 5), backend="mamba_ssm")


def test_environment_and_config_override(monkeypatch):
    calls = []
    from pointmap.ops import _backend

    backend = next(b for b in _backend._REGISTRY["fps"] if b.name == "torch")
    original = backend.fn
    monkeypatch.setattr(backend, "fn", lambda *a: calls.append("torch") or original(*a))
    xyz = random_cloud(1, 16)
    monkeypatch.setenv("POINTMAP_FPS_BACKEND", "torch")
    fps(xyz, 4)
    assert calls == ["torch"]
    monkeypatch.delenv("POINTMAP_FPS_BACKEND")
    set_backend("fps", "torch")
    try:
        fps(xyz, 4)
        assert calls == ["torch", "torch"]
    finally:
        set_backend("fps", None)
    with pytest.raises(ValueError, match="unknown op"):
        set_backend("fft", "torch")


def test_backend_discovery_tolerates_a_module_without_spec(monkeypatch):
    """A stand-in pointnet2_ops put in sys.modules without __spec__ makes find_spec raise ValueError;
    discovery treats it as present and never crashes."""
    import sys
    import types

    from pointmap.ops import available_backends
    from pointmap.ops._backend import module_present

    stub = types.ModuleType("pointnet2_ops")
    stub.__spec__ = None
    monkeypatch.setitem(sys.modules, "pointnet2_ops", stub)
    assert module_present("pointnet2_ops")
    assert "pointnet2_ops" in available_backends("fps")
    assert not module_present("surely_not_a_module_pointmap_knows")
