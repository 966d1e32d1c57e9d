import itertools

import pytest
import torch

from pointmap.ops import serialize, serialize_ref
from pointmap.ops.serialize import ORDERS, hilbert_encode
from tests.helpers import cloud_with_duplicates, random_cloud


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_hilbert_visits_every_cell_once_by_unit_steps(bits):
    n = 1 << bits
    cells = torch.tensor(list(itertools.product(range(n), repeat=3)))
    code = hilbert_encode(cells, bits)
    assert sorted(code.tolist()) == list(range(n ** 3))
    path = cells[code.argsort()]
    assert ((path[1:] - path[:-1]).abs().sum(-1) == 1).all()


@pytest.mark.parametrize("order", ORDERS)
def test_permutation_and_reference(order):
    for center in (random_cloud(3, 64, seed=5), cloud_with_duplicates(2, 50)):
        perm = serialize(center, order)
        assert perm.shape == center.shape[:2] and perm.dtype == torch.long
        assert (perm.sort(dim=1).values == torch.arange(center.shape[1])).all()
        assert torch.equal(perm, serialize_ref(center, order))


def test_orders_differ_and_xyz_sorts_x():
    center = random_cloud(1, 64, seed=7)
    perms = {o: tuple(serialize(center, o)[0].tolist()) for o in ORDERS}
    assert perms["none"] == tuple(range(64))
    assert len(set(perms.values())) == len(ORDERS)
    x = center[0, list(perms["xyz"]), 0]
    assert (x[1:] >= x[:-1]).all()


def test_hilbert_keeps_neighbours_close():
    center = random_cloud(1, 512, seed=8)
    def path_length(order):
        c = center[0, serialize(center, order)[0]]
        return (c[1:] - c[:-1]).norm(dim=-1).sum()
    assert path_length("hilbert") < 0.5 * path_length("none")


def test_scale_invariant():
    center = random_cloud(2, 64)
    assert torch.equal(serialize(center, "hilbert"), serialize(center * 4, "hilbert"))  # exact in binary


def _bit_length_python(q):
    return max(int(q.max()).bit_length(), 1)


@pytest.mark.parametrize("order", ["hilbert", "hilbert-trans", "z", "z-trans", "xyz"])
@pytest.mark.parametrize("grid_depth", ["cloud", "batch"])
def test_grid_quantization_permutation_and_reference(order, grid_depth):
    center = random_cloud(3, 64, seed=11)
    center[2] *= 0.3                                     # a smaller cloud: a shallower curve of its own
    perm = serialize(center, order, grid_size=0.02, grid_depth=grid_depth)
    assert (perm.sort(dim=1).values == torch.arange(64)).all()
    assert torch.equal(perm, serialize_ref(center, order, grid_size=0.02, grid_depth=grid_depth))


def test_grid_depth_is_the_bit_length_of_the_largest_cell():
    from pointmap.ops.serialize import grid_depths, quantize_grid

    center = random_cloud(3, 64, seed=12)
    center[2] *= 0.3
    q = quantize_grid(center, 0.02)
    assert (q.amin(dim=1) == 0).all()
    assert torch.equal(q, torch.floor(center / 0.02).long() - torch.floor(center / 0.02).long().amin(1, keepdim=True))
    per_cloud = grid_depths(q, "cloud").tolist()
    assert per_cloud == [_bit_length_python(q[i]) for i in range(3)] and per_cloud[2] < per_cloud[0]
    assert grid_depths(q, "batch").tolist() == [max(per_cloud)] * 3


def test_batch_depth_makes_a_cloud_depend_on_its_batch():
    small = random_cloud(1, 64, seed=13) * 0.3
    big = random_cloud(1, 64, seed=14)
    alone = serialize(small, "hilbert", grid_size=0.02, grid_depth="batch")
    both = serialize(torch.cat([small, big]), "hilbert", grid_size=0.02, grid_depth="batch")[:1]
    per_cloud = serialize(torch.cat([small, big]), "hilbert", grid_size=0.02, grid_depth="cloud")[:1]
    assert not torch.equal(alone, both) and torch.equal(alone, per_cloud)


def test_grid_errors():
    center = random_cloud(1, 16)
    with pytest.raises(ValueError, match="grid_size must be > 0"):
        serialize(center, grid_size=0.0)
    with pytest.raises(ValueError, match="grid_depth must be one of"):
        serialize(center, grid_size=0.02, grid_depth="global")
    with pytest.raises(ValueError, match="use a coarser grid"):
        serialize(center * 1e6, grid_size=1e-3)
