"""`torchrun --nproc_per_node=2 tools/pretrain.py ...` on CPU (gloo): both ranks end with the same weights,
rank 0 alone writes the run folder; then the finetuning tool under torchrun scores every test sample once."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from pointmap.engine import load_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Registers a hook that saves every rank's final weights, then runs the pretraining tool as torchrun would.
SCRIPT = textwrap.dedent("""
    import os, runpy, sys
    import torch
    from pointmap.engine import Hook, register_hook

    @register_hook("dump_rank_weights")
    class Dump(Hook):
        def __init__(self, folder):
            self.folder = folder
        def after_train(self, trainer, results):
            torch.save(trainer.module.state_dict(), os.path.join(self.folder, "rank%d.pt" % trainer.rank))

    sys.path.insert(0, os.path.join({repo!r}, "tools"))
    tool = sys.argv[1]
    sys.argv = [tool] + sys.argv[2:]
    runpy.run_path(os.path.join({repo!r}, "tools", tool), run_name="__main__")
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TINY_MODEL = "model.args={embed_dim: 16, layout: MT, num_heads: 2, num_group: 4, group_size: 8}"
COMMON = ["--device", "cpu", TINY_MODEL, "data.batch_size=8", "optim.epochs=1", "optim.warmup_epochs=0",
          "train.progress=false"]


def _torchrun(tmp_path, tool, *args):
    script = tmp_path / "launch.py"
    script.write_text(SCRIPT.format(repo=REPO))
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(script), tool, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_end_identical(tmp_path):
    out = tmp_path / "exp"
    proc = _torchrun(tmp_path, "pretrain.py", "--cfg", os.path.join(REPO, "cfgs", "map_demo.yaml"), *COMMON,
                     "objective.decoder_depth=1", "objective.decoder_heads=2", "data.options={size: 32, num_points: 64}",
                     f"train.output_dir={out}", f"hooks=[{{name: dump_rank_weights, folder: {tmp_path}}}]")
    w0, w1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    run = out / "map_demo" / "default"
    ckpt = load_file(str(run / "ckpt-last.pth"))
    assert ckpt["meta"]["world_size"] == 2 and ckpt["global_step"] == 4  # 32 samples / 2 ranks / (batch 8 / 2 ranks)
    assert all(torch.equal(ckpt["model"][k], w0[k]) for k in w0)
    assert len(ckpt["rng"]) == 2 and proc.stdout.count("protocol clean | best epoch 1") == 1

    proc = _torchrun(tmp_path, "finetune_modelnet.py", "--cfg", os.path.join(REPO, "cfgs", "finetune_demo.yaml"),
                     *COMMON, "--ckpt", str(run / "ckpt-last.pth"), "data.options={num_points: 64, samples_per_class: 2}",
                     f"train.output_dir={out}", "eval.vote=2")
    results = json.loads((out / "finetune_demo" / "default" / "metrics.json").read_text())
    assert results["test"]["count"] == 30 and results["test_vote"]["count"] == 30  # 15 classes x 2, none twice
    assert results["history"][0]["val"]["count"] == 15 and proc.stdout.count("| test acc ") == 1
