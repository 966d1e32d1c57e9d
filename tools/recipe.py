"""What a config will train, without data and without a run folder: the model and its parameter count,
the optimizer's parameter groups, the epochs, the lr of every epoch, batch, clip, precision, transforms,
sampling, protocol and voting.

    python tools/recipe.py --cfg cfgs/pointmamba/finetune_scan_hardest.yaml
    python tools/recipe.py --cfg cfgs/map_shapenet.yaml optim.lr=5e-4 --json recipe.json   # all of it, as JSON
"""
import argparse
import json
import os
import sys

from _common import main

from pointmap.atomic import atomic_write
from pointmap.config import load_config
from pointmap.errors import add_debug_flag
from pointmap.experiments import describe_recipe, format_recipe


def _run():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", required=True, help="config file")
    p.add_argument("--protocol", choices=["clean", "peer"], default=None, help="override eval.protocol")
    p.add_argument("--json", default=None, metavar="FILE", help="write the whole recipe as JSON to FILE (- for stdout)")
    add_debug_flag(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=5e-4")
    args = p.parse_intermixed_args()
    cfg = load_config(args.cfg, args.overrides)
    if args.protocol:
        cfg.eval.protocol = args.protocol
    recipe = describe_recipe(cfg)
    if args.json == "-":
        json.dump(recipe, sys.stdout, indent=1)
        print()
    elif args.json:
        atomic_write(os.path.abspath(args.json), lambda f: json.dump(recipe, f, indent=1), binary=False)
    return recipe


def _summary(recipe) -> str:
    return "" if "--json" in sys.argv and sys.argv[sys.argv.index("--json") + 1:][:1] == ["-"] else format_recipe(recipe)


if __name__ == "__main__":
    main(_run, summary=_summary)
