"""Few-shot: tools/fewshot.py runs every fold asked for and reports mean ± std over them, on Point-BERT
style fold pickles and on folds drawn from the synthetic classes; missing folds are a one-line error."""
import json
import os
import shutil
import statistics

import pytest

from pointmap.experiments.fewshot import missing_folds, parse_folds

from . import _data_fixtures as fx
from .test_tools import CFGS, TINY, assert_meta, tool

FEW = TINY + ["data.batch_size=2"]


def test_parse_folds():
    assert parse_folds("0-3") == [0, 1, 2, 3] and parse_folds("0,5-6") == [0, 5, 6] and parse_folds("7") == [7]
    for bad in ("a", "3-1", "1,1", "-1"):
        with pytest.raises(ValueError, match="--folds"):
            parse_folds(bad)


def test_fewshot_tool_on_modelnet_fold_pickles(tmp_path, monkeypatch, capsys):
    first = fx.write_fewshot_pickle(tmp_path / "data", way=2, shot=3, num_query=2)
    shutil.copy(first, first.with_name("1.pkl"))
    assert missing_folds(str(tmp_path / "data"), 2, 3, [0, 1, 2]) == [first.with_name("2.pkl")]
    code, out, err = tool("fewshot.py", "--cfg", os.path.join(CFGS, "fewshot_modelnet.yaml"), "--way", "2", "--shot", "3",
                          "--folds", "0-1", "--device", "cpu", *FEW, f"data.root={tmp_path / 'data'}",
                          "data.num_workers=0", "data.train_transforms=[{name: normalize}]",
                          "data.test_transforms=[{name: normalize}]", f"train.output_dir={tmp_path / 'exp'}",
                          monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert out.startswith("protocol clean | 2-way 3-shot, 2 folds [0, 1] | test acc ") and " ± " in out
    res = json.loads((tmp_path / "exp" / "fewshot_modelnet" / "default" / "2way_3shot" / "fewshot.json").read_text())
    assert [f["fold"] for f in res["per_fold"]] == [0, 1] and all(f["count"] == 4 for f in res["per_fold"])
    missing = tool("fewshot.py", "--cfg", os.path.join(CFGS, "fewshot_modelnet.yaml"), "--way", "2", "--shot", "3",
                   "--folds", "0-2", "--device", "cpu", *FEW, f"data.root={tmp_path / 'data'}",
                   f"train.output_dir={tmp_path / 'exp2'}", monkeypatch=monkeypatch, capsys=capsys)
    assert missing[0] == 2 and "2.pkl not found" in missing[2] and "prepare_data.py fewshot" in missing[2]
    assert len(missing[2].strip().splitlines()) == 1


def test_fewshot_tool_on_synthetic_folds_mean_std(tmp_path, monkeypatch, capsys):
    code, out, err = tool("fewshot.py", "--way", "2", "--shot", "3", "--folds", "0-2", "--device", "cpu", *FEW,
                          "data.options={num_points: 64, num_query: 2}", f"train.output_dir={tmp_path}",
                          monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert out.startswith("protocol clean | 2-way 3-shot, 3 folds 0-2 | test acc ")
    base = tmp_path / "fewshot_demo" / "default" / "2way_3shot"
    res = json.loads((base / "fewshot.json").read_text())
    accs = [f["acc"] for f in res["per_fold"]]
    assert res["folds"] == [0, 1, 2] and sorted(os.listdir(base)) == ["fewshot.json", "fold0", "fold1", "fold2", "meta.json"]
    assert res["test"]["acc"]["values"] == accs
    assert res["test"]["acc"]["mean"] == pytest.approx(statistics.mean(accs))
    assert res["test"]["acc"]["std"] == pytest.approx(statistics.stdev(accs))
    assert f"test acc {res['test']['acc']['mean']:.2f} ± {res['test']['acc']['std']:.2f}" in out
    for k in range(3):  # each fold is its own run, on that fold's classes
        fold = json.loads((base / f"fold{k}" / "metrics.json").read_text())
        assert fold["test"]["acc"] == accs[k] and fold["protocol"] == "clean"
        assert_meta(base / f"fold{k}", "fewshot.py")
    assert_meta(base, "fewshot.py")
