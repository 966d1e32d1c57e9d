"""Part segmentation finetuning on ShapeNetPart (or, with the demo config, on synthetic part-labelled shapes).

    python tools/finetune_partseg.py --cfg cfgs/partseg_demo.yaml --ckpt experiments/map_demo/default/ckpt-last.pth
    python tools/finetune_partseg.py --cfg cfgs/partseg_shapenetpart.yaml --ckpt <pretrained.pth> --protocol peer

Reports class mIoU (mean over categories of the per-category mean shape IoU) and instance mIoU (mean
over shapes), predictions restricted to the parts of each shape's known category.
"""
from _common import build_parser, cfg_path, finetune, load, main

from pointmap.errors import UserError


def _run():
    parser = build_parser(__doc__.splitlines()[0], cfg_path("partseg_demo.yaml"), probe=False, evaluate=True)
    args = parser.parse_intermixed_args()
    cfg = load(args)
    if cfg.task != "partseg":
        raise UserError(f"{args.cfg}: task is {cfg.task!r}; finetune_partseg.py needs task: partseg")
    return finetune(args, cfg)


if __name__ == "__main__":
    main(_run)
