"""The peers' recipes as configs train what the peers' own code trains.

tests/fixtures/peers/recipes/ holds one record per recipe (``<peer>__<recipe>.json``), written from the peers'
own code (its README says how): merged config, the optimizer's parameter groups by name, the lr of every
epoch, the transforms and the sampling with file:line. Each record is compared here with what
``tools/recipe.py`` (``pointmap.experiments.describe_recipe``) reports for ``cfgs/<peer>/<recipe>.yaml``.
Everything is derived from the record; the only tables here translate the peers' names (transform classes,
config keys) into pointmap's. No data set is needed.
"""
import functools
import glob
import json
import os

import pytest
import torch

from pointmap.config import load_config
from pointmap.experiments import describe_recipe
from pointmap.models.convert import map3d_to_pointmap, point_mae_to_pointmap, pointmamba_to_pointmap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDS = sorted(glob.glob(os.path.join(ROOT, "tests", "fixtures", "peers", "recipes", "*.json")))
FOLDER = {"point_mae": "point_mae", "pointmamba": "pointmamba", "mamba3d": "mamba3d", "map_mamba3d": "map3d"}
CONVERTER = {"point_mae": point_mae_to_pointmap, "pointmamba": pointmamba_to_pointmap,
             "mamba3d": map3d_to_pointmap, "map_mamba3d": map3d_to_pointmap}
STORED_POINTS = {"ModelNet": 8192, "ModelNetFewShot": 8192, "ShapeNet": 8192}  # as the files hold them
IDS = [os.path.basename(p)[:-5] for p in RECORDS]


