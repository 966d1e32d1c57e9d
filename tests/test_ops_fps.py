import sys
import types

import numpy as np
import pytest
import torch

from pointmap.errors import UnavailableError
from pointmap.ops import _backend, available_backends, fps, fps_ref
from pointmap.ops.testing import cloud_with_duplicates, random_cloud

CPU_BACKENDS = [b for b in available_backends("fps") if b in ("cpu", "torch")]
SHAPES = [(1, 1, 1), (1, 7, 7), (2, 100, 100), (3, 1000, 37), (2, 2048, 512), (4, 333, 64)]


def fps_numpy(pts: np.ndarray, n: int) -> list:
    """An independent oracle: the textbook algorithm on one cloud, in numpy float arithmetic."""
    dist = np.full(len(pts), np.inf, dtype=pts.dtype)
    out, far = [0], 0
    for _ in range(1, n):
        d = pts - pts[far]
        dd = d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2]
        dist = np.minimum(dist, dd)
        far = int(np.argmax(dist))
        out.append(far)
    return out


def textbook(xyz: torch.Tensor, n: int) -> list:
    return [fps_numpy(cloud.numpy(), n) for cloud in xyz]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reference_matches_textbook(dtype):
    xyz = random_cloud(3, 300, dtype)
    idx = fps_ref(xyz, 50)
    assert idx.tolist() == textbook(xyz, 50)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B,N,n", SHAPES)
def test_backends_equal_textbook(backend, dtype, B, N, n):
    xyz = random_cloud(B, N, dtype, seed=N)
    idx = fps(xyz, n, backend=backend)
    assert idx.dtype == torch.long and idx.shape == (B, n)
    assert idx.tolist() == textbook(xyz, n)  # the oracle, not fps_ref: the torch backend *is* fps_ref
    assert (idx[:, 0] == 0).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_duplicates_and_n_equal_N(backend):
    xyz = cloud_with_duplicates(3, 200)
    for n in (10, 64, 200):
        assert fps(xyz, n, backend=backend).tolist() == textbook(xyz, n)


def test_all_distinct_picks_every_point_once():
    xyz = random_cloud(2, 97)
    idx = fps(xyz, 97)
    assert all(sorted(row) == list(range(97)) for row in idx.tolist())


def test_ties_go_to_lowest_index():
    # corners of a square, then its center: after index 0 the opposite corner (3) is farthest;
    # then corners 1 and 2 tie and 1 must win.
    xyz = torch.tensor([[[0., 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0.5, 0.5, 0]]])
    for backend in CPU_BACKENDS:
        assert fps(xyz, 4, backend=backend).tolist() == [[0, 3, 1, 2]]


def test_matches_fpsample_package():
    fpsample = pytest.importorskip("fpsample")
    xyz = random_cloud(2, 1000)
    idx = fps(xyz, 100)
    for b in range(2):
        ref = fpsample.fps_sampling(xyz[b].numpy(), 100, start_idx=0)
        assert sorted(ref.tolist()) == sorted(idx[b].tolist())


def test_half_precision_input_is_accepted():
    xyz = random_cloud(1, 64).to(torch.bfloat16)
    assert fps(xyz, 8).shape == (1, 8)


