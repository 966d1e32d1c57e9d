"""Part segmentation: mIoU against hand-worked numbers, the category-restricted argmax, the task's model
for every point preset (and Point-MAE's head), Point-MAE's head itself (size, which features reach it, the
interpolation weights), and tools/finetune_partseg.py end to end on ShapeNetPart fixture files and on
the synthetic part-labelled shapes."""
import json
import os

import pytest
import torch

import pointmap
from pointmap.config import load_config
from pointmap.engine import (SegmentationTask, part_iou_sums, part_mask, part_seg_metrics, restricted_argmax)
from pointmap.models import PointMAEPartSegmenter

from . import _data_fixtures as fx
from .test_tools import CFGS, TINY, assert_meta, tool

SEG_CLASSES = {"A": [0, 1], "B": [2, 3, 4]}
MASK = part_mask(SEG_CLASSES, ["A", "B"], 5)
# shape 0 (A): part 0 IoU 1/2, part 1 IoU 2/3           -> 7/12
# shape 1 (B): parts 2 and 3 exact, part 4 absent in both -> 1
# shape 2 (B): part 2 IoU 2/4, part 3 IoU 0, part 4 absent -> 1/2
SEG = torch.tensor([[0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 2, 2]])
PRED = torch.tensor([[0, 1, 1, 1], [2, 2, 3, 3], [3, 3, 2, 2]])
CAT = torch.tensor([0, 1, 1])


def test_miou_hand_worked_with_absent_part():
    sums = part_iou_sums(PRED, SEG, CAT, MASK)
    assert torch.allclose(sums["iou_sum"], torch.tensor([7 / 12, 1.5], dtype=torch.float64))
    assert sums["shapes"].tolist() == [1, 2]
    m = part_seg_metrics(sums["iou_sum"], sums["shapes"])
    assert m["cls_miou"] == pytest.approx(100 * (7 / 12 + 0.75) / 2)   # mean of per-category means
    assert m["ins_miou"] == pytest.approx(100 * (7 / 12 + 1 + 0.5) / 3)  # mean over shapes
    # sums over batches (or processes) add up to the same metrics
    a, b = part_iou_sums(PRED[:2], SEG[:2], CAT[:2], MASK), part_iou_sums(PRED[2:], SEG[2:], CAT[2:], MASK)
    assert part_seg_metrics(a["iou_sum"] + b["iou_sum"], a["shapes"] + b["shapes"]) == pytest.approx(m)


def test_absent_category_is_left_out_of_class_miou():
    m = part_seg_metrics(torch.tensor([0.5, 0.0], dtype=torch.float64), torch.tensor([1, 0]))
    assert m == {"cls_miou": 50.0, "ins_miou": 50.0}


def test_restricted_argmax_stays_inside_the_category():
    logits = torch.tensor([[[0.0, 1.0, 9.0, 0.0, 0.0]], [[5.0, 0.0, 1.0, 2.0, 0.0]]])  # (2 shapes, 1 point, 5)
    assert restricted_argmax(logits, torch.tensor([0, 1]), MASK).tolist() == [[1], [3]]
    assert logits.argmax(-1).tolist() == [[2], [0]]  # unrestricted, both would leave their category
    with pytest.raises(ValueError, match="category 'C' has no part table"):
        part_mask(SEG_CLASSES, ["A", "C"], 5)


# ----------------------------------------------------------------------------- Point-MAE's head
def test_point_mae_head_is_point_mae_s_size():
    with torch.device("meta"):
        seg = pointmap.create_model("pointmae", num_parts=50, num_categories=16, seg_head="point_mae", num_group=128)
    assert isinstance(seg, PointMAEPartSegmenter) and seg.layers == [3, 7, 11]
    assert sum(p.numel() for p in seg.parameters()) == 27_063_730      # Point-MAE's get_model(50)
    with pytest.raises(ValueError, match="seg_head must be one of pointmap, point_mae"):
        pointmap.create_model("pointmae", num_parts=50, seg_head="pointnet")
    with pytest.raises(ValueError, match="give num_parts"):
        pointmap.create_model("pointmae", num_classes=40, seg_head="point_mae")


