"""pointmap.data.io.read_points: every format a user's cloud comes in, and one-line errors naming the file."""
import numpy as np
import pytest

from pointmap.data.io import find_point_files, read_points
from pointmap.errors import UserError

RNG = np.random.default_rng(0)
CLOUD = RNG.random((200, 3)).astype(np.float32) * 4 - 2
NORMALS = RNG.standard_normal((200, 3)).astype(np.float32)


def _pcd(path, data: str, fields=("x", "y", "z"), kind="F", size=4):
    n = len(fields)
    head = (f"# .PCD v0.7\nVERSION 0.7\nFIELDS {' '.join(fields)}\nSIZE {' '.join([str(size)] * n)}\n"
            f"TYPE {' '.join([kind] * n)}\nCOUNT {' '.join(['1'] * n)}\nWIDTH {len(CLOUD)}\nHEIGHT 1\n"
            f"VIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(CLOUD)}\nDATA {data}\n")
    return path, head.encode()


def test_pcd_ascii_and_binary(tmp_path):
    both = np.concatenate([CLOUD, NORMALS], 1)
    path, head = _pcd(tmp_path / "a.pcd", "ascii", ("x", "y", "z", "normal_x", "normal_y", "normal_z"))
    path.write_bytes(head + "\n".join(" ".join(f"{v:.9g}" for v in row) for row in both).encode())
    assert np.allclose(read_points(path, normals=True), both, atol=1e-6)
    path, head = _pcd(tmp_path / "b.pcd", "binary", ("x", "y", "z", "intensity"), kind="F", size=8)
    path.write_bytes(head + np.concatenate([CLOUD, NORMALS[:, :1]], 1).astype("<f8").tobytes())
    assert np.array_equal(read_points(path), CLOUD)
    path.write_bytes(head + CLOUD.astype("<f8").tobytes()[:100])
    with pytest.raises(UserError, match=r"b\.pcd is truncated"):
        read_points(path)


def test_ply_ascii_binary_and_text_files(tmp_path):
    import trimesh

    trimesh.PointCloud(CLOUD).export(tmp_path / "b.ply")
    trimesh.PointCloud(CLOUD).export(tmp_path / "a.ply", encoding="ascii")
    assert np.allclose(read_points(tmp_path / "a.ply"), CLOUD, atol=1e-6)
    assert np.array_equal(read_points(tmp_path / "b.ply"), CLOUD)
    extra = np.concatenate([CLOUD, NORMALS, RNG.random((200, 2))], 1)  # x y z nx ny nz + 2 ignored columns
    np.savetxt(tmp_path / "a.xyz", extra)
    np.savetxt(tmp_path / "a.txt", extra, delimiter=",")
    (tmp_path / "a.pts").write_text("# scanner export\n200\n" + "\n".join(" ".join(map(str, r)) for r in CLOUD))
    for name in ("a.xyz", "a.txt"):
        assert np.allclose(read_points(tmp_path / name), CLOUD, atol=1e-6)
        assert np.allclose(read_points(tmp_path / name, normals=True)[:, 3:], NORMALS, atol=1e-6)
    assert np.allclose(read_points(tmp_path / "a.pts"), CLOUD)
    with pytest.raises(UserError, match="a.pts: normals asked for, but the file holds 3 columns"):
        read_points(tmp_path / "a.pts", normals=True)


def test_numpy_and_h5_files(tmp_path):
    import h5py

    np.save(tmp_path / "a.npy", CLOUD)
    np.savez(tmp_path / "a.npz", labels=np.arange(3), xyz=CLOUD)
    np.savez(tmp_path / "two.npz", first=CLOUD, second=CLOUD[:10])
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["data"] = np.stack([CLOUD, -CLOUD])
        f["mine"] = CLOUD[:50]
    assert np.array_equal(read_points(tmp_path / "a.npy"), CLOUD)
    assert np.array_equal(read_points(tmp_path / "a.npz"), CLOUD)
    assert np.array_equal(read_points(tmp_path / "two.npz", key="second"), CLOUD[:10])
    assert np.array_equal(read_points(tmp_path / "a.h5", key="mine"), CLOUD[:50])
    assert np.array_equal(read_points(tmp_path / "a.h5", index=1), -CLOUD)
    with pytest.raises(UserError, match=r"a.h5\[data\] holds 2 clouds \(2, 200, 3\): pick one with index="):
        read_points(tmp_path / "a.h5")
    with pytest.raises(UserError, match="two.npz holds 2 arrays .* name one with key="):
        read_points(tmp_path / "two.npz")
    with pytest.raises(UserError, match="a.h5 has no key 'nope' \\(keys: data, mine\\)"):
        read_points(tmp_path / "a.h5", key="nope")


@pytest.mark.parametrize("ext", [".obj", ".off", ".stl", ".glb", ".ply"])
def test_meshes_are_surface_sampled_with_a_seed(tmp_path, ext):
    import trimesh

    path = tmp_path / f"box{ext}"
    trimesh.creation.box(extents=(2.0, 1.0, 0.5)).export(path)
    pts = read_points(path, mesh_points=500, seed=3)
    assert pts.shape == (500, 3) and np.allclose(np.abs(pts / [1.0, 0.5, 0.25]).max(-1), 1.0, atol=1e-5)
    assert np.array_equal(pts, read_points(path, mesh_points=500, seed=3))
    assert not np.array_equal(pts, read_points(path, mesh_points=500, seed=4))
    assert read_points(path, mesh_points=10, normals=True).shape == (10, 6)


def test_las_through_laspy(tmp_path):
    laspy = pytest.importorskip("laspy")
    header = laspy.LasHeader(point_format=3, version="1.2")
    header.scales = np.array([0.001, 0.001, 0.001])
    las = laspy.LasData(header)
    las.x, las.y, las.z = CLOUD[:, 0], CLOUD[:, 1], CLOUD[:, 2]
    las.write(tmp_path / "a.las")
    assert np.allclose(read_points(tmp_path / "a.las"), CLOUD, atol=1e-3)


@pytest.mark.parametrize("name, content, why", [
    ("broken.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 100\nproperty float x\nend_header\n\x00\x01",
     "unreadable .ply file"),
    ("empty.xyz", b"# nothing here\n", "no points in the file"),
    ("nan.xyz", b"0 0 0\n1 nan 2\n", "non-finite coordinates at point 1"),
    ("two.txt", b"0,0,0\n1,1,1\n", "2 points, fewer than the 8 the model needs"),
    ("flat.npy", None, "shape (10, 2)"),
    ("a.foo", b"1 2 3", "unknown extension '.foo'"),
    ("bad.pcd", b"VERSION 0.7\nFIELDS x y z\n", "the header ends before its DATA line"),
    ("missing.obj", None, "input file not found"),
])
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, name, content, why):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    elif name == "flat.npy":
        np.save(path, np.zeros((10, 2)))
    with pytest.raises(UserError) as info:
        read_points(path, min_points=8)
    message = str(info.value)
    assert why in message and name in message and "\n" not in message


def test_find_point_files_walks_folders(tmp_path):
    (tmp_path / "sub").mkdir()
    for rel in ("b.ply", "sub/a.xyz", "sub/notes.md", "c.obj"):
        (tmp_path / rel).write_text("x")
    found = find_point_files([tmp_path, tmp_path / "notes.md"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["b.ply", "c.obj", "sub/a.xyz", "notes.md"]
