"""The ablation tool on a tiny model and a few clouds: table (mean ± std), chart, results.json, skipping
what is done on a rerun, and bad input as a one-line error."""
import json
import os
import runpy
import sys

import pytest
import yaml

from pointmap.experiments.ablation import (expand_variants, load_ablation_config, parse_variant, row_losses,
                                      run_ablation, variant_configs)

from .test_tools import assert_meta
from .test_tools import tool as run_tool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFGS = os.path.join(REPO, "cfgs")
TINY = {
    "pretrain_cfg": os.path.join(CFGS, "map_demo.yaml"),
    "finetune_cfg": os.path.join(CFGS, "finetune_demo.yaml"),
    "common": {"model": {"args": {"embed_dim": 16, "layout": "MT", "num_heads": 2, "num_group": 4, "group_size": 8}},
               "optim": {"epochs": 1, "warmup_epochs": 0}, "data": {"batch_size": 8}, "train": {"progress": False}},
    "pretrain": {"objective": {"decoder_heads": 2}, "data": {"options": {"size": 16, "num_points": 64}}},
    "finetune": {"data": {"options": {"num_points": 64, "samples_per_class": 2}}},
    "probe": "svm",
    "variants": ["map", "scratch"],
    "seeds": [0, 1],
}


def write_cfg(tmp_path, **changes):
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / "exp"), **changes}))
    return str(path)


