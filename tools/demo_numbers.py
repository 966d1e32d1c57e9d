"""Run the README's demo commands as a user would and write what they print to docs/demo/numbers.json.

    python tools/demo_numbers.py                              # ~45 min on 2 CPU cores; writes docs/demo/
    python tools/demo_numbers.py --only pretrain finetune     # a subset (the others keep their numbers)
    python tools/demo_numbers.py --jobs 2                     # two commands at a time (each uses one thread)

Each entry is one command exactly as the README shows it, run in a child process from the repository
root, timed (wall clock), with the numbers read from the run folder it wrote (metrics.json,
fewshot.json) or, for visualize.py, from its printed line. The reconstruction picture is written to
experiments/ by the README's visualize command and copied to docs/map_demo_reconstruction.png. Every
figure the README quotes for the demos comes from numbers.json, and tests/test_readme_numbers.py checks
that the README says what the file holds. The run folders must not exist yet (a tool refuses a folder
that holds a run): start from a clean checkout, or remove experiments/ first.
"""
import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from _common import REPO

from pointmap.atomic import atomic_write
from pointmap.engine.rundir import cpu_name, environment
from pointmap.errors import UserError, add_debug_flag, user_errors_exit

CKPT = "experiments/map_demo/default/ckpt-last.pth"
PICTURE = "experiments/map_demo/default/reconstruction.png"
# name -> (the README's command, where its numbers are)
COMMANDS = {
    "pretrain": ("python tools/pretrain.py --cfg cfgs/map_demo.yaml", "experiments/map_demo/default/metrics.json"),
    "finetune": (f"python tools/finetune_modelnet.py --cfg cfgs/finetune_demo.yaml --ckpt {CKPT}",
                 "experiments/finetune_demo/default/metrics.json"),
    "scratch": ("python tools/finetune_modelnet.py --cfg cfgs/finetune_demo.yaml --exp-name scratch",
                "experiments/finetune_demo/scratch/metrics.json"),
    "partseg": (f"python tools/finetune_partseg.py --cfg cfgs/partseg_demo.yaml --ckpt {CKPT}",
                "experiments/partseg_demo/default/metrics.json"),
    "fewshot": (f"python tools/fewshot.py --cfg cfgs/fewshot_demo.yaml --way 5 --shot 10 --folds 0-9 --ckpt {CKPT}",
                "experiments/fewshot_demo/default/5way_10shot/fewshot.json"),
    "linear_probe": (f"python tools/finetune_modelnet.py --cfg cfgs/finetune_demo.yaml --ckpt {CKPT} --linear-probe",
                     "experiments/finetune_demo/linear_probe/metrics.json"),
    "scratch_probe": ("python tools/finetune_modelnet.py --cfg cfgs/finetune_demo.yaml --linear-probe --exp-name scratch_probe",
                      "experiments/finetune_demo/scratch_probe/metrics.json"),
    "svm_probe": (f"python tools/finetune_modelnet.py --cfg cfgs/finetune_demo.yaml --ckpt {CKPT} --linear-probe svm",
                  "experiments/finetune_demo/svm_probe/metrics.json"),
    # the spread of the finetuning figures over seeds, from the pretrained checkpoint and from scratch
    "finetune_seeds": (f"python tools/finetune_modelnet.py --cfg cfgs/finetune_demo.yaml --ckpt {CKPT} --exp-name seeds "
                       "--seeds 0 1 2", "experiments/finetune_demo/seeds/metrics.json"),
    "scratch_seeds": ("python tools/finetune_modelnet.py --cfg cfgs/finetune_demo.yaml --exp-name scratch_seeds "
                      "--seeds 0 1 2", "experiments/finetune_demo/scratch_seeds/metrics.json"),
    "visualize": (f"python tools/visualize.py --cfg cfgs/map_demo.yaml --ckpt {CKPT} --index 3 --size 1200x330 "
                  f"--out {PICTURE}", None),
}


def numbers(name: str, metrics: dict, printed: str) -> dict:
    """The figures of one command's result that the README quotes."""
    if name == "pretrain":
        last = metrics["history"][-1]
        return {"epochs": last["epoch"], "train_loss": last["train"]["loss"]}
    if name == "visualize":
        m = re.search(r"Chamfer L2 ([0-9.eE+-]+)", printed)
        if not m:
            raise RuntimeError(f"visualize.py printed no Chamfer distance: {printed!r}")
        return {"chamfer_l2": float(m.group(1))}
    if name == "fewshot":
        acc = metrics["test"]["acc"]
        return {"folds": len(metrics["folds"]), "acc_mean": acc["mean"], "acc_std": acc["std"]}
    if name.endswith("_seeds"):
        acc = metrics["test"]["acc"]
        return {"seeds": metrics["seeds"], "acc_mean": acc["mean"], "acc_std": acc["std"], "acc_values": acc["values"]}
    test = metrics["test"]
    if name == "partseg":
        return {"cls_miou": test["cls_miou"], "ins_miou": test["ins_miou"]}
    out = {"test_acc": test["acc"], "test_count": test.get("count")}
    if "best" in metrics and "epoch" in metrics["best"]:
        out["best_epoch"] = metrics["best"]["epoch"]
    return out


