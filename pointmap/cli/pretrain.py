"""Self-supervised pretraining (MAP, or the MAE / AR baselines) of a point-cloud or image encoder.

    pointmap pretrain --cfg map_demo                                 # CPU demo, a few minutes
    torchrun --nproc_per_node=8 -m pointmap pretrain --cfg map_shapenet
    pointmap pretrain --cfg map_shapenet --resume                    # after an interruption
"""
from ..experiments import run_pretrain
from .common import build_parser, load, main as run_command


def main(argv=None, prog=None) -> None:
    def run():
        args = build_parser(__doc__, "map_demo", seeds=False, downstream=False, prog=prog).parse_intermixed_args(argv)
        return run_pretrain(load(args), device=args.device, resume=args.resume, force=args.force)

    run_command(run, argv=argv)