def test_tiny_ablation_table_chart_results_and_resume(tmp_path, monkeypatch, capsys):
    code, out, err = run_tool("ablate.py", "--cfg", write_cfg(tmp_path), "--device", "cpu", monkeypatch=monkeypatch,
                              capsys=capsys)
    assert code == 0, err
    root = tmp_path / "exp" / "abl" / "default"
    res = json.loads((root / "results.json").read_text())
    assert {"results.json", "table.md", "chart.png", "log.txt", "meta.json"} <= set(os.listdir(root))
    for folder in ("", "map/seed0/pretrain", "map/seed1/finetune", "scratch/seed0/probe"):
        assert_meta(root / folder, "ablate.py")
    assert (root / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((root / "results.json").read_text())
    assert [v["name"] for v in saved["variants"]] == ["map", "scratch"] and saved["seeds"] == [0, 1]
    m, s = saved["variants"]
    assert len(m["finetune_acc"]["values"]) == 2 and len(m["probe_acc"]["values"]) == 2
    assert m["pretrain_loss"]["mean"] > 0 and s["pretrain_loss"] is None
    table = (root / "table.md").read_text()
    header = table.splitlines()[0]
    assert "finetune acc (%)" in header and "linear probe acc (%)" in header and "final pretrain loss" in header
    row = next(line for line in table.splitlines() if line.startswith("| map |"))
    assert row.count("±") == 3  # pretrain loss, finetune acc, probe acc
    assert "2 seeds [0, 1]" in table and "clean protocol" in table and "Ran on CPU" in table
    assert res["variants"][0]["finetune_acc"] == m["finetune_acc"]
    # where the reconstruction is hard: the masked patches' held-out loss per MAP row (G=4: 2 rows of 2)
    per_seed = [json.loads((root / "map" / f"seed{k}" / "result.json").read_text())["row_losses"] for k in (0, 1)]
    assert all(len(r) == 2 and min(r) > 0 for r in per_seed)
    assert m["row_losses"] == pytest.approx([(a + b) / 2 for a, b in zip(*per_seed)]) and s["row_losses"] is None
    assert "held-out loss by row" in header and row.split("|")[8].strip() == " / ".join(
        f"{1e3 * v:.2f}" for v in m["row_losses"])
    assert row_losses(str(root / "map" / "seed0" / "pretrain")) == per_seed[0]  # same masks: reproducible

    # a rerun skips every finished variant/seed: nothing is trained again
    ckpt = root / "map" / "seed0" / "pretrain" / "ckpt-last.pth"
    before = ckpt.stat().st_mtime_ns
    old = json.loads((root / "map" / "seed0" / "result.json").read_text())
    (root / "map" / "seed0" / "result.json").write_text(json.dumps({k: v for k, v in old.items() if k != "row_losses"}))
    again = run_ablation(load_ablation_config(write_cfg(tmp_path)), device="cpu")
    assert ckpt.stat().st_mtime_ns == before
    assert json.loads((root / "map" / "seed0" / "result.json").read_text()) == old  # row losses measured afresh
    assert again["variants"][0]["finetune_acc"] == m["finetune_acc"]
    assert "map seed 0: done before, skipped" in (root / "log.txt").read_text()

    # a variant/seed without its result.json reuses its finished stages
    os.remove(root / "map" / "seed1" / "result.json")
    run_ablation(load_ablation_config(write_cfg(tmp_path)), device="cpu")
    assert json.loads((root / "map" / "seed1" / "result.json").read_text())["finetune_acc"] == \
        m["finetune_acc"]["values"][1]

    # other settings into the same folder are refused, not mixed
    other = write_cfg(tmp_path, finetune={**TINY["finetune"], "optim": {"lr": 5e-4}})
    with pytest.raises(ValueError, match="holds a result of other settings"):
        run_ablation(load_ablation_config(other), device="cpu")


def test_skip_finetune_probes_only_and_reuses_full_results(tmp_path):
    run_ablation(load_ablation_config(write_cfg(tmp_path, variants=["map"], seeds=[0])), device="cpu")
    root = tmp_path / "exp" / "abl" / "default"
    full = json.loads((root / "map" / "seed0" / "result.json").read_text())
    assert full["finetune_acc"] is not None
    acfg = load_ablation_config(write_cfg(tmp_path, variants=["map", "mae"], seeds=[0], skip_finetune=True))
    assert "finetune" not in variant_configs(acfg, parse_variant("mae"), 0)
    res = run_ablation(acfg, device="cpu")
    m, e = res["variants"]
    assert m["finetune_acc"]["values"] == [full["finetune_acc"]]  # the full result was reused, not rerun
    assert e["finetune_acc"] is None and e["probe_acc"]["values"][0] >= 0
    assert not (root / "mae" / "seed0" / "finetune").exists()
    assert set(json.loads((root / "mae" / "seed0" / "result.json").read_text())["time_s"]) == {"pretrain", "probe"}
    row = next(line for line in (root / "table.md").read_text().splitlines() if line.startswith("| mae |"))
    assert row.split("|")[6].strip() == "–" and row.count("±") == 2
    # a probe-only result does not stand in for a full run
    with pytest.raises(ValueError, match="holds a result of other settings"):
        run_ablation(load_ablation_config(write_cfg(tmp_path, variants=["mae"], seeds=[0])), device="cpu")


def test_variants_and_sweeps(tmp_path):
    acfg = load_ablation_config(write_cfg(tmp_path, variants=["map", "mae", "ar", "scratch"],
                                          mask_ratios=[0.25, 0.5, 0.75], row_orders=["aligned", "shuffled"]))
    assert [v.name for v in expand_variants(acfg)] == ["map", "mae", "ar", "scratch", "map-mask0.25",
                                                       "map-mask0.75", "map-shuffled"]
    cfgs = variant_configs(acfg, parse_variant("map-mask0.25-shuffled"), 3)
    pre = cfgs["pretrain"]
    assert (pre.objective.name, pre.objective.mask_ratio, pre.train.seed) == ("map", 0.25, 3)
    assert pre.objective.decoder_row_order == "shuffled"
    assert cfgs["finetune"].pretrained.endswith(os.path.join("map-mask0.25-shuffled", "seed3", "pretrain", "ckpt-last.pth"))
    assert cfgs["probe"].train.probe == "svm" and cfgs["probe"].pretrained == cfgs["finetune"].pretrained
    scratch = variant_configs(acfg, parse_variant("scratch"), 0)
    assert "pretrain" not in scratch and scratch["finetune"].pretrained is None
    assert variant_configs(acfg, parse_variant("ar"), 0)["pretrain"].model.args["embed_dim"] == 16  # common


def tool(argv, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["ablate.py", *argv])
    monkeypatch.syspath_prepend(os.path.join(REPO, "tools"))
    with pytest.raises(SystemExit) as e:
        runpy.run_path(os.path.join(REPO, "tools", "ablate.py"), run_name="__main__")
    return e.value.code, capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--variants", "map", "mea"], "unknown ablation variant 'mea': use map, mae, ar, local_mae or scratch"),
    (["reference=map-concat"], "reference 'map-concat' is not one of the variants"),
    (["lowdata={fraction: 1.5}"], "lowdata.fraction must be in (0, 1)"),
    (["fewshot={way: 5, shot: 1, folds: [0]}"], "fewshot needs cfg"),
    (["fewshot={cfg: fewshot_demo.yaml, way: 5, shot: 1, folds: [0, 0]}"], "fewshot.folds must be distinct"),
    (["--mask-ratios", "1.5"], "the mask ratio must be in (0, 1)"),
    (["probe=lasso"], "probe must be svm, linear or none"),
    (["seed=[0]"], "unknown ablation key 'seed'"),
    (["skip_finetune=true", "probe=none"], "skip_finetune with probe none leaves nothing"),
])
def test_bad_input_is_one_line_error(tmp_path, monkeypatch, capsys, argv, message):
    code, err = tool(["--cfg", write_cfg(tmp_path), *argv], monkeypatch, capsys)
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "exp").exists()  # nothing ran


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(CFGS) if f.startswith("ablation") and f.endswith(".yaml")))
def test_shipped_ablation_configs_validate(name):
    acfg = load_ablation_config(os.path.join(CFGS, name))
    for v in expand_variants(acfg):
        cfgs = variant_configs(acfg, v, acfg.seeds[0])
        assert set(cfgs) - {"pretrain"}, name  # something is measured downstream
        assert all(c.task == "classification" for stage, c in cfgs.items() if stage != "pretrain")
        assert cfgs.get("pretrain") is None or cfgs["pretrain"].task == "pretrain"


