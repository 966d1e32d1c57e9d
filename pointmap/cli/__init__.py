"""The ``pointmap`` command (also ``python -m pointmap``): one subcommand per tool, each with the arguments of
its ``tools/*.py`` script.

    pointmap --help                                  # the subcommands
    pointmap pretrain --cfg map_demo optim.epochs=1
    pointmap finetune modelnet --cfg finetune_demo --ckpt experiments/map_demo/default/ckpt-last.pth
    pointmap configs                                 # the shipped configs, by the names --cfg takes

A subcommand is one entry of :data:`COMMANDS`: its name, the module and function that run it (called with
the remaining arguments and the program name), and a line of help; a dict of entries is a group
(``finetune``). The module is imported only when its subcommand runs.
"""
import argparse
import difflib
import importlib
import sys
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ..version import __version__

Entry = Tuple[str, str]  # ("module:function", help)
COMMANDS: Dict[str, Union[Entry, Dict[str, Entry]]] = {
    "pretrain": ("pointmap.cli.pretrain:main", "self-supervised pretraining: MAP, or the MAE / AR baselines"),
    "finetune": {
        "modelnet": ("pointmap.cli.finetune:modelnet", "classification on ModelNet40 (demo config: synthetic)"),
        "scanobjectnn": ("pointmap.cli.finetune:scanobjectnn", "classification on ScanObjectNN: --variant ..."),
        "partseg": ("pointmap.cli.finetune:partseg", "part segmentation on ShapeNetPart (demo: synthetic)"),
        "fewshot": ("pointmap.cli.fewshot:main", "few-shot classification over folds, mean ± std"),
    },
    "predict": ("pointmap.cli.predict:main", "classify (or part-segment) your own point files and meshes"),
    "embed": ("pointmap.cli.embed:main", "features of your own point files and meshes, one row per file"),
    "export": ("pointmap.cli.export:main", "a run as a folder to share: safetensors, config, model card"),
    "visualize": ("pointmap.cli.visualize:main", "a pretrained model's reconstruction as a picture"),
    "recipe": ("pointmap.cli.recipe:main", "what a config will train, without data"),
    "prepare-data": ("pointmap.cli.prepare_data:main", "check a data root, build caches and few-shot folds"),
    "ablate": ("pointmap.cli.ablate:main", "MAP vs MAE vs AR vs scratch, finetuned and probed, over seeds"),
    "benchmark": ("pointmap.cli.benchmark:main", "time the ops on every backend and the training step"),
    "env": ("pointmap.cli:env", "what this machine can run: each op's backends, rendering"),
    "configs": ("pointmap.cli:configs", "the shipped configs, by the names --cfg takes"),
}


def _usage(table: Dict[str, Union[Entry, Dict[str, Entry]]], prog: str) -> str:
    lines = [f"usage: {prog} <command> [arguments]   ({prog} <command> --help: its arguments)", "", "commands:"]
    for name, entry in table.items():
        if isinstance(entry, dict):
            lines += [f"  {name + ' ' + sub:26s} {help_}" for sub, (_, help_) in entry.items()]
        else:
            lines.append(f"  {name:26s} {entry[1]}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None, prog: str = "pointmap") -> int:
    """Run ``pointmap <command> ...`` (``argv`` default: sys.argv[1:]); returns the exit code (the commands
    themselves exit 2 on a user error, 130 when interrupted)."""
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    table = COMMANDS
    while True:
        if not args or args[0] in ("-h", "--help"):
            print(_usage(table, prog), file=sys.stdout if args else sys.stderr)
            return 0 if args else 2
        if args[0] == "--version" and table is COMMANDS:
            print(f"pointmap {__version__}")
            return 0
        name = args.pop(0)
        entry = table.get(name)
        if entry is None:
            match = difflib.get_close_matches(name, list(table), n=1)
            hint = f" (did you mean {match[0]!r}?)" if match else ""
            print(f"error: {prog}: unknown command {name!r}{hint}; {prog} --help lists them", file=sys.stderr)
            return 2
        prog = f"{prog} {name}"
        if isinstance(entry, dict):
            table = entry
            continue
        module, _, function = entry[0].partition(":")
        code = getattr(importlib.import_module(module), function)(args, prog=prog)
        return code if isinstance(code, int) else 0


def env(argv: Sequence[str] = (), prog: Optional[str] = None) -> None:
    """``pointmap env``: ``python -m pointmap.env``'s report."""
    from .. import env as pm_env

    argparse.ArgumentParser(prog=prog, description=pm_env.main.__doc__).parse_args(argv)
    pm_env.main()


def configs(argv: Sequence[str] = (), prog: Optional[str] = None) -> None:
    """``pointmap configs``: the shipped configs, one name a line (``--path``: with the file each name is)."""
    import os

    from ..config import configs_dir, list_configs

    p = argparse.ArgumentParser(prog=prog, description="The shipped configs, by the names --cfg takes.")
    p.add_argument("--path", action="store_true", help="also print the file of each")
    args = p.parse_args(argv)
    for name in list_configs():
        print(f"{name:40s} {os.path.join(configs_dir(), name + '.yaml')}" if args.path else name)
