"""Classification finetuning on ScanObjectNN: --variant objbg | objonly | hardest (PB-T50-RS).

    python tools/finetune_scanobjectnn.py --variant hardest --ckpt experiments/map_shapenet/default/ckpt-last.pth
    python tools/finetune_scanobjectnn.py --variant objbg --ckpt <pretrained.pth> --protocol peer
"""
from _common import build_parser, cfg_path, finetune, load, main

VARIANTS = ("objbg", "objonly", "hardest")


def _run():
    parser = build_parser(__doc__.splitlines()[0], None, evaluate=True)
    parser.add_argument("--variant", choices=VARIANTS, default=None,
                        help="default: hardest; picks cfgs/finetune_scan_<variant>.yaml unless --cfg is given")
    args = parser.parse_intermixed_args()
    extra = []
    if args.cfg is None:
        args.cfg = cfg_path(f"finetune_scan_{args.variant or 'hardest'}.yaml")
    elif args.variant:
        extra.append(f"data.options.variant={args.variant}")
    return finetune(args, load(args, extra))


if __name__ == "__main__":
    main(_run)
