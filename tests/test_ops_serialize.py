import itertools
import math

import pytest
import torch

from pointmap.ops import serialize, serialize_ref
from pointmap.ops.serialize import ORDERS, hilbert_encode
from pointmap.ops.testing import cloud_with_duplicates, random_cloud


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_hilbert_visits_every_cell_once_by_unit_steps(bits):
    n = 1 << bits
    cells = torch.tensor(list(itertools.product(range(n), repeat=3)))
    code = hilbert_encode(cells, bits)
    assert sorted(code.tolist()) == list(range(n ** 3))
    path = cells[code.argsort()]
    assert ((path[1:] - path[:-1]).abs().sum(-1) == 1).all()


# ----------------------------------------------------------------------------- an independent encoder
# Plain Python on one point at a time: Skilling's AxestoTranspose ("Programming the Hilbert curve", 2004) as
# the paper writes it, bits interleaved by hand, the quantization in Python floats. serialize() and
# serialize_ref() share pointmap's vectorized encode(); this shares nothing with it.

def hilbert_python(x: int, y: int, z: int, bits: int) -> int:
    X = [x, y, z]
    q = 1 << (bits - 1)
    while q > 1:  # inverse undo
        p = q - 1
        for i in range(3):
            if X[i] & q:
                X[0] ^= p
            else:
                t = (X[0] ^ X[i]) & p
                X[0] ^= t
                X[i] ^= t
        q >>= 1
    for i in (1, 2):  # Gray encode
        X[i] ^= X[i - 1]
    t, q = 0, 1 << (bits - 1)
    while q > 1:
        if X[2] & q:
            t ^= q - 1
        q >>= 1
    return morton_python(*(v ^ t for v in X), bits)


def morton_python(x: int, y: int, z: int, bits: int) -> int:
    code = 0
    for b in reversed(range(bits)):
        code = (code << 3) | (((x >> b) & 1) << 2) | (((y >> b) & 1) << 1) | ((z >> b) & 1)
    return code


def cells_python(cloud, bits=10, grid_size=None):
    """One cloud's points (lists of 3 floats) -> integer cells, as the module docstring defines them."""
    if grid_size is None:
        lo = [min(p[a] for p in cloud) for a in range(3)]
        extent = max(max(max(p[a] for p in cloud) - lo[a] for a in range(3)), 1e-12)
        top = (1 << bits) - 1
        return [[min(max(math.floor((p[a] - lo[a]) / extent * (1 << bits)), 0), top) for a in range(3)] for p in cloud]
    q = [[math.floor(p[a] / grid_size) for a in range(3)] for p in cloud]
    lo = [min(c[a] for c in q) for a in range(3)]
    return [[c[a] - lo[a] for a in range(3)] for c in q]


def serialize_python(center: torch.Tensor, order: str, grid_size=None, grid_depth="cloud") -> list:
    """The permutation of every cloud of ``center`` (float64), by (curve code, index)."""
    bits = 20 if order == "xyz" else 10
    clouds = [cells_python(c, bits, grid_size) for c in center.tolist()]
    if grid_size is not None:
        depth = [max(max(max(c) for c in cells).bit_length(), 1) for cells in clouds]
        depth = [max(depth)] * len(depth) if grid_depth == "batch" else depth
    else:
        depth = [bits] * len(clouds)
    out = []
    for cells, d in zip(clouds, depth):
        if order.endswith("-trans"):
            cells = [[c[1], c[0], c[2]] for c in cells]
        if order == "xyz":
            key = [tuple(c) for c in cells]
        elif order.startswith("hilbert"):
            key = [hilbert_python(*c, d) for c in cells]
        else:
            key = [morton_python(*c, d) for c in cells]
        out.append(sorted(range(len(cells)), key=lambda g: (key[g], g)))
    return out


@pytest.mark.parametrize("order", [o for o in ORDERS if o != "none"])
@pytest.mark.parametrize("grid", [None, 0.05])
def test_serialize_equals_an_independent_encoder(order, grid):
    for center in (random_cloud(3, 64, torch.float64, seed=5), cloud_with_duplicates(2, 50, torch.float64)):
        expected = serialize_python(center, order, grid_size=grid)
        for fn in (serialize, serialize_ref):
            perm = fn(center, order, grid_size=grid)
            assert perm.shape == center.shape[:2] and perm.dtype == torch.long
            assert perm.tolist() == expected


def test_python_hilbert_is_the_module_s_curve_on_every_cell():
    cells = torch.tensor(list(itertools.product(range(8), repeat=3)))
    assert hilbert_encode(cells, 3).tolist() == [hilbert_python(*c, 3) for c in cells.tolist()]


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
    assert perm.tolist() == serialize_python(center.double(), order, grid_size=0.02, grid_depth=grid_depth)


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


def test_hilbert_with_per_point_depths_is_each_depth_s_own_curve():
    """hilbert_encode(q, 20, depth): the curve of each point's own depth (what the exported graph computes),
    against the independent encoder at that depth."""
    g = torch.Generator().manual_seed(15)
    depth = torch.randint(1, 8, (200,), generator=g)
    q = (torch.rand(200, 3, generator=g) * (1 << depth)[:, None]).long()
    got = hilbert_encode(q, 20, depth).tolist()
    assert got == [hilbert_python(*c, d) for c, d in zip(q.tolist(), depth.tolist())]


@pytest.mark.parametrize("order", ["hilbert", "hilbert-trans", "z", "z-trans", "xyz"])
@pytest.mark.parametrize("grid_depth", ["cloud", "batch"])
def test_grid_serialization_while_exporting_orders_as_the_eager_path(order, grid_depth, monkeypatch):
    """Under torch.export the grid path takes no host-side decision (no per-depth loop): the same permutations."""
    import sys

    center = random_cloud(4, 64, seed=16)
    center[1] *= 0.3
    center[2] *= 0.05                                    # three different depths in one batch
    center[3, :8] = center[3, :1]                        # ties: FPS order among equal codes
    expected = serialize_python(center.double(), order, grid_size=0.02, grid_depth=grid_depth)
    module = sys.modules["pointmap.ops.serialize"]
    monkeypatch.setattr(module, "exporting", lambda: True)
    monkeypatch.setattr(module, "_curve", lambda *a, _c=module._curve: _c(*a) if len(a) == 4 else pytest.fail(
        "the eager per-depth path ran"))
    assert serialize(center, order, grid_size=0.02, grid_depth=grid_depth).tolist() == expected
