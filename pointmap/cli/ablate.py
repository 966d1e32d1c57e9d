"""Does MAP help? MAP vs MAE vs AR pretraining vs none (scratch), finetuned and linearly probed, over seeds.

    pointmap ablate --cfg ablation_demo --seeds 0 1 2              # ~50 min on 2 quiet CPU cores
    pointmap ablate --mask-ratios 0.25 0.5 0.75 --row-orders aligned shuffled  # + the MAP sweeps
    pointmap ablate --cfg ablation_demo seeds=[0] pretrain.optim.epochs=2   # key=value overrides
    pointmap ablate --exp-name dec4 skip_finetune=true pretrain.objective.decoder_depth=4 --variants map mae

Runs go to experiments/<cfg>/<exp-name>/; running the same command again skips the finished variant/seeds
and continues a begun one. Prints the table that table.md holds.
"""
import argparse

from ..errors import add_debug_flag
from ..experiments.ablation import format_table, load_ablation_config, run_ablation
from .common import description, main as run_command


def _run(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=description(__doc__))
    p.add_argument("--cfg", default="ablation_demo", help="ablation config: a shipped one by name or a yaml file "
                                                          "(default: ablation_demo)")
    p.add_argument("--exp-name", default=None, help="experiments/<cfg>/<exp-name>/ (default: default)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: the config's)")
    p.add_argument("--variants", nargs="+", default=None,
                   help="(put key=value overrides before this flag) map|mae|ar|local_mae[-mask<ratio>][-sequential|-diagonal]"
                        "[-concat][-shuffled], or scratch (default: the config's)")
    p.add_argument("--mask-ratios", type=float, nargs="+", default=None, help="MAP mask-ratio sweep, e.g. 0.25 0.5 0.75")
    p.add_argument("--row-orders", nargs="+", choices=["aligned", "shuffled"], default=None,
                   help="MAP decoder rows along the encoder's scan order (aligned) or a random permutation (shuffled)")
    p.add_argument("--mask-strategies", nargs="+", choices=["random", "sequential", "diagonal"], default=None,
                   help="MAP mask strategy sweep: adds map-sequential / map-diagonal")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, ...")
    add_debug_flag(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="ablation config overrides, e.g. probe=linear")
    args = p.parse_intermixed_args(argv)
    acfg = load_ablation_config(args.cfg, args.overrides)
    for key in ("exp_name", "seeds", "variants", "mask_ratios", "row_orders", "mask_strategies"):
        if getattr(args, key) is not None:
            setattr(acfg, key, getattr(args, key))
    return run_ablation(acfg, device=args.device)


def main(argv=None, prog=None) -> None:
    run_command(lambda: _run(argv, prog), summary=format_table, argv=argv)
