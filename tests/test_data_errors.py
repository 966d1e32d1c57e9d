"""Bad input: missing, corrupted, mis-shaped and non-finite files give one-line errors naming the file;
nothing is written when a check fails; prepare_data check reports missing files and exits 1."""
import pickle

import h5py
import numpy as np
import pytest

from pointmap.data import build_dataset, build_transforms, write_modelnet_cache, write_modelnet_fewshot
from tests import _data_fixtures as fx

def _tool():
    """tools/prepare_data.py's code (the script is a shim over pointmap.cli.prepare_data)."""
    from pointmap.cli import prepare_data

    return prepare_data


def test_missing_root_names_full_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*data/README\.md"):
        build_dataset("modelnet40", tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError) as e:
        build_dataset("scanobjectnn", tmp_path, "train", variant="objonly")
    assert str(tmp_path / "ScanObjectNN/main_split_nobg/training_objectdataset.h5") in str(e.value)
    assert "data/README.md" in str(e.value)


def test_missing_split_file(tmp_path):
    base = fx.write_shapenet55(tmp_path)
    (base / "ShapeNet-55" / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"ShapeNet55-34/ShapeNet-55/test\.txt"):
        build_dataset("shapenet55", tmp_path, "test")
    split = fx.write_shapenetpart(tmp_path) / "train_test_split" / "shuffled_val_file_list.json"
    split.unlink()
    with pytest.raises(FileNotFoundError, match="shuffled_val_file_list.json"):
        build_dataset("shapenetpart", tmp_path, "trainval")


def test_missing_listed_file(tmp_path):
    base = fx.write_modelnet_text(tmp_path)
    (base / "bed" / "bed_test001.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"modelnet40_normal_resampled/bed/bed_test001\.txt"):
        build_dataset("modelnet40", tmp_path, "test")


def test_truncated_h5(tmp_path):
    base = fx.write_scanobjectnn(tmp_path)
    path = base / "main_split" / "test_objectdataset.h5"
    fx.truncate(path)
    with pytest.raises(ValueError, match=f"h5 file {path}"):
        build_dataset("scanobjectnn", tmp_path, "test", variant="objbg")


def test_truncated_pickle_and_npy(tmp_path):
    fold = fx.write_fewshot_pickle(tmp_path)
    fx.truncate(fold)
    with pytest.raises(ValueError, match=f"pickle file {fold}"):
        build_dataset("modelnet40_fewshot", tmp_path, "train", way=2, shot=3, fold=0)
    base = fx.write_shapenet55(tmp_path)
    ds = build_dataset("shapenet55", tmp_path, "train")
    npy = base / "shapenet_pc" / ds.names[1]
    fx.truncate(npy, 0.9)
    with pytest.raises(ValueError, match=f"npy file {npy}"):
        ds[1]


def test_corrupted_cache_and_json(tmp_path):
    base = fx.write_modelnet_text(tmp_path)
    (base / "modelnet40_train_8192pts_fps.dat").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="modelnet40_train_8192pts_fps.dat"):
        build_dataset("modelnet40", tmp_path, "train")
    snp = fx.write_shapenetpart(tmp_path)
    (snp / "train_test_split" / "shuffled_test_file_list.json").write_text("[\"shape_data/0269")
    with pytest.raises(ValueError, match="shuffled_test_file_list.json"):
        build_dataset("shapenetpart", tmp_path, "test")


def test_wrong_shape_names_file_and_shape(tmp_path):
    base = fx.write_scanobjectnn(tmp_path)
    path = base / "main_split" / "training_objectdataset.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros((6, 32, 2), np.float32)
        f["label"] = np.zeros(6, np.int64)
    with pytest.raises(ValueError, match=r"training_objectdataset\.h5.*\(6, 32, 2\)"):
        build_dataset("scanobjectnn", tmp_path, "train", variant="objbg")
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros((6, 32, 3), np.float32)
        f["label"] = np.zeros(5, np.int64)
    with pytest.raises(ValueError, match=r"training_objectdataset\.h5 \[label\].*\(5,\)"):
        build_dataset("scanobjectnn", tmp_path, "train", variant="objbg")
    sn = fx.write_shapenet55(tmp_path)
    ds = build_dataset("shapenet55", tmp_path, "test")
    np.save(sn / "shapenet_pc" / ds.names[0], np.zeros(64, np.float32))
    with pytest.raises(ValueError, match=rf"{ds.names[0]}.*\(64,\)"):
        ds[0]


def test_non_finite_points_name_file_and_index(tmp_path):
    sn = fx.write_shapenet55(tmp_path)
    ds = build_dataset("shapenet55", tmp_path, "train")
    arr = np.load(sn / "shapenet_pc" / ds.names[2])
    arr[5, 1] = np.nan
    np.save(sn / "shapenet_pc" / ds.names[2], arr)
    with pytest.raises(ValueError, match=rf"{ds.names[2]}: non-finite coordinates at point 5"):
        ds[2]
    soo = fx.write_scanobjectnn(tmp_path)
    path = soo / "main_split" / "test_objectdataset_augmentedrot_scale75.h5"
    with h5py.File(path, "a") as f:
        data = f["data"][()]
        data[1, 3, 0] = np.inf
        f["data"][...] = data
    msg = r"augmentedrot_scale75\.h5 \[data\]: non-finite coordinates at cloud 1, point 3"
    with pytest.raises(ValueError, match=msg):
        build_dataset("scanobjectnn", tmp_path, "test", variant="hardest")


