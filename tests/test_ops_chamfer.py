import numpy as np
import pytest
import torch

from pointmap.ops import chamfer, chamfer_ref
from pointmap.ops.testing import random_cloud


def test_hand_worked_example():
    a = torch.tensor([[[0., 0, 0], [2, 0, 0]]])
    b = torch.tensor([[[0., 1, 0]]])
    # a->b squared: 1, 5 (mean 3); b->a: 1 (mean 1)
    assert chamfer(a, b, norm=2).item() == pytest.approx(4.0)
    # a->b: 1, sqrt(5) (mean (1+sqrt5)/2); b->a: 1; halved sum
    assert chamfer(a, b, norm=1).item() == pytest.approx(((1 + 5 ** 0.5) / 2 + 1) / 2)


def chamfer_numpy(a: np.ndarray, b: np.ndarray, norm: int) -> float:
    """An independent oracle for one pair of sets: loops over the points in float64, Point-MAE's definitions."""
    def nearest(p, q):
        return np.array([min(float(((x - y) ** 2).sum()) for y in q) for x in p])

    d_ab, d_ba = nearest(a.astype(np.float64), b), nearest(b.astype(np.float64), a)
    if norm == 2:
        return d_ab.mean() + d_ba.mean()
    return (np.sqrt(d_ab).mean() + np.sqrt(d_ba).mean()) / 2


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backends_equal_oracle(backend, norm, dtype):
    a, b = random_cloud(8, 32, dtype, seed=1), random_cloud(8, 40, dtype, seed=2)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    per_pair = torch.tensor([chamfer_numpy(x.numpy(), y.numpy(), norm) for x, y in zip(a, b)], dtype=torch.float64)
    assert abs(chamfer(a, b, norm, backend=backend).item() - per_pair.mean().item()) < tol
    per = chamfer(a, b, norm, reduction="none", backend=backend)
    assert per.shape == (8,) and torch.allclose(per.double(), per_pair, atol=tol)


def test_identical_sets_give_zero_and_finite_gradient():
    a = random_cloud(2, 16).requires_grad_()
    for norm in (1, 2):
        loss = chamfer(a, a.detach().clone(), norm)
        loss.backward()
        assert loss.item() == pytest.approx(0.0, abs=1e-6) and torch.isfinite(a.grad).all()
        a.grad = None


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("norm", [1, 2])
def test_gradcheck(backend, norm):
    a = random_cloud(2, 6, torch.float64, seed=3).requires_grad_()
    b = random_cloud(2, 5, torch.float64, seed=4).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: chamfer(x, y, norm, backend=backend), (a, b))


@pytest.mark.gpu
def test_gpu_agrees_with_cpu():
    a, b = random_cloud(64, 32, seed=1), random_cloud(64, 32, seed=2)
    for norm in (1, 2):
        assert torch.allclose(chamfer(a.cuda(), b.cuda(), norm).cpu(), chamfer_ref(a, b, norm), atol=1e-5)