def run_one(name: str) -> dict:
    command, result = COMMANDS[name]
    entry, metrics = run_command(command, result)
    return {**entry, **numbers(name, metrics, entry["printed"])}


def run_command(command: str, result: str = None) -> tuple:
    """Run ``command`` (``python tools/...``, this interpreter) from the repository root, timed: ({"command",
    "wall_s", "load_before", "printed": its last line}, the JSON file ``result`` it wrote, or {})."""
    load = os.getloadavg()[0]  # how busy the machine was as it started (1-minute load average)
    start = time.time()
    proc = subprocess.run([sys.executable, *shlex.split(command)[1:]], cwd=REPO, capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise UserError(f"{command} exited {proc.returncode}: {tail[0]}")
    printed = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    metrics = {}
    if result:
        with open(os.path.join(REPO, result), encoding="utf-8") as f:
            metrics = json.load(f)
    return {"command": command, "wall_s": round(wall, 1), "load_before": round(load, 2), "printed": printed}, metrics


def _schedule(names: list, jobs: int, previous: dict) -> dict:
    """Run ``names`` ``jobs`` at a time (each demo runs on one CPU thread): the pretraining first, with the
    commands that do not start from its checkpoint beside it, then the rest as workers free up; the longest
    first by ``previous``'s times."""
    needs_ckpt = {n for n in names if CKPT in COMMANDS[n][0] or PICTURE in COMMANDS[n][0]}
    longest = sorted((n for n in names if n != "pretrain"), key=lambda n: -previous.get(n, {}).get("wall_s", 0))
    order = ([n for n in names if n == "pretrain"] + [n for n in longest if n not in needs_ckpt]
             + [n for n in longest if n in needs_ckpt])
    runs, started = {}, {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        def one(name):
            if name in needs_ckpt and "pretrain" in started:  # submitted first, so already running or done
                started["pretrain"].result()  # its checkpoint first
            print(f"{name}: {COMMANDS[name][0]}", flush=True)
            out = run_one(name)
            print(f"  {name}: {out['wall_s']:.0f} s | {out['printed']}", flush=True)
            return out

        for name in order:
            started[name] = pool.submit(one, name)
        for name in order:
            runs[name] = started[name].result()
    return runs


def _run(args) -> str:
    out_dir = os.path.join(REPO, args.out)
    path = os.path.join(out_dir, "numbers.json")
    previous = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            previous = json.load(f).get("runs", {})
    chosen = [n for n in COMMANDS if not args.only or n in args.only]
    fresh = _schedule(chosen, args.jobs, previous)
    runs = {n: fresh[n] if n in fresh else previous[n] for n in COMMANDS if n in fresh or n in previous}
    import torch

    env = environment()
    doc = {"commit": env["git_commit"], "dirty": env["git_dirty"], "python": platform.python_version(),
           "torch": torch.__version__,
           "machine": f"{cpu_name()}, {os.cpu_count()} cores", "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
           "jobs": args.jobs,
           "date": time.strftime("%Y-%m-%d", time.gmtime()), "runs": runs}
    os.makedirs(out_dir, exist_ok=True)
    atomic_write(path, lambda f: f.write(json.dumps(doc, indent=2).encode() + b"\n"))
    if "visualize" in runs and (not args.only or "visualize" in args.only):
        shutil.copyfile(os.path.join(REPO, PICTURE), os.path.join(REPO, "docs", "map_demo_reconstruction.png"))
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=list(COMMANDS), default=None, help="run these commands only")
    p.add_argument("--jobs", type=int, default=1,
                   help="commands run at once (each demo uses one CPU thread: 2 on a 2-core machine; default 1)")
    p.add_argument("--out", default=os.path.join("docs", "demo"), help="folder of numbers.json (default docs/demo)")
    add_debug_flag(p)
    args = p.parse_args(argv)
    with user_errors_exit(args.debug):
        print(f"wrote {_run(args)}")


if __name__ == "__main__":
    main()
