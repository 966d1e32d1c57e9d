"""Point-cloud transforms: semantics of each, keys that follow the points, batches, config building."""
import math

import pytest
import torch

from pointmap.data import build_dataset, build_transforms
from pointmap.data.transforms import Dropout, Jitter, Normalize, Rotate, Sample, ScaleTranslate


def _item(n=100):
    pts = torch.randn(n, 3)
    nrm = torch.nn.functional.normalize(torch.randn(n, 3), dim=1)
    return {"points": pts, "normals": nrm, "seg": torch.arange(n), "label": torch.tensor(3)}


@pytest.mark.parametrize("method", ["random", "fps", "first"])
def test_sample_keeps_keys_aligned(method):
    item = _item()
    out = Sample(32, method)(item)
    assert out["points"].shape == (32, 3) and out["normals"].shape == (32, 3) and out["seg"].shape == (32,)
    torch.testing.assert_close(out["points"], item["points"][out["seg"]])  # seg = original index
    torch.testing.assert_close(out["normals"], item["normals"][out["seg"]])
    assert out["label"] == 3
    if method != "random":
        assert out["seg"][0] == 0  # first and FPS both start at index 0
    if method == "random":
        assert len(set(out["seg"].tolist())) == 32  # without replacement


def test_sample_fps_matches_ops_and_pads_small_clouds():
    from pointmap.ops import fps

    pts = torch.randn(64, 3)
    assert torch.equal(Sample(16, "fps")(pts), pts[fps(pts[None], 16)[0]])
    small = Sample(50, "random")(_item(20))
    assert small["points"].shape == (50, 3) and set(small["seg"].tolist()) == set(range(20))


def test_normalize_unit_sphere():
    out = Normalize()(torch.randn(200, 3) * 5 + 3)
    torch.testing.assert_close(out.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    assert abs(float(out.norm(dim=1).max()) - 1.0) < 1e-5


def _linear_map(before, after):
    """The 3x3 M with after = before @ M.T, from the points (least squares; exact for a linear map)."""
    return torch.linalg.lstsq(before.double(), after.double()).solution.T


@pytest.mark.parametrize("axis", ["x", "y", "z"])
def test_rotate_turns_points_and_normals_by_one_rotation(axis):
    """p' = R p and n' = R n with the same R: a rotation about ``axis`` (orthogonal, det 1, axis fixed)."""
    torch.manual_seed(0)
    item = _item()
    out = Rotate(axis, 180)(item)
    rot = _linear_map(item["points"], out["points"])
    a = "xyz".index(axis)
    torch.testing.assert_close(rot @ rot.T, torch.eye(3, dtype=torch.float64), atol=1e-5, rtol=0)
    assert abs(float(torch.linalg.det(rot)) - 1.0) < 1e-5 and not torch.allclose(rot, torch.eye(3, dtype=rot.dtype))
    torch.testing.assert_close(rot[:, a], torch.eye(3, dtype=rot.dtype)[a], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["normals"].double(), item["normals"].double() @ rot.T, atol=1e-5, rtol=0)


@pytest.mark.parametrize("anisotropic", [True, False])
def test_scale_translate_moves_normals_by_the_inverse_scale(anisotropic):
    """p' = s p + t per axis, and n' = (n / s) / |n / s|: the normals of the scaled surface."""
    torch.manual_seed(1)
    item = _item()
    out = ScaleTranslate(0.5, 2.0, 0.1, anisotropic=anisotropic)(item)
    p, q = item["points"].double(), out["points"].double()
    scale = (q[1] - q[0]) / (p[1] - p[0])
    shift = q[0] - scale * p[0]
    torch.testing.assert_close(q, p * scale + shift, atol=1e-5, rtol=0)
    assert ((scale >= 0.5) & (scale <= 2.0)).all() and (shift.abs() <= 0.1).all()
    assert (len(set(scale.round(decimals=6).tolist())) == 3) == anisotropic
    want = item["normals"].double() / scale
    want = want / want.norm(dim=1, keepdim=True)
    torch.testing.assert_close(out["normals"].double(), want, atol=1e-5, rtol=0)
    # the surface's normals: a tangent direction t (t . n = 0) scaled as the points stay orthogonal to n'
    tangent = torch.linalg.cross(item["normals"].double(), torch.randn(100, 3, dtype=torch.float64))
    assert ((tangent * scale * out["normals"].double()).sum(1).abs() < 1e-5).all()


def test_scale_translate_is_one_scale_per_cloud():
    pts = torch.ones(10, 3)
    out = ScaleTranslate(0.5, 2.0, 0.1)({"points": pts, "normals": pts / math.sqrt(3)})
    assert ((out["points"] >= 0.4) & (out["points"] <= 2.1)).all()
    assert torch.allclose(out["points"], out["points"][0].expand(10, 3))  # one scale per cloud
    torch.testing.assert_close(out["normals"].norm(dim=1), torch.ones(10))


def test_jitter_is_clipped_and_dropout_keeps_n():
    pts = torch.zeros(500, 3)
    assert Jitter(sigma=1.0, clip=0.05)(pts).abs().max() <= 0.05
    item = _item(500)
    out = Dropout(0.875)(item)
    assert out["points"].shape == (500, 3)
    dropped = out["seg"] == 0
    torch.testing.assert_close(out["points"][dropped], item["points"][0].expand(int(dropped.sum()), 3))


def test_batched_transforms_are_per_cloud():
    batch = torch.randn(4, 64, 3)
    out = build_transforms([{"name": "rotate"}, {"name": "scale_translate"}, {"name": "jitter"},
                            {"name": "dropout"}, {"name": "sample", "num_points": 16, "method": "fps"},
                            {"name": "normalize"}])(batch)
    assert out.shape == (4, 16, 3)
    torch.testing.assert_close(out.norm(dim=-1).amax(dim=-1), torch.ones(4))
    rot = Rotate()(torch.ones(4, 1, 3))
    assert len({round(float(x), 4) for x in rot[:, 0, 0]}) == 4  # each cloud its own angle


def test_transform_option_on_a_dataset():
    cfg = [{"name": "sample", "num_points": 256, "method": "fps"}, {"name": "normalize"}]
    ds = build_dataset("synthetic", None, "val", transform=cfg, use_normals=True)
    item = ds[0]
    assert item["points"].shape == (256, 3) and item["normals"].shape == (256, 3)
    assert abs(float(item["points"].norm(dim=1).max()) - 1.0) < 1e-5


@pytest.mark.parametrize("method", ["random", "replace", "fps"])
def test_sample_with_a_seed_draws_the_same_points_every_call(method):
    """seed: every call the same indices (padding of small clouds too), apart from torch's global generator."""
    kw = {"random_start": True} if method == "fps" else {}
    for n_in in (100, 20):
        item = _item(n_in)
        state = torch.get_rng_state()
        a, b = Sample(32, method, seed=3, **kw)(item), Sample(32, method, seed=3, **kw)(item)
        assert torch.equal(torch.get_rng_state(), state)
        assert torch.equal(a["seg"], b["seg"]) and torch.equal(a["points"], item["points"][a["seg"]])
        if n_in > 32 or method != "fps":
            assert not torch.equal(a["seg"], Sample(32, method, seed=4, **kw)(item)["seg"])
    unseeded = Sample(32, method, **kw)
    assert not torch.equal(unseeded(_item())["seg"], unseeded(_item())["seg"])