def _idw_loop(points, centers, feats, k=3):
    """Each point's feature, one point at a time: the k nearest centers by squared distance, weights
    1 / (d² + 1e-8) normalised."""
    out = torch.zeros(*points.shape[:2], feats.shape[-1], dtype=feats.dtype)
    for b in range(points.shape[0]):
        for n in range(points.shape[1]):
            d2 = [float(((centers[b, g] - points[b, n]) ** 2).sum()) for g in range(centers.shape[1])]
            near = sorted(range(len(d2)), key=lambda g: d2[g])[:k]
            w = [1.0 / (d2[g] + 1e-8) for g in near]
            out[b, n] = sum(wi / sum(w) * feats[b, g] for wi, g in zip(w, near))
    return out


def test_point_mae_head_reads_blocks_3_7_11_and_interpolates_from_3_centers():
    """What reaches the head, taken with hooks: the final-normed outputs of blocks 3, 7, 11; per point its
    xyz and those features interpolated from the 3 nearest centers (checked by a plain loop); then
    [propagated; max; mean; label] in that order."""
    seg = pointmap.create_model("pointmae", num_parts=5, num_categories=4, seg_head="point_mae", embed_dim=16,
                                num_heads=2, num_group=16, group_size=8).double().eval()
    pts, cat = torch.randn(2, 64, 3, dtype=torch.float64), torch.tensor([1, 3])
    seen = {}
    for i, blk in enumerate(seg.encoder.blocks):
        blk.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out))
    seg.head.register_forward_pre_hook(lambda m, a: seen.__setitem__("head", a))
    seg.head.mlp.register_forward_pre_hook(lambda m, a: seen.__setitem__("mlp", a[0]))
    with torch.no_grad():
        logits = seg(pts, cat)
        assert logits.shape == (2, 64, 5) and torch.equal(logits, seg(pts, torch.eye(4)[cat]))
        per_point, feats, one_hot = seen["head"]
        want = torch.cat([seg.encoder.norm(seen[i]) for i in (3, 7, 11)], dim=-1)   # no cls token: all G tokens
        assert torch.equal(feats, want) and feats.shape == (2, 16, 48)
        _, centers = seg.encoder.group(pts)
        assert torch.equal(per_point[:, :3], pts.transpose(1, 2))
        assert torch.allclose(per_point[:, 3:].transpose(1, 2), _idw_loop(pts, centers, feats), atol=1e-12)
        mlp_in = seen["mlp"]
        assert mlp_in.shape == (2, 1024 + 48 + 48 + 64, 64)
        assert torch.equal(mlp_in[:, :1024], seg.head.propagation(per_point))
        assert torch.equal(mlp_in[:, 1024:1072, 0], feats.amax(1)) and torch.equal(mlp_in[:, 1072:1120, 5], feats.mean(1))
        assert torch.equal(mlp_in[:, 1120:, 9], seg.head.label_conv(torch.eye(4, dtype=torch.float64)[cat, :, None])[..., 0])


@pytest.fixture(scope="module")
def snp_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    fx.write_shapenetpart(root)
    return root


SNP_SAMPLE = ["data.train_transforms=[{name: normalize}, {name: sample, num_points: 64}]",
              "data.test_transforms=[{name: normalize}, {name: sample, num_points: 64, seed: 0}]"]
SNP = ["data.name=shapenetpart", "data.options={}", "data.train_split=trainval"] + SNP_SAMPLE


@pytest.mark.parametrize("name,seg_head", [(n, "pointmap") for n in pointmap.list_models()
                                            if "image" not in n and not n.endswith("_patch16_224")]
                         + [("pointmae", "point_mae"), ("mamba3d", "point_mae")])
def test_task_model_gives_50_part_logits_for_every_preset(name, seg_head, snp_root):
    cfg = load_config(os.path.join(CFGS, "partseg_demo.yaml"), TINY + SNP + [f"data.root={snp_root}"])
    cfg.model.name = name
    cfg.model.args = dict(embed_dim=16, layout="MT", num_heads=2, num_group=4, group_size=8, seg_head=seg_head)
    task = SegmentationTask(cfg)
    task.validate()  # seg_head is a model.args key every point preset takes
    datasets = task.build_datasets()
    model = task.build_model(datasets).eval()
    batch = {k: torch.stack([datasets["test"][i][k] for i in range(2)]) for k in ("points", "seg", "category")}
    with torch.no_grad():
        logits = model(batch["points"], batch["category"])
        sums = task.eval_step(model, batch)
    assert logits.shape == (2, 64, 50)
    assert sums["shapes"].sum() == 2 and sums["points"] == 128
    pred = restricted_argmax(logits, batch["category"], task.mask)
    assert task.mask[batch["category"].unsqueeze(1), pred].all()  # every prediction a part of its category


