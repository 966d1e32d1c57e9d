"""Few-shot classification: one run per fold, then mean ± std over the folds (per-fold numbers in fewshot.json).

    pointmap finetune fewshot --cfg fewshot_demo --way 5 --shot 10 --folds 0-2 --ckpt experiments/map_demo/default/ckpt-last.pth
    pointmap finetune fewshot --cfg fewshot_modelnet --way 5 --shot 10 --folds 0-9 --ckpt <pretrained.pth>

ModelNet40's folds are read from data/ModelNetFewshot/{way}way_{shot}shot/{fold}.pkl (Point-BERT's);
--prepare-folds draws missing ones from ModelNet40 as `pointmap prepare-data fewshot` does.
"""
from ..experiments import parse_folds, run_fewshot
from .common import build_parser, load, main as run_command


def _run(argv=None, prog=None):
    parser = build_parser(__doc__, "fewshot_demo", seeds=False, prog=prog)
    parser.add_argument("--way", type=int, default=5, help="classes per fold (default 5)")
    parser.add_argument("--shot", type=int, default=10, help="training shapes per class (default 10)")
    parser.add_argument("--folds", default="0-9", help="folds to run, e.g. 0-9 (default) or 0,3,5")
    parser.add_argument("--prepare-folds", action="store_true",
                        help="write missing ModelNet40 fold files first (a seeded draw, not Point-BERT's folds)")
    args = parser.parse_intermixed_args(argv)
    folds = parse_folds(args.folds)
    return run_fewshot(load(args), args.way, args.shot, folds, device=args.device, resume=args.resume,
                       force=args.force, prepare=args.prepare_folds)


def main(argv=None, prog=None) -> None:
    run_command(lambda: _run(argv, prog), argv=argv)
