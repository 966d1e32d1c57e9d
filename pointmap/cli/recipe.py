"""What a config will train, without data and without a run folder: the model and its parameter count,
the optimizer's parameter groups, the epochs, the lr of every epoch, batch, clip, precision, transforms,
sampling, protocol and voting.

    pointmap recipe --cfg pointmamba/finetune_scan_hardest
    pointmap recipe --cfg map_shapenet optim.lr=5e-4 --json recipe.json   # all of it, as JSON
"""
import argparse
import json
import os
import sys

from ..atomic import atomic_write
from ..config import load_config
from ..errors import add_debug_flag
from ..experiments import describe_recipe, format_recipe
from .common import CFG_HELP, description, main as run_command


def _run(args):
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


def main(argv=None, prog=None) -> None:
    p = argparse.ArgumentParser(prog=prog, description=description(__doc__))
    p.add_argument("--cfg", required=True, help=CFG_HELP)
    p.add_argument("--protocol", choices=["clean", "peer"], default=None, help="override eval.protocol")
    p.add_argument("--json", default=None, metavar="FILE", help="write the whole recipe as JSON to FILE (- for stdout)")
    add_debug_flag(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=5e-4")
    args = p.parse_intermixed_args(argv)
    # JSON on stdout is the whole output; otherwise the summary
    run_command(lambda: _run(args), summary=lambda recipe: "" if args.json == "-" else format_recipe(recipe),
                debug=args.debug)
