"""Data pickles (the peers' ModelNet caches and few-shot folds) are read with an unpickler that admits only numpy
arrays, dtypes and plain containers: the peers' own files load, whatever numpy or protocol wrote them, and a pickle
that would run something is refused with one line, before anything runs."""
import os
import pickle

import numpy as np
import pytest

from pointmap.data import build_dataset
from pointmap.data.io import load_pickle
from tests import _data_fixtures as fx


class _Runs:
    """Unpickled, this calls os.system: what a data file from a file-sharing link could hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _peer_cache(rng, count, num_points):
    """Point-BERT's ModelNet cache, as its ModelNet dataset writes it: [list of (N, 6) float32 point arrays,
    list of np.array([cls]).astype(np.int32)]."""
    points = [rng.normal(size=(num_points, 6)).astype(np.float32) for _ in range(count)]
    labels = [np.array([i % len(fx.MN_CLASSES)]).astype(np.int32) for i in range(count)]
    return [points, labels]


def _peer_fold(rng, way=2, shot=3, num_query=2):
    """Point-BERT's few-shot fold: {"train": [(points, label, orig_label)], "test": [...]}, points (N, 6) float32,
    the label a Python int, the original ModelNet label a numpy integer."""
    orig = [7, 33]
    return {split: [(rng.normal(size=(50, 6)).astype(np.float32), k, np.int64(orig[k]))
                    for k in range(way) for _ in range(n)] for split, n in (("train", shot), ("test", num_query))}


def _old_numpy_names(data: bytes) -> bytes:
    """A protocol 0-3 pickle as numpy 1.x writes it: its globals under ``numpy.core`` instead of ``numpy._core``."""
    return data.replace(b"numpy._core.", b"numpy.core.")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_the_peers_modelnet_cache_loads(tmp_path, protocol):
    fx.write_modelnet_text(tmp_path)
    data = _peer_cache(np.random.default_rng(0), 16, 8)
    path = tmp_path / "ModelNet" / "modelnet40_normal_resampled" / "modelnet40_train_8pts_fps.dat"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    ds = build_dataset("modelnet40", tmp_path, "train", cache_points=8, use_normals=True)
    assert ds.source == "cache" and len(ds) == 16
    assert ds.labels.tolist() == [int(lb[0]) for lb in data[1]]
    np.testing.assert_array_equal(ds[5]["points"].numpy(), data[0][5][:, :3])


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_the_peers_fewshot_fold_loads(tmp_path, protocol):
    fold = _peer_fold(np.random.default_rng(1))
    path = tmp_path / "ModelNetFewshot" / "2way_3shot" / "0.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps(fold, protocol=protocol))
    ds = build_dataset("modelnet40_fewshot", tmp_path, "train", way=2, shot=3, fold=0)
    assert len(ds) == 6 and ds.classes == ["car", "table"]
    np.testing.assert_array_equal(ds[4]["points"].numpy(), fold["train"][4][0][:, :3])


@pytest.mark.parametrize("protocol", [0, 2, 3])
def test_arrays_pickled_by_older_numpy_load(tmp_path, protocol):
    """numpy 1.x names its array and scalar constructors numpy.core.multiarray._reconstruct / .scalar."""
    data = {"cache": _peer_cache(np.random.default_rng(2), 3, 5), "fold": _peer_fold(np.random.default_rng(3)),
            "dtype": np.dtype(">f8"), "set": {1, 2}, "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3))}
    old = _old_numpy_names(pickle.dumps(data, protocol=protocol))
    assert b"numpy.core.multiarray" in old and b"numpy._core" not in old
    path = tmp_path / "old.pkl"
    path.write_bytes(old)
    got = load_pickle(path)
    np.testing.assert_array_equal(got["cache"][0][2], data["cache"][0][2])
    assert got["cache"][1][2].dtype == np.int32 and got["fold"]["test"][3][2] == np.int64(33)
    assert got["dtype"] == np.dtype(">f8") and got["set"] == {1, 2}
    np.testing.assert_array_equal(got["fortran"], data["fortran"])


@pytest.mark.parametrize("kind", ["cache", "fold"])
@pytest.mark.parametrize("protocol", [2, 4])
def test_a_pickle_that_would_run_code_is_refused(tmp_path, kind, protocol):
    marker = tmp_path / "ran"
    if kind == "cache":
        fx.write_modelnet_text(tmp_path)
        path = tmp_path / "ModelNet" / "modelnet40_normal_resampled" / "modelnet40_train_8pts_fps.dat"
        data = _peer_cache(np.random.default_rng(0), 16, 8)
        data[0][3] = _Runs(marker)  # one point array of the list replaced
        load = lambda: build_dataset("modelnet40", tmp_path, "train", cache_points=8)  # noqa: E731
    else:
        path = tmp_path / "ModelNetFewshot" / "2way_3shot" / "0.pkl"
        path.parent.mkdir(parents=True)
        data = {"train": [(_Runs(marker), 0, 7)], "test": []}
        load = lambda: build_dataset("modelnet40_fewshot", tmp_path, "train", way=2, shot=3, fold=0)  # noqa: E731
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    with pytest.raises(ValueError) as e:
        load()
    msg = str(e.value)
    assert msg.startswith(f"refusing to load pickle file {path}: it would call or create ")
    assert "\n" not in msg and ("posix.system" in msg or "os.system" in msg)
    assert not marker.exists()  # nothing ran


def test_other_objects_are_refused(tmp_path):
    """A class instance (here an OrderedDict, reduced through its class) is not a plain container."""
    from collections import OrderedDict

    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps(OrderedDict(a=np.zeros(2)), protocol=4))
    with pytest.raises(ValueError, match=r"x\.pkl: it would call or create collections\.OrderedDict"):
        load_pickle(path)