def test_a_float64_part_segmenter_keeps_float64_logits_and_loss(snp_root):
    """Only float16 / bfloat16 logits are upcast: a float64 model's logits and loss stay float64."""
    cfg = load_config(os.path.join(CFGS, "partseg_demo.yaml"), TINY + SNP + [f"data.root={snp_root}"])
    cfg.model.args = dict(embed_dim=16, layout="MT", num_heads=2, num_group=4, group_size=8)
    task = SegmentationTask(cfg)
    datasets = task.build_datasets()
    model = task.build_model(datasets).double()
    batch = {k: torch.stack([datasets["train"][i][k] for i in range(2)]) for k in ("points", "seg", "category")}
    batch["points"] = batch["points"].double()
    loss, _ = task.train_step(model, batch)
    assert loss.dtype == torch.float64
    with torch.no_grad():
        assert task.logits(model.eval(), batch).dtype == torch.float64


def test_partseg_tool_on_shapenetpart_fixture(snp_root, tmp_path, monkeypatch, capsys):
    code, out, err = tool("finetune_partseg.py", "--cfg", os.path.join(CFGS, "partseg_shapenetpart.yaml"),
                          "--device", "cpu", *TINY, *SNP_SAMPLE, f"data.root={snp_root}",
                          "data.batch_size=4", f"train.output_dir={tmp_path}", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert out.startswith("protocol clean | best epoch 1 (val ins_miou") and "test cls_miou " in out
    res = json.loads((tmp_path / "partseg_shapenetpart" / "default" / "metrics.json").read_text())
    assert res["task"] == "partseg" and res["test"]["count"] == 2 * fx.SNP_COUNTS["test"]
    assert 0.0 <= res["test"]["cls_miou"] <= 100.0 and 0.0 <= res["test"]["ins_miou"] <= 100.0
    assert_meta(tmp_path / "partseg_shapenetpart" / "default", "finetune_partseg.py")


def test_partseg_tool_on_synthetic_parts_peer_protocol(tmp_path, monkeypatch, capsys):
    code, out, err = tool("finetune_partseg.py", "--device", "cpu", "--protocol", "peer", *TINY,
                          "data.options={num_points: 64, samples_per_class: 2}", f"train.output_dir={tmp_path}",
                          monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert out.startswith("protocol peer | best epoch 1 (test ins_miou") and "ins_miou" in out.split("| test ")[1]
    bad = tool("finetune_partseg.py", "--cfg", os.path.join(CFGS, "finetune_demo.yaml"), "--device", "cpu", *TINY,
               f"train.output_dir={tmp_path}", monkeypatch=monkeypatch, capsys=capsys)
    assert bad[0] == 2 and "needs task: partseg" in bad[2]


def test_shapenetpart_recipe_samples_after_normalising_and_evaluates_the_same_points(snp_root):
    """cfgs/partseg_shapenetpart.yaml: whole shapes are normalised, then 2048 points drawn (the fixture's shapes
    have 30: every point, padded with repeats); validation and test give the same points every time, training
    draws anew."""
    cfg = load_config(os.path.join(CFGS, "partseg_shapenetpart.yaml"), [f"data.root={snp_root}"])
    datasets = SegmentationTask(cfg).build_datasets()
    whole = pointmap.data.build_dataset("shapenetpart", snp_root, "test")
    for split in ("val", "test"):
        first, again = datasets[split][1], datasets[split][1]
        assert first["points"].shape == (2048, 3)
        assert torch.equal(first["points"], again["points"]) and torch.equal(first["seg"], again["seg"])
    train = datasets["train"]
    assert not torch.equal(train[0]["points"], train[0]["points"])
    item, raw = datasets["test"][2], whole[2]["points"]
    normalised = raw - raw.mean(0)
    normalised = normalised / normalised.norm(dim=1).max()
    dist = (item["points"][:, None] - normalised[None]).norm(dim=-1)  # each point is a point of the normalised whole shape
    assert dist.min(1).values.max() < 1e-6 and set(dist.argmin(1).tolist()) == set(range(len(raw)))
    assert abs(float(item["points"].mean(0).norm()) - 0.0) > 1e-3  # repeats: not centred after sampling


def test_shapenetpart_num_points_points_to_the_sample_transform(snp_root):
    with pytest.raises(ValueError, match=r"shapenetpart: num_points=64 is not an option; list "
                                         r"\{name: sample, num_points: 64\} after \{name: normalize\}"):
        pointmap.data.build_dataset("shapenetpart", snp_root, "test", num_points=64)
