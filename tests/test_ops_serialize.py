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
