"""Self-supervised pretraining (MAP, or the MAE / AR baselines) of a point-cloud or image encoder.

    python tools/pretrain.py --cfg cfgs/map_demo.yaml                 # CPU demo, a few minutes
    torchrun --nproc_per_node=8 tools/pretrain.py --cfg cfgs/map_shapenet.yaml
    python tools/pretrain.py --cfg cfgs/map_shapenet.yaml --resume       # after an interruption
"""
from _common import build_parser, cfg_path, load, main

from pointmap.experiments import run_pretrain


def _run():
    args = build_parser(__doc__.splitlines()[0], cfg_path("map_demo.yaml"), seeds=False, downstream=False).parse_intermixed_args()
    return run_pretrain(load(args), device=args.device, resume=args.resume, force=args.force)


if __name__ == "__main__":
    main(_run)
