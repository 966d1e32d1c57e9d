"""Every on-disk format, written tiny to a temporary data root and read back through build_dataset."""
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pointmap.data import build_dataset, list_datasets, write_modelnet_cache, write_modelnet_fewshot
from tests import _data_fixtures as fx


def _check_items(ds, n_points, num_classes):
    labels = [int(ds[i]["label"]) for i in range(len(ds))]
    assert min(labels) >= 0 and max(labels) < num_classes
    item = ds[0]
    assert item["points"].dtype == torch.float32 and item["points"].shape == (n_points, 3)
    assert item["label"].dtype == torch.long and item["label"].dim() == 0
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["points"].shape == (2, n_points, 3)
    return labels


def test_registry_lists_every_name():
    for name in ("shapenet55", "modelnet40", "modelnet40_fewshot", "scanobjectnn", "shapenetpart", "synthetic",
                 "synthetic_pretrain", "synthetic_parts", "synthetic_fewshot", "digits", "meshes"):
        assert name in list_datasets()


def test_shapenet55_npy(tmp_path):
    base = fx.write_shapenet55(tmp_path)
    ds = build_dataset("shapenet55", tmp_path, "train")
    assert len(ds) == 6 and ds.classes == list(fx.SYNSETS) and ds.num_classes == 2
    assert sorted(_check_items(ds, 64, 2)) == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(ds[0]["points"].numpy(), np.load(base / "shapenet_pc" / ds.names[0]))
    assert len(build_dataset("shapenet55", base, "test")) == 4  # the data set's own folder works too


def test_modelnet40_text_comma_separated(tmp_path):
    fx.write_modelnet_text(tmp_path)
    ds = build_dataset("modelnet40", tmp_path, "train", use_normals=True)
    assert ds.source == "text" and len(ds) == 16 and ds.classes == list(fx.MN_CLASSES)
    labels = _check_items(ds, fx.MN_POINTS, 4)
    assert np.bincount(labels).tolist() == [4, 4, 4, 4]
    normals = ds[0]["normals"]
    assert normals.shape == (fx.MN_POINTS, 3)
    torch.testing.assert_close(normals.norm(dim=1), torch.ones(fx.MN_POINTS), atol=1e-4, rtol=0)
    assert "normals" not in build_dataset("modelnet40", tmp_path, "test")[0]


def test_modelnet40_cache_written_and_read_in_the_peer_format(tmp_path):
    base = fx.write_modelnet_text(tmp_path)
    path = write_modelnet_cache(tmp_path, "train", num_points=16)
    assert path == base / "modelnet40_train_16pts_fps.dat"
    with open(path, "rb") as f:
        points, labels = pickle.load(f)  # the peers' layout: [points list, labels list]
    assert len(points) == len(labels) == 16
    assert points[0].shape == (16, 6) and points[0].dtype == np.float32
    assert labels[0].shape == (1,) and labels[0].dtype == np.int32
    text = build_dataset("modelnet40", tmp_path, "train", source="text", use_normals=True)
    raw = text.raw(3)
    assert all(any(np.array_equal(row, r) for r in raw) for row in points[3])  # rows of the source file
    np.testing.assert_array_equal(points[3][0], raw[0])  # FPS starts at index 0
    cached = build_dataset("modelnet40", tmp_path, "train", cache_points=16)  # auto picks the cache
    assert cached.source == "cache" and len(cached) == 16 and cached.labels.tolist() == text.labels.tolist()
    assert write_modelnet_cache(tmp_path, "train", num_points=16) is None  # exists: not rewritten


def test_modelnet40_h5(tmp_path):
    fx.write_modelnet_h5(tmp_path)
    ds = build_dataset("modelnet40", tmp_path, "train")
    assert ds.source == "h5" and len(ds) == 8 and ds.classes == list(fx.MN_CLASSES)
    _check_items(ds, 32, 4)
    assert build_dataset("modelnet40", tmp_path, "test", use_normals=True)[0]["normals"].shape == (32, 3)