def test_nothing_written_when_a_source_file_is_bad(tmp_path):
    base = fx.write_modelnet_text(tmp_path)
    bad = base / "desk" / "desk_train003.txt"  # the last file of the train list
    arr = np.loadtxt(bad, delimiter=",")
    arr[7, 2] = np.nan
    np.savetxt(bad, arr, delimiter=",")
    with pytest.raises(ValueError, match=r"desk_train003\.txt: non-finite coordinates at point 7"):
        write_modelnet_cache(tmp_path, "train", num_points=16)
    assert not list(base.glob("*.dat")) and not list(base.glob("*.tmp"))
    with pytest.raises(ValueError, match="desk_train003"):
        write_modelnet_fewshot(tmp_path, ways=(4,), shots=(4,), folds=2, num_query=2)
    assert not (tmp_path / "ModelNetFewshot").exists()


def test_unknown_names_list_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="valid names: .*synthetic"):
        build_dataset("modelnet41", tmp_path, "train")
    with pytest.raises(ValueError, match="valid splits: train, test"):
        build_dataset("scanobjectnn", tmp_path, "val")
    fx.write_scanobjectnn(tmp_path)
    with pytest.raises(ValueError, match="valid: objbg, objonly, hardest"):
        build_dataset("scanobjectnn", tmp_path, "train", variant="pb_t25")
    with pytest.raises(ValueError, match="valid names: dropout, image, jitter, normalize, rotate, sample, scale_translate"):
        build_transforms([{"name": "shear"}])
    with pytest.raises(ValueError, match="unknown argument 'sigmaa' of transform 'jitter' \\(did you mean 'sigma'\\?\\)"):
        build_transforms([{"name": "jitter", "sigmaa": 0.1}])


def test_prepare_data_check_and_build_cache(tmp_path, capsys):
    tool = _tool()
    fx.write_scanobjectnn(tmp_path)
    fx.write_modelnet_text(tmp_path)
    assert tool.main(["check", "--root", str(tmp_path), "scanobjectnn"]) == 0
    out = capsys.readouterr().out
    assert "[ok] scanobjectnn" in out and "hardest files: 2" in out
    gone = tmp_path / "ScanObjectNN" / "main_split_nobg" / "test_objectdataset.h5"
    gone.unlink()
    assert tool.main(["check", "--root", str(tmp_path)]) == 1  # present but incomplete
    out = capsys.readouterr().out
    assert f"missing: {gone}" in out and "[incomplete] scanobjectnn" in out and "[absent] shapenetpart" in out
    assert tool.main(["check", "--root", str(tmp_path), "shapenetpart"]) == 1  # requested and absent
    assert "synsetoffset2category.txt" in capsys.readouterr().out
    assert tool.main(["check", "--root", str(tmp_path), "modelnet40"]) == 0
    assert tool.main(["build-cache", "--root", str(tmp_path), "--num-points", "8", "--split", "test"]) == 0
    assert (tmp_path / "ModelNet/modelnet40_normal_resampled/modelnet40_test_8pts_fps.dat").exists()
    assert tool.main(["fewshot", "--root", str(tmp_path), "--ways", "5", "--shots", "2", "--folds", "1"]) == 2
    assert "way=5" in capsys.readouterr().err  # 4 classes only: an error, and no file
    assert not (tmp_path / "ModelNetFewshot").exists()
    with open(tmp_path / "ModelNet/modelnet40_normal_resampled/modelnet40_test_8pts_fps.dat", "rb") as f:
        assert len(pickle.load(f)[0]) == 12


def test_prepare_data_check_meshes(tmp_path, capsys):
    import trimesh

    tool = _tool()
    (tmp_path / "train" / "round").mkdir(parents=True)
    (tmp_path / "test").mkdir()
    trimesh.creation.icosphere(subdivisions=1).export(tmp_path / "train" / "round" / "ball.obj")
    trimesh.creation.box().export(tmp_path / "train" / "cube.stl")
    trimesh.creation.box().export(tmp_path / "test" / "cube.ply")
    assert tool.main(["check", "--root", str(tmp_path), "meshes"]) == 0
    out = capsys.readouterr().out
    assert "[ok] meshes" in out and "train meshes (.obj, .ply, .off, .stl, .glb): 2, train classes: 2" in out
    assert "test meshes (.obj, .ply, .off, .stl, .glb): 1" in out
    assert tool.main(["check", "--root", str(tmp_path / "test" / "nothing_here"), "meshes"]) == 1
    assert "[absent] meshes" in capsys.readouterr().out
    assert tool.main(["check", "--root", str(tmp_path)]) == 0  # not among the default checks of a data root
    assert "] meshes:" not in capsys.readouterr().out