@pytest.mark.gpu
@pytest.mark.parametrize("skip_near_origin", [False, True])
@pytest.mark.parametrize("backend", ["auto", "cuda", "torch", "pointnet2_ops"])
@pytest.mark.parametrize("B,N,n", SHAPES + [(128, 1024, 64), (32, 8192, 512)])
def test_gpu_equals_cpu_reference(backend, B, N, n, skip_near_origin):
    """On clouds with points near the origin (every third cloud's points 1 and N//2), for both variants;
    pointnet2_ops computes only the near-origin one."""
    if backend != "auto" and backend not in available_backends("fps"):
        pytest.skip(f"{backend} not available")
    if backend == "pointnet2_ops" and not skip_near_origin:
        pytest.skip("pointnet2_ops computes skip_near_origin=True only")
    xyz = random_cloud(B, N, seed=N)
    xyz[::3, [min(1, N - 1), N // 2]] = 0.01
    idx = fps(xyz.cuda(), n, backend=backend, skip_near_origin=skip_near_origin).cpu()
    assert torch.equal(idx, fps_ref(xyz, n, skip_near_origin=skip_near_origin))


@pytest.mark.gpu
def test_cuda_kernel_passes_its_first_use_check():
    if "cuda" not in available_backends("fps"):
        pytest.skip("pointmap's CUDA FPS is not built here")
    from pointmap.ops.fps import _fps_cuda, selfcheck

    assert selfcheck(_fps_cuda, fps_ref, torch.device("cuda")) is None


def _cloud_near_origin(dtype):
    """Random points on the unit sphere with two points within 0.03 of the origin (as in the peer fixtures)."""
    xyz = random_cloud(2, 300, dtype, seed=3)
    xyz = xyz / xyz.norm(dim=-1, keepdim=True)
    xyz[:, 100] = torch.tensor([0.01, -0.02, 0.0], dtype=dtype)
    xyz[:, 200] = torch.tensor([0.0, 0.0, 0.0], dtype=dtype)
    return xyz


def fps_pointnet2_numpy(pts: np.ndarray, n: int) -> list:
    """pointnet2_ops' furthest_point_sampling written out: points with x²+y²+z² ≤ 1e-3 are skipped when
    looking for the farthest point (never chosen after index 0)."""
    near = (pts * pts).sum(-1) <= 1e-3
    dist = np.full(len(pts), 1e10, dtype=pts.dtype)
    out, far = [0], 0
    for _ in range(1, n):
        d = pts - pts[far]
        dist = np.minimum(dist, d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2])
        far = int(np.argmax(np.where(near, -1.0, dist)))
        out.append(far)
    return out


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_skip_near_origin_is_pointnet2s_rule(backend, dtype):
    xyz = _cloud_near_origin(dtype)
    got = fps(xyz, 64, backend=backend, skip_near_origin=True)
    for b in range(2):
        assert got[b].tolist() == fps_pointnet2_numpy(xyz[b].numpy(), 64)
    plain = fps(xyz, 64, backend=backend)
    assert not torch.equal(plain, got) and {100, 200} & set(plain[0].tolist())  # the default does pick them
    assert not {100, 200} & set(got.flatten().tolist())


def test_skip_near_origin_keeps_a_first_point_at_the_origin():
    xyz = _cloud_near_origin(torch.float64)
    xyz[:, 0] = 0.0
    idx = fps(xyz, 16, skip_near_origin=True)
    assert (idx[:, 0] == 0).all() and not {100, 200} & set(idx.flatten().tolist())
    for b in range(2):
        assert idx[b].tolist() == fps_pointnet2_numpy(xyz[b].numpy(), 16)


@pytest.fixture
def pointnet2_stand_in(monkeypatch):
    """pointnet2_ops installed, as it behaves on a GPU, on the CPU: its furthest_point_sample never picks a point
    near the origin after the first, whatever it is asked; the registered backend (ahead of ``cpu`` and ``torch``)
    may run on CPU tensors. Yields the sizes it was called with."""
    calls = []

    def furthest_point_sample(xyz, n):
        calls.append(n)
        return torch.tensor([fps_pointnet2_numpy(c.numpy(), n) for c in xyz], dtype=torch.int32)

    package, utils = types.ModuleType("pointnet2_ops"), types.ModuleType("pointnet2_ops.pointnet2_utils")
    utils.furthest_point_sample, package.pointnet2_utils = furthest_point_sample, utils
    monkeypatch.setitem(sys.modules, "pointnet2_ops", package)
    monkeypatch.setitem(sys.modules, "pointnet2_ops.pointnet2_utils", utils)
    backend = next(b for b in _backend._REGISTRY["fps"] if b.name == "pointnet2_ops")
    monkeypatch.setattr(backend, "supports", lambda xyz: True)
    yield calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_auto_gives_the_same_indices_with_pointnet2_ops_installed(pointnet2_stand_in, dtype):
    """With pointnet2_ops present and first in line, ``auto`` still gives the plain rule's indices on a cloud with
    points inside the origin ball, and uses pointnet2_ops for the near-origin variant, which it computes."""
    xyz = _cloud_near_origin(dtype)
    plain = fps(xyz, 64)
    assert plain.tolist() == textbook(xyz, 64) and {100, 200} & set(plain[0].tolist())
    assert pointnet2_stand_in == []
    quirk = fps(xyz, 64, skip_near_origin=True)
    assert pointnet2_stand_in == [64]
    assert quirk.tolist() == [fps_pointnet2_numpy(c.numpy(), 64) for c in xyz]


def test_pointnet2_ops_by_name_refuses_the_plain_rule(pointnet2_stand_in):
    xyz = _cloud_near_origin(torch.float32)
    with pytest.raises(UnavailableError, match=r"fps backend 'pointnet2_ops' computes fps with skip_near_origin=True "
                                               r"only, not skip_near_origin=False"):
        fps(xyz, 8, backend="pointnet2_ops")
    assert pointnet2_stand_in == []
    assert fps(xyz, 8, backend="pointnet2_ops", skip_near_origin=True).tolist() == \
        [fps_pointnet2_numpy(c.numpy(), 8) for c in xyz]
