import pytest
import torch

from pointmap.ops import gather_points, group, group_ref, knn, knn_ref
from pointmap.ops.knn import knn_torch
from pointmap.ops.testing import cloud_with_duplicates, random_cloud


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B,M,N,k", [(1, 1, 1, 1), (2, 5, 37, 37), (3, 64, 1000, 32), (1, 128, 4096, 16)])
def test_knn_equals_reference(dtype, B, M, N, k):
    q, p = random_cloud(B, M, dtype, seed=1), random_cloud(B, N, dtype, seed=2)
    d, i = knn(q, p, k)
    dr, ir = knn_ref(q, p, k)
    assert d.shape == (B, M, k) and i.dtype == torch.long
    assert torch.equal(i, ir) and torch.equal(d, dr)
    assert (d[..., 1:] >= d[..., :-1]).all()


def test_knn_matches_scipy():
    spatial = pytest.importorskip("scipy.spatial")
    q, p = random_cloud(1, 50, torch.float64, seed=3), random_cloud(1, 500, torch.float64, seed=4)
    d, i = knn(q, p, 8)
    dd, ii = spatial.cKDTree(p[0].numpy()).query(q[0].numpy(), k=8)
    assert torch.allclose(d[0], torch.from_numpy(dd) ** 2)
    assert i[0].tolist() == ii.tolist()


def test_knn_ties_lowest_index_and_chunking():
    p = cloud_with_duplicates(2, 300)
    q = p[:, :40]
    for k in (1, 5, 32, 300):
        dr, ir = knn_ref(q, p, k)
        for max_elems in (1 << 25, 1000, 1):
            d, i = knn_torch(q, p, k, max_elems=max_elems)
            assert torch.equal(i, ir) and torch.equal(d, dr)


def test_knn_gradient_flows():
    q, p = random_cloud(1, 4, torch.float64).requires_grad_(), random_cloud(1, 20, torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: knn(a, b, 3)[0], (q, p))


@pytest.mark.parametrize("G,K", [(1, 1), (16, 8), (64, 32), (100, 100)])
def test_group_equals_reference(G, K):
    xyz = random_cloud(2, 100, seed=G)
    nb, c = group(xyz, G, K)
    nbr, cr = group_ref(xyz, G, K)
    assert nb.shape == (2, G, K, 3) and c.shape == (2, G, 3)
    assert torch.equal(nb, nbr) and torch.equal(c, cr)
    assert torch.equal(nb[:, :, 0], torch.zeros_like(nb[:, :, 0]))  # each center is its own nearest point


def test_group_return_idx_reconstructs_patches():
    xyz = random_cloud(2, 256)
    nb, c, idx = group(xyz, 16, 8, return_idx=True)
    assert torch.equal(gather_points(xyz, idx) - c[:, :, None], nb)


@pytest.mark.gpu
def test_gpu_knn_and_group_equal_cpu():
    xyz = random_cloud(4, 1024)
    nb, c = group(xyz.cuda(), 64, 32)
    nbr, cr = group_ref(xyz, 64, 32)
    assert torch.equal(nb.cpu(), nbr) and torch.equal(c.cpu(), cr)
    d, i = knn(xyz.cuda()[:, :100], xyz.cuda(), 16)
    dr, ir = knn_ref(xyz[:, :100], xyz, 16)
    assert torch.equal(i.cpu(), ir) and torch.equal(d.cpu(), dr)
