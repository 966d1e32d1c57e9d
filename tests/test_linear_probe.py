"""Linear probing: the encoder stays exactly as pretrained (weights and norm statistics) while a linear
layer trains on its pooled features; the SVM variant; both through the tools' --linear-probe flag."""
import json
import os

import torch

from pointmap.config import load_config
from pointmap.engine import LinearProbe, Trainer, load_file
from pointmap.models import pooled_features

from .test_tools import CFGS, TINY_FINETUNE, pretrained, tool  # noqa: F401 (pretrained is a fixture)


def test_linear_probe_trains_only_the_linear_layer(pretrained, tmp_path):  # noqa: F811
    cfg = load_config(os.path.join(CFGS, "finetune_demo.yaml"),
                      TINY_FINETUNE + [f"train.output_dir={tmp_path}", "train.probe=linear", "optim.lr=0.1"])
    cfg.pretrained = pretrained
    trainer = Trainer(cfg, device="cpu")
    res = trainer.fit()
    model = trainer.module
    assert isinstance(model, LinearProbe) and isinstance(model.head[-1], torch.nn.Linear)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.1.weight", "head.1.bias"}
    src = load_file(pretrained)["model"]
    state = model.state_dict()
    enc = [k for k in state if k.startswith("encoder.")]
    assert enc and all(torch.equal(state[k], src[k]) for k in enc)  # running stats included
    assert any("running_mean" in k for k in enc)
    model.train()
    assert model.training and not model.encoder.training
    x = torch.randn(3, 64, 3)
    assert pooled_features(model, x).shape == (3, 2 * model.encoder.embed_dim) and model(x).shape == (3, 15)
    assert res["test"]["count"] > 0


def test_probe_flags_on_the_tools(pretrained, tmp_path, monkeypatch, capsys):  # noqa: F811
    code, out, err = tool("finetune_modelnet.py", "--cfg", os.path.join(CFGS, "finetune_demo.yaml"), "--ckpt", pretrained,
                          "--linear-probe", "--device", "cpu", *TINY_FINETUNE, f"train.output_dir={tmp_path}",
                          monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert out.startswith("protocol clean | linear probe | best epoch 1 (val acc") and "/linear_probe" in out
    code, out, err = tool("finetune_modelnet.py", "--cfg", os.path.join(CFGS, "finetune_demo.yaml"), "--ckpt", pretrained,
                          "--linear-probe", "svm", "--device", "cpu", *TINY_FINETUNE, f"train.output_dir={tmp_path}",
                          monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert out.startswith("protocol clean | svm probe | C ") and "(val acc" in out and "| test acc " in out
    res = json.loads((tmp_path / "finetune_demo" / "svm_probe" / "metrics.json").read_text())
    assert res["probe"] == "svm" and res["best"]["C"] in [float(c) for c in res["svm_grid"]]
    assert res["test"]["count"] == 15 * 2  # every test shape scored once
    code, out, err = tool("fewshot.py", "--ckpt", pretrained, "--linear-probe", "svm", "--protocol", "peer", "--way", "2",
                          "--shot", "3", "--folds", "0-1", "--device", "cpu", *TINY_FINETUNE,
                          "data.options={num_points: 64, num_query: 2}", f"train.output_dir={tmp_path}",
                          monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0, err
    assert out.startswith("protocol peer | svm probe | 2-way 3-shot, 2 folds [0, 1] | test acc ")
    bad = tool("finetune_partseg.py", "--linear-probe", monkeypatch=monkeypatch, capsys=capsys)
    assert bad[0] == 2 and "unrecognized arguments: --linear-probe" in bad[2]
