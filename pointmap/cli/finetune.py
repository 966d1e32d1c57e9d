"""Finetuning: classification on ModelNet40 and ScanObjectNN, part segmentation on ShapeNetPart (the demo
configs: synthetic shapes), and few-shot classification (``pointmap finetune fewshot``, in fewshot.py).

    pointmap finetune modelnet --cfg finetune_demo --ckpt experiments/map_demo/default/ckpt-last.pth
    pointmap finetune modelnet --cfg finetune_modelnet --ckpt <pretrained.pth> --seeds 0 1 2
    pointmap finetune scanobjectnn --variant hardest --ckpt experiments/map_shapenet/default/ckpt-last.pth
    pointmap finetune scanobjectnn --variant objbg --ckpt <pretrained.pth> --protocol peer
    pointmap finetune partseg --cfg partseg_demo --ckpt experiments/map_demo/default/ckpt-last.pth
    pointmap finetune partseg --cfg partseg_shapenetpart --ckpt <pretrained.pth> --protocol peer

Part segmentation reports class mIoU (mean over categories of the per-category mean shape IoU) and instance
mIoU (mean over shapes), predictions restricted to the parts of each shape's known category.
"""
from ..errors import UserError
from .common import build_parser, finetune, load, main as run_command

VARIANTS = ("objbg", "objonly", "hardest")
MODELNET = "Classification finetuning on ModelNet40 (or, with the demo config, on synthetic shapes)."
SCANOBJECTNN = "Classification finetuning on ScanObjectNN: --variant objbg | objonly | hardest (PB-T50-RS)."
PARTSEG = ("Part segmentation finetuning on ShapeNetPart (or, with the demo config, on synthetic part-labelled "
           "shapes).")


def modelnet(argv=None, prog=None) -> None:
    def run():
        args = build_parser(MODELNET, "finetune_demo", evaluate=True, prog=prog).parse_intermixed_args(argv)
        return finetune(args, load(args))

    run_command(run, argv=argv)


def scanobjectnn(argv=None, prog=None) -> None:
    def run():
        parser = build_parser(SCANOBJECTNN, None, evaluate=True, prog=prog)
        parser.add_argument("--variant", choices=VARIANTS, default=None,
                            help="default: hardest; picks the finetune_scan_<variant> config unless --cfg is given")
        args = parser.parse_intermixed_args(argv)
        extra = []
        if args.cfg is None:
            args.cfg = f"finetune_scan_{args.variant or 'hardest'}"
        elif args.variant:
            extra.append(f"data.options.variant={args.variant}")
        return finetune(args, load(args, extra))

    run_command(run, argv=argv)


def partseg(argv=None, prog=None) -> None:
    def run():
        args = build_parser(PARTSEG, "partseg_demo", probe=False, evaluate=True, prog=prog).parse_intermixed_args(argv)
        cfg = load(args)
        if cfg.task != "partseg":
            raise UserError(f"{args.cfg}: task is {cfg.task!r}; part segmentation needs task: partseg")
        return finetune(args, cfg)

    run_command(run, argv=argv)