def test_modelnet40_fewshot_pickle(tmp_path):
    fx.write_fewshot_pickle(tmp_path, way=2, shot=3)
    train = build_dataset("modelnet40_fewshot", tmp_path, "train", way=2, shot=3, fold=0)
    test = build_dataset("modelnet40_fewshot", tmp_path, "test", way=2, shot=3, fold=0, use_normals=True)
    assert len(train) == 6 and len(test) == 4
    assert train.classes == ["car", "table"]  # ModelNet40 names of the original labels 7 and 33
    assert sorted(_check_items(train, 50, 2)) == [0, 0, 0, 1, 1, 1]
    assert test[0]["normals"].shape == (50, 3)


def test_fewshot_folds_written_deterministically(tmp_path):
    fx.write_modelnet_text(tmp_path)
    kw = dict(ways=(2,), shots=(2,), folds=2, seed=0, num_query=2)
    written = write_modelnet_fewshot(tmp_path, **kw)
    assert [p.name for p in written] == ["0.pkl", "1.pkl"]
    assert write_modelnet_fewshot(tmp_path, **kw) == []  # present: nothing written
    first = written[0].read_bytes()
    write_modelnet_fewshot(tmp_path, overwrite=True, **kw)
    assert written[0].read_bytes() == first  # fixed seed: the same fold again
    ds = build_dataset("modelnet40_fewshot", tmp_path, "train", way=2, shot=2, fold=1)
    assert len(ds) == 4 and set(ds.classes) <= set(fx.MN_CLASSES) and ds[0]["points"].shape == (fx.MN_POINTS, 3)
    with open(written[0], "rb") as f:
        fold = pickle.load(f)
    assert len(fold["test"]) == 4 and fold["train"][0][0].shape == (fx.MN_POINTS, 6)


@pytest.mark.parametrize("variant", ["objbg", "objonly", "hardest"])
def test_scanobjectnn_h5(tmp_path, variant):
    fx.write_scanobjectnn(tmp_path)
    ds = build_dataset("scanobjectnn", tmp_path, "test", variant=variant)
    assert len(ds) == fx.SOO_COUNTS["test"] and ds.num_classes == 15 and ds.classes[0] == "bag"
    assert _check_items(ds, fx.SOO_POINTS, 15) == [0, 4, 8, 12]


def test_shapenetpart_space_separated_and_json(tmp_path):
    fx.write_shapenetpart(tmp_path)
    ds = build_dataset("shapenetpart", tmp_path, "trainval", transform=[{"name": "sample", "num_points": 64}])
    assert len(ds) == 2 * (fx.SNP_COUNTS["train"] + fx.SNP_COUNTS["val"]) and ds.classes == ["Airplane", "Bag"]
    _check_items(ds, 64, 2)
    for i in range(len(ds)):
        item = ds[i]
        assert item["seg"].shape == (64,) and item["category"] == item["label"]
        assert set(item["seg"].tolist()) <= set(ds.seg_classes[ds.classes[int(item["category"])]])
    raw = build_dataset("shapenetpart", tmp_path, "test", use_normals=True)  # whole shapes
    assert len(raw) == 4 and raw[0]["points"].shape == (30, 3) and raw[0]["normals"].shape == (30, 3)


def test_meshes_folder(tmp_path):
    import trimesh

    (tmp_path / "round").mkdir()
    trimesh.creation.icosphere(subdivisions=1).export(tmp_path / "round" / "ball.obj")
    trimesh.creation.capsule().export(tmp_path / "round" / "pill.ply")
    trimesh.creation.box().export(tmp_path / "cube.off")
    ds = build_dataset("meshes", tmp_path, "train", num_points=128, use_normals=True)
    assert ds.classes == ["cube", "round"] and len(ds) == 3
    assert sorted(_check_items(ds, 128, 2)) == [0, 1, 1]
    pts = ds[0]["points"]  # the unit box: every point on its surface
    assert (pts.abs().amax(dim=1) - 0.5).abs().max() < 1e-5
    assert torch.equal(ds[0]["points"], build_dataset("meshes", tmp_path, "test", num_points=128)[0]["points"])


def test_digits_images():
    pytest.importorskip("sklearn")
    ds = build_dataset("digits", None, "train")
    item = ds[0]
    assert item["image"].shape == (1, 32, 32) and item["image"].dtype == torch.float32
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    sizes = [len(build_dataset("digits", None, s)) for s in ("train", "val", "test")]
    assert sum(sizes) == 1797 and ds.num_classes == 10