def record(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def cfg_path(rec):
    return os.path.join(ROOT, "cfgs", FOLDER[rec["peer"]], f"{rec['recipe']}.yaml")


@functools.lru_cache(maxsize=None)
def ours(path):
    return describe_recipe(load_config(path))


@pytest.fixture(params=RECORDS, ids=IDS)
def pair(request):
    rec = record(request.param)
    return rec, ours(cfg_path(rec))


def test_one_config_per_record_and_back():
    want = {cfg_path(record(p)) for p in RECORDS}
    have = {p for folder in FOLDER.values() for p in glob.glob(os.path.join(ROOT, "cfgs", folder, "*.yaml"))}
    assert len(RECORDS) == 25 and want == have


# ----------------------------------------------------------------------------- parameter groups
def _converted(rec, names, layout):
    """The peer's tensor names in pointmap's, through the checkpoint converter (names only: dummy tensors)."""
    return set(CONVERTER[rec["peer"]]({n: torch.zeros(1) for n in names}, layout))


def test_parameter_groups(pair):
    rec, r = pair
    pg = rec["param_groups"]
    if pg.get("status") == "not run":  # the peer's code cannot build this model: the config says so
        assert "NOT checked against the peer" in open(cfg_path(rec), encoding="utf-8").read()
        pytest.skip(pg["reason"])
    assert r["weight_decay_rule"] == "peer"
    assert r["model"]["parameters"] == pg["total_params"]
    assert r["model"]["trainable_parameters"] == pg["trainable_params"]
    theirs = {g["weight_decay"]: g for g in pg["groups"]}
    mine = {g["weight_decay"]: g for g in r["param_groups"]}
    assert sorted(mine) == sorted(theirs) == [0.0, 0.05]
    assert [g["weight_decay"] for g in r["param_groups"]] == [g["weight_decay"] for g in pg["groups"]]
    layout = r["model"]["settings"].get("layout")
    for wd, group in theirs.items():
        assert mine[wd]["n_params"] == group["n_params"], f"weight decay {wd}"
        assert set(mine[wd]["names"]) == _converted(rec, group["names"], layout), f"weight decay {wd}"
        assert mine[wd]["lr"] == group["lr_kwarg"]


# ----------------------------------------------------------------------------- schedule
def test_epochs_and_lr_of_every_epoch(pair):
    rec, r = pair
    lr = rec["lr_per_epoch"]
    assert r["epochs"] == lr["n_epochs"] == len(lr["lr"]["values"])
    ref = torch.tensor(lr["lr"]["values"], dtype=torch.float64)
    got = torch.tensor(r["lr_per_epoch"], dtype=torch.float64)
    assert ((got - ref).abs() / ref.abs()).max().item() < 1e-9
    assert lr["step_inside_batch_loop"] is False and r["schedule"]["schedule_step"] == "epoch"


def test_batch_clip_precision_and_steps(pair):
    rec, r = pair
    c = rec["config"]
    if "argparse" in c:  # Point-MAE's part segmentation: argparse and constants in main()
        batch, clip = c["argparse"]["batch_size"], c["fixed_in_main"]["grad_clip_max_norm"]
    else:
        batch, clip = c["total_bs"], c.get("grad_norm_clip")
        assert c.get("step_per_update", 1) == 1
    assert r["batch_size"] == batch and r["grad_clip"] == clip and r["precision"] == "fp32"
    steps = [e for e in rec["runner_events"] if e["kind"] == "optimizer_step" and e.get("applies") is not False]
    assert r["optimizer_steps_per_batch"] == len(steps)


# ----------------------------------------------------------------------------- model
def _peer_model_cfg(rec):
    m = rec["config"]["model"]
    return {**m, **m.get("transformer_config", {}), **m.get("mamba_config", {})}


def test_model_settings(pair):
    rec, r = pair
    m, s = _peer_model_cfg(rec), r["model"]["settings"]
    assert (s["num_group"], s["group_size"]) == (m["num_group"], m["group_size"])
    drop = m.get("drop_path_rate", m.get("drop_path"))
    assert max(s["drop_path"]) == pytest.approx(drop) and min(s["drop_path"]) == 0.0
    assert s["block_dropout"] == m.get("drop_out", 0.0)
    if rec["recipe"] == "pretrain":
        o = r["objective"]
        assert (o["mask_ratio"], o["decoder_depth"], o["mask_strategy"]) == (m["mask_ratio"], m["decoder_depth"], "random")
        assert m["mask_type"] == "rand" and m["loss"] == o["loss"] == "cdl2"
    if rec["peer"] in ("mamba3d", "map_mamba3d") and rec["recipe"] != "pretrain":
        assert s["global_pool"] == "cls_maxmean_sample0"  # the release's head: sample 0's mean token for all


# ----------------------------------------------------------------------------- transforms and sampling
def _augmentation(entry):
    """A peer transform (class or function, with its defaults) as pointmap's transform entry."""
    name, d = entry
    if name == "PointcloudScaleAndTranslate":
        return {"name": "scale_translate", "scale_low": d["scale_low"], "scale_high": d["scale_high"],
                "translate": d["translate_range"], "anisotropic": True}
    if name == "PointcloudRotate":  # a uniform angle about the up (y) axis
        return {"name": "rotate", "axis": "y", "max_angle": 180.0}
    raise AssertionError(f"no pointmap spelling for {name}")


def _peer_train_augmentation(rec):
    t = rec["transforms"]
    if rec["recipe"] == "partseg":  # two numpy functions: one isotropic scale, then one shift per cloud
        f = {x["function"].split(".")[-1]: x["defaults"] for x in t["train"]}
        return [{"name": "scale_translate", "scale_low": f["random_scale_point_cloud"]["scale_low"],
                 "scale_high": f["random_scale_point_cloud"]["scale_high"],
                 "translate": f["shift_point_cloud"]["shift_range"], "anisotropic": False}]
    classes = t["classes"]
    return [_augmentation((name, classes[name]["defaults"])) for name in t["in_effect"]["train"]]


def _augmentations(entries):
    return [{k: v for k, v in e.items() if k not in ("random_start", "skip_near_origin")}
            for e in entries or [] if e["name"] not in ("sample", "normalize")]


def _close(a, b):
    assert len(a) == len(b), (a, b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys(), (x, y)
        for k in x:
            assert x[k] == pytest.approx(y[k]) if isinstance(y[k], float) else x[k] == y[k], (k, x, y)


def expected_voting(rec):
    """The peers' --test votes (299 rounds of 10 views, the best reported) where a test_vote function is in
    effect and does not raise; few-shot numbers are each fold's best test accuracy, without voting."""
    fns = rec["transforms"]["in_effect"]["eval_by_function"]
    raises = "raises" in (rec["sampling"] or {}).get("summary", {}).get("test_vote", "")
    return (10, 299) if "test_vote" in fns and not raises and rec["recipe"] != "fewshot" else (1, 1)


def test_augmentations(pair):
    rec, r = pair
    t = r["transforms"]
    _close(_augmentations(t["train"]), _peer_train_augmentation(rec))
    assert _augmentations(t["test"]) == []  # validate / test apply none
    if expected_voting(rec)[0] > 1:
        fns = rec["transforms"]["in_effect"]["eval_by_function"]
        classes = rec["transforms"]["classes"]
        _close(_augmentations(t["vote_view"]), [_augmentation((c, classes[c]["defaults"])) for c in fns["test_vote"]])
        assert _augmentations(t["vote"]) == []


def _dataset(rec):
    ds = rec["dataset"] or {}
    return next(iter(ds.items())) if ds else (None, {})


def _stored_points(rec):
    name, _ = _dataset(rec)
    if name and name.startswith("ScanObjectNN"):
        return 2048  # the h5 layout
    return STORED_POINTS[name]


def _normalised(rec):
    return rec["recipe"] == "partseg" or any("normalised" in f["note"] for f in _dataset(rec)[1].get("facts", []))


def _samples(entries):
    return [{k: e[k] for k in ("method", "num_points", "random_start", "skip_near_origin")}
            for e in entries or [] if e["name"] == "sample"]


def _sample(method, n, random_start=False, skip=False):
    return {"method": method, "num_points": n, "random_start": random_start, "skip_near_origin": skip}


def _fps_then_random(point_all, n, cloud, random_start):
    """The runners' draw: FPS to point_all (pointnet2_ops, lowered to the cloud's size), then n of them at
    random; keeping every point of the cloud it is a permutation, one random draw."""
    fps_n = min(point_all, cloud)
    if fps_n == n == cloud:
        return [_sample("random", n)]
    return [_sample("fps", fps_n, random_start, True), _sample("random", n)]


def test_sampling_and_normalisation(pair):
    rec, r = pair
    s, t = r["sampling"], r["transforms"]
    if rec["recipe"] == "partseg":  # 2048 indices with replacement, train and test alike, after normalising
        want_train = want_test = [_sample("replace", rec["config"]["argparse"]["npoint"])]
    elif rec["recipe"] == "pretrain":  # the data set's draw: n of the first N_POINTS stored points, shuffled
        n, first = rec["config"]["npoints"], rec["config"]["dataset"]["train"]["_base_"]["N_POINTS"]
        want_train = ([_sample("first", first)] if first < _stored_points(rec) else []) + [_sample("random", n)]
        want_test = None
        assert "no FPS" in rec["sampling"]["summary"]["run_net"]
    else:
        n, cloud = rec["config"]["npoints"], _stored_points(rec)
        point_all = rec["sampling"]["point_all"]["run_net"]["for_this_recipe"]
        shuffled = any("shuffled" in f["note"] for f in _dataset(rec)[1].get("facts", []))
        want_train = _fps_then_random(point_all, n, cloud, shuffled)
        want_test = [_sample("fps", n, False, True)] if n < cloud else []
        if expected_voting(rec)[0] > 1:
            vote = _fps_then_random(rec["sampling"]["point_all"]["test_vote"]["for_this_recipe"], n, cloud, False)
            assert _samples(s["vote"]) + _samples(s["vote_view"]) == vote
            assert (len(vote) == 1) == (s["vote"] == [])  # the views draw from the FPS set, or from the cloud
    assert _samples(s["train"]) == want_train
    if want_test is not None:
        assert _samples(s["test"]) == want_test
    names = [e["name"] for e in t["train"]]
    if rec["recipe"] == "pretrain":  # ShapeNet: sampled, then normalised
        assert names.index("normalize") > max(i for i, x in enumerate(names) if x == "sample")
    else:
        assert (names[:1] == ["normalize"]) == _normalised(rec)
        assert ([e["name"] for e in t["test"]][:1] == ["normalize"]) == _normalised(rec)


# ----------------------------------------------------------------------------- protocol
def test_protocol_voting_and_selection(pair):
    rec, r = pair
    assert r["protocol"] == "peer"
    assert (r["voting"]["views"], r["voting"]["rounds"]) == expected_voting(rec)
    if rec["recipe"] == "partseg":
        assert {"name": "best", "ties": "last"} in r["hooks"]  # best_model.pth on >=
    elif rec["recipe"] != "pretrain":
        assert {"name": "evaluate", "first": 2} in r["hooks"]  # validation from the loop's second epoch


# ----------------------------------------------------------------------------- the configs run
def _run(cfg_rel, tmp_path, *overrides):
    from pointmap.engine import Trainer

    cfg = load_config(os.path.join(ROOT, "cfgs", cfg_rel), [f"train.output_dir={tmp_path}", "data.num_workers=0",
                                                            "train.progress=false", *overrides])
    return Trainer(cfg, device="cpu").fit()


@pytest.mark.slow
def test_peer_pretraining_runs(tmp_path):
    """PointMamba's recipe, shrunk: the Mamba decoder, the per-batch order draw, the extra epoch at 1e-6."""
    res = _run("pointmamba/pretrain.yaml", tmp_path, "model.args={embed_dim: 16, layout: M, num_group: 8, group_size: 8}",
               "objective.decoder_depth=1", "data.name=synthetic_pretrain", "data.root=null",
               "data.options={size: 16, num_points: 128}", "data.batch_size=8", "optim.epochs=1",
               "optim.warmup_epochs=1", "data.train_transforms=[{name: sample, num_points: 64, method: first}, "
               "{name: sample, num_points: 64, method: random}, {name: normalize}, {name: rotate}]")
    assert [h["lr"] for h in res["history"]] == [1e-6, 1e-6] and res["best"]["value"] > 0


@pytest.mark.slow
def test_peer_finetuning_with_voting_rounds_runs(tmp_path):
    """Point-MAE's ModelNet recipe, shrunk: FPS from a random start, selection on test from the second epoch,
    the best of 2 voting passes drawn from an FPS set."""
    res = _run("point_mae/finetune_modelnet.yaml", tmp_path,
               "model.args={embed_dim: 16, layout: T, num_heads: 2, num_group: 8, group_size: 8}",
               "data.name=synthetic", "data.root=null", "data.options={num_points: 160, samples_per_class: 2}",
               "data.batch_size=10", "data.eval_batch_size=10", "optim.epochs=1", "optim.warmup_epochs=0",
               "eval.vote=2", "eval.vote_rounds=2",
               "data.train_transforms=[{name: normalize}, {name: sample, num_points: 80, method: fps, random_start: true, "
               "skip_near_origin: true}, {name: sample, num_points: 64, method: random}, {name: scale_translate}]",
               "data.test_transforms=[{name: normalize}, {name: sample, num_points: 64, method: fps, skip_near_origin: true}]",
               "data.vote_transforms=[{name: normalize}, {name: sample, num_points: 80, method: fps, skip_near_origin: true}]",
               "eval.vote_view_transforms=[{name: sample, num_points: 64, method: random}, {name: scale_translate}]")
    assert res["protocol"] == "peer" and res["selection"]["split"] == "test" and res["epochs_done"] == 2
    assert "test" not in res["history"][0] and "test" in res["history"][1]
    assert res["test_vote"]["rounds"] == 2 and res["test_vote"]["views"] == 2


@pytest.mark.slow
def test_point_mae_part_segmentation_runs(tmp_path):
    """Point-MAE's part-segmentation recipe, shrunk: its head, points drawn with replacement, two optimizer
    steps per batch, the test set scored every epoch and ties taken by the later epoch."""
    res = _run("point_mae/partseg.yaml", tmp_path,
               "model.args={embed_dim: 24, layout: TTTT, num_heads: 2, num_group: 8, group_size: 8, seg_head: point_mae}",
               "data.name=synthetic_parts", "data.root=null", "data.train_split=train",
               "data.options={num_points: 96, samples_per_class: 2}",
               "data.batch_size=8", "data.eval_batch_size=8", "optim.epochs=2", "optim.warmup_epochs=0",
               "data.train_transforms=[{name: normalize}, {name: sample, num_points: 64, method: replace}, "
               "{name: scale_translate, scale_low: 0.8, scale_high: 1.25, translate: 0.1, anisotropic: false}]",
               "data.test_transforms=[{name: normalize}, {name: sample, num_points: 64, method: replace}]")
    assert res["epochs_done"] == 2 and all("test" in h for h in res["history"])
    assert res["selection"] == {"split": "test", "metric": "ins_miou", "mode": "max"} and 0 <= res["test"]["ins_miou"] <= 100
