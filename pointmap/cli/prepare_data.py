"""Check and prepare the data root (layout: data/README.md).

    pointmap prepare-data check --root data [modelnet40 scanobjectnn ...]
    pointmap prepare-data build-cache --root data [--split train test] [--num-points 8192]
    pointmap prepare-data fewshot --root data [--ways 5 10] [--shots 10 20] [--folds 10] [--seed 0]

``check`` prints, per data set, what it found and every missing file by its full path; it exits 1 when a
data set named on the command line is absent or incomplete (with no names: when one that is present
is incomplete). ``build-cache`` writes ModelNet40's ``modelnet40_{split}_8192pts_fps.dat``; ``fewshot``
writes the missing ``ModelNetFewshot/{way}way_{shot}shot/{fold}.pkl``. Neither writes anything when a
source file is missing or broken: that is a user error, one line ``error: ...`` and exit 2, as every tool.
"""
import argparse
import logging

from ..data import CHECKS, check_root, write_modelnet_cache, write_modelnet_fewshot
from ..errors import UserError, add_debug_flag, report_user_error


def cmd_check(args) -> int:
    reports = check_root(args.root, args.names or None)
    failed, counts = False, {"ok": 0, "incomplete": 0, "absent": 0}
    for rep in reports:
        state = "ok" if rep.complete else ("incomplete" if rep.present else "absent")
        counts[state] += 1
        print(f"[{state}] {rep.name}: {rep.base}")
        if state == "absent" and not args.names:
            print(f"    not found (expected {rep.missing[0]}); name it to list every missing file")
            continue
        if rep.found:
            print("    found: " + ", ".join(f"{k}: {v}" for k, v in rep.found.items()))
        for path in rep.missing:
            print(f"    missing: {path}")
        for note in rep.notes:
            print(f"    note: {note}")
        failed = failed or (state != "ok" and bool(args.names or rep.present))
    print(", ".join(f"{v} {k}" for k, v in counts.items()) + (" (see data/README.md)" if failed else ""))
    return 1 if failed else 0


def cmd_build_cache(args) -> int:
    for split in args.split:
        def progress(i, n, split=split):
            if i % 500 == 0 or i == n:
                print(f"  {split}: {i}/{n}", flush=True)

        path = write_modelnet_cache(args.root, split, args.num_points, overwrite=args.overwrite, progress=progress)
        print(f"wrote {path}" if path else f"{split}: cache exists, skipped (--overwrite to rebuild)")
    return 0


def cmd_fewshot(args) -> int:
    written = write_modelnet_fewshot(args.root, args.ways, args.shots, args.folds, args.seed,
                                     overwrite=args.overwrite)
    for path in written:
        print(f"wrote {path}")
    print(f"{len(written)} fold files written" if written else "all folds present, nothing written")
    return 0


def main(argv=None, prog=None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    add_debug_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="report what is found and what is missing")
    p.add_argument("--root", default="data")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"data sets to check (default: all): {', '.join(CHECKS)}")
    p.set_defaults(fn=cmd_check)
    p = sub.add_parser("build-cache", help="write the ModelNet40 FPS caches from the text files")
    p.add_argument("--root", default="data")
    p.add_argument("--split", nargs="+", default=["train", "test"], choices=["train", "test"])
    p.add_argument("--num-points", type=int, default=8192)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(fn=cmd_build_cache)
    p = sub.add_parser("fewshot", help="write the missing ModelNet40 few-shot folds")
    p.add_argument("--root", default="data")
    p.add_argument("--ways", type=int, nargs="+", default=[5, 10])
    p.add_argument("--shots", type=int, nargs="+", default=[10, 20])
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(fn=cmd_fewshot)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.fn(args)
    except UserError as e:  # anything else is a bug: its traceback
        report_user_error(e, args.debug)
        return 2

