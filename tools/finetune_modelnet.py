"""Classification finetuning on ModelNet40 (or, with the demo config, on synthetic shapes).

    python tools/finetune_modelnet.py --cfg cfgs/finetune_demo.yaml --ckpt experiments/map_demo/default/ckpt-last.pth
    python tools/finetune_modelnet.py --cfg cfgs/finetune_modelnet.yaml --ckpt <pretrained.pth> --seeds 0 1 2
"""
from _common import build_parser, cfg_path, finetune, load, main


def _run():
    args = build_parser(__doc__.splitlines()[0], cfg_path("finetune_demo.yaml"), evaluate=True).parse_intermixed_args()
    return finetune(args, load(args))


if __name__ == "__main__":
    main(_run)