def test_variant_grammar_v2():
    v = parse_variant("map-mask0.25-diagonal-concat-shuffled")
    assert (v.objective, v.mask_ratio, v.mask_strategy, v.decoder_order, v.row_order) == (
        "map", 0.25, "diagonal", "concat", "shuffled")
    assert parse_variant("local_mae").objective == "local_mae"
    assert parse_variant("map").mask_strategy is None and parse_variant("map").decoder_order is None
    for bad in ("map-concat-sequential", "local-mae", "map-zigzag"):
        with pytest.raises(ValueError, match="unknown ablation variant"):
            parse_variant(bad)


@pytest.mark.slow
def test_v2_stages_paired_differences(tmp_path):
    """Low-data finetuning and few-shot folds beside the probe, and the paired differences against MAE:
    the same folds and label subsets for every variant, pairs per seed and per seed × fold."""
    fs = {"cfg": os.path.join(CFGS, "fewshot_demo.yaml"), "way": 3, "shot": 2, "folds": [0, 1],
          "overrides": {"optim": {"epochs": 1, "warmup_epochs": 0}, "data": {"options": {"num_points": 64}, "batch_size": 2}}}
    path = write_cfg(tmp_path, variants=["map-concat", "local_mae", "mae", "scratch"], seeds=[0, 1],
                     skip_finetune=True, mask_strategies=["random", "sequential"], reference="mae",
                     lowdata={"fraction": 0.5}, fewshot=fs)
    acfg = load_ablation_config(path)
    assert [v.name for v in expand_variants(acfg)] == ["map-concat", "local_mae", "mae", "scratch", "map",
                                                       "map-sequential"]
    cfgs = variant_configs(acfg, parse_variant("map-concat"), 1)
    assert list(cfgs) == ["pretrain", "probe", "lowdata", "fewshot/fold0", "fewshot/fold1"]
    assert cfgs["pretrain"].objective.decoder_order == "concat" and cfgs["lowdata"].data.label_fraction == 0.5
    assert cfgs["fewshot/fold1"].data.options["fold"] == 1 and cfgs["fewshot/fold1"].pretrained == cfgs["probe"].pretrained
    assert variant_configs(acfg, parse_variant("map-sequential"), 0)["pretrain"].objective.mask_strategy == "sequential"
    res = run_ablation(acfg, device="cpu")
    root = tmp_path / "exp" / "abl" / "default"
    by = {v["name"]: v for v in res["variants"]}
    assert len(by["mae"]["fewshot_acc"]["values"]) == 4 and len(by["mae"]["lowdata_acc"]["values"]) == 2
    assert by["map-sequential"]["mask_strategy"] == "sequential" and by["map-concat"]["decoder_order"] == "concat"
    # the low-data run trained on half of each class's train shapes (after the validation hold-out)
    log = (root / "mae" / "seed0" / "lowdata" / "log.txt").read_text()
    assert "data.label_fraction 0.5: training on" in log
    per = {name: [json.loads((root / name / f"seed{k}" / "result.json").read_text()) for k in (0, 1)]
           for name in by}
    assert set(res["paired"]) == {"map-concat", "local_mae", "scratch", "map", "map-sequential"}
    d = res["paired"]["local_mae"]["fewshot_acc"]
    expect = [a - b for ra, rb in zip(per["local_mae"], per["mae"]) for a, b in zip(ra["fewshot_acc"], rb["fewshot_acc"])]
    assert d["values"] == pytest.approx(expect) and d["n"] == 4 and d["ci"][0] <= d["mean"] <= d["ci"][1]
    assert res["paired"]["scratch"]["lowdata_acc"]["n"] == 2
    table = (root / "table.md").read_text()
    assert "few-shot acc (%)" in table and "low-data finetune acc (%)" in table and "| variant − mae |" in table
    assert "95% Student-t interval" in table
    assert (root / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
