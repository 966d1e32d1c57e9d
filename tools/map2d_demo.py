"""MAP 2D's demo on the photographs shipped with scikit-image and matplotlib, timed, into docs/map2d/.

    python tools/map2d_demo.py          # minutes on one CPU thread; writes docs/map2d/demo.json and the picture

Runs the two commands of docs/map2d.md as a user would (tools/demo_numbers.py's runner: a child process from the
repository root, wall clock): the pretraining of cfgs/map2d/demo.yaml, then tools/visualize.py on its best
checkpoint, whose picture is copied to docs/map2d/demo_reconstruction.png. demo.json keeps each command, its time,
the losses of every epoch, the best epoch and the picture's MSE; the page quotes that file and
tests/test_readme_numbers.py checks it. The run folder must not exist yet (remove experiments/map2d/demo/ first).
"""
import argparse
import json
import os
import re
import shutil
import time

from _common import REPO
from demo_numbers import run_command

from pointmap.atomic import atomic_write
from pointmap.engine.rundir import cpu_name, environment
from pointmap.errors import UserError, add_debug_flag, user_errors_exit

RUN = "experiments/map2d/demo/default"
PRETRAIN = "python tools/pretrain.py --cfg cfgs/map2d/demo.yaml"
VISUALIZE = f"python tools/visualize.py --ckpt {RUN}/ckpt-best.pth --out {RUN}/reconstruction.png"
OUT = os.path.join("docs", "map2d")


def _run() -> str:
    import torch

    pretrain, metrics = run_command(PRETRAIN, f"{RUN}/metrics.json")
    print(f"pretrain: {pretrain['wall_s']:.0f} s | {pretrain['printed']}", flush=True)
    visualize, _ = run_command(VISUALIZE)
    mse = re.search(r"MSE ([0-9.eE+-]+)", visualize["printed"])
    if mse is None:
        raise UserError(f"visualize.py printed no MSE: {visualize['printed']!r}")
    history = metrics["history"]
    pretrain.update(epochs=len(history), train_loss=[round(h["train"]["loss"], 4) for h in history],
                    val_loss=[round(h["val"]["loss"], 4) for h in history], best=metrics["best"]["epoch"],
                    best_val_loss=round(metrics["best"]["value"], 4))
    visualize["mse"] = float(mse.group(1))
    env = environment()
    doc = {"commit": env["git_commit"], "dirty": env["git_dirty"], "torch": torch.__version__,
           "machine": f"{cpu_name()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d", time.gmtime()),
           "runs": {"pretrain": pretrain, "visualize": visualize}}
    out = os.path.join(REPO, OUT)
    os.makedirs(out, exist_ok=True)
    shutil.copyfile(os.path.join(REPO, RUN, "reconstruction.png"), os.path.join(out, "demo_reconstruction.png"))
    path = os.path.join(out, "demo.json")
    atomic_write(path, lambda f: f.write(json.dumps(doc, indent=2).encode() + b"\n"))
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_debug_flag(p)
    args = p.parse_args(argv)
    with user_errors_exit(args.debug):
        print(f"wrote {_run()}")


if __name__ == "__main__":
    main()
