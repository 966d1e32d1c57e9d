"""Part segmentation: mIoU against hand-worked numbers, the category-restricted argmax, the task's model
for every point preset, and tools/finetune_partseg.py end to end on ShapeNetPart fixture files and on
the synthetic part-labelled shapes."""
import json
import os

import pytest
import torch

import pointmap
from pointmap.config import load_config
from pointmap.engine import (SegmentationTask, part_iou_sums, part_mask, part_seg_metrics, restricted_argmax)

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


@pytest.fixture(scope="module")
def snp_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    fx.write_shapenetpart(root)
    return root


SNP = ["data.name=shapenetpart", "data.options={num_points: 64}", "data.train_split=trainval"]


@pytest.mark.parametrize("name", [n for n in pointmap.list_models() if "image" not in n])
def test_task_model_gives_50_part_logits_for_every_preset(name, snp_root):
    cfg = load_config(os.path.join(CFGS, "partseg_demo.yaml"), TINY + SNP + [f"data.root={snp_root}"])
    cfg.model.name = name
    cfg.model.args = dict(embed_dim=16, layout="MT", num_heads=2, num_group=4, group_size=8)
    task = SegmentationTask(cfg)
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


def test_partseg_tool_on_shapenetpart_fixture(snp_root, tmp_path, monkeypatch, capsys):
    code, out, err = tool("finetune_partseg.py", "--cfg", os.path.join(CFGS, "partseg_shapenetpart.yaml"),
                          "--device", "cpu", *TINY, "data.options={num_points: 64}", f"data.root={snp_root}",
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
