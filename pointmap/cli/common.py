"""What the commands share: the common flags, loading the config, one-line errors, the final summary."""
import argparse
import sys
import warnings
from typing import Optional, Sequence

from ..config import Config, load_config
from ..engine import ProcessScope, RunInterrupted, shutdown
from ..engine.distributed import is_main_process
from ..engine.scope import exit_code
from ..errors import UserError, add_debug_flag, user_errors_exit
from ..experiments import evaluate_checkpoint, format_results, run_finetune
from ..models import absolute_spec

CKPT_HELP = ("weights to start from: a pointmap checkpoint, a peer's file (Point-MAE, PointMamba, MAP 3D, Mamba3D), "
             "a folder written by `pointmap export`, a published entry such as pointmae.scan_hardest (downloaded "
             "once into $POINTMAP_HOME; `python -c 'import pointmap; print(pointmap.list_pretrained())'`), or "
             "hf-hub:owner/repo[@revision] (an export on the Hugging Face Hub)")
CFG_HELP = ("config: a shipped one by name (`pointmap configs` lists them: map_demo, point_mae/finetune_modelnet, "
            "...) or a yaml file")


def description(doc: str) -> str:
    """A command's one-line description: the first line of its module's docstring."""
    return doc.strip().splitlines()[0]


def build_parser(doc: str, default_cfg: Optional[str], seeds: bool = True, probe: bool = True,
                 evaluate: bool = False, downstream: bool = True, prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The common flags; ``doc``: the command's docstring (its first line describes it, the rest is the epilog);
    ``downstream=False`` (pretraining) leaves out the ones only a downstream task reads (--protocol,
    --linear-probe)."""
    p = argparse.ArgumentParser(prog=prog, description=description(doc), epilog=doc.strip().partition("\n")[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default=default_cfg, help=f"{CFG_HELP} (default: {default_cfg or 'see below'})")
    p.add_argument("--exp-name", default=None, help="run folder: experiments/<cfg>/<exp-name>/ (default: default)")
    p.add_argument("--resume", action="store_true", help="continue the run in that folder from ckpt-last.pth; "
                   "a config that changes what the run trains (batch size, model, data, schedule, ...) is refused")
    p.add_argument("--force", action="store_true", help="with --resume: go on where the config changes what the run "
                   "trains (the changes are recorded in meta.json; config.yaml stays the original)")
    p.add_argument("--ckpt", default=None, help=CKPT_HELP)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    if downstream:
        p.add_argument("--protocol", choices=["clean", "peer"], default=None,
                       help="clean: a validation split picks the checkpoint (default); peer: select on test")
    if probe and downstream:
        p.add_argument("--linear-probe", nargs="?", const="linear", choices=["linear", "svm"], default=None,
                       help="freeze the encoder: train a linear layer on its pooled features (linear, the default) "
                            "or fit a linear SVM on them (svm); runs go to <exp-name> <mode>_probe by default")
    if evaluate:
        p.add_argument("--eval", action="store_true",
                       help="no training: score a checkpoint on the test split under the config's protocol and "
                            "voting (--ckpt, default experiments/<cfg>/<exp-name>/ckpt-best.pth); the result "
                            "goes to experiments/<cfg>/<exp-name>/eval/")
    if seeds:
        p.add_argument("--seeds", type=int, nargs="+", default=None,
                       help="one run per seed, then mean ± std (put key=value overrides before this flag)")
    add_debug_flag(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=5e-4")
    return p


def load(args: argparse.Namespace, extra_overrides=()) -> Config:
    if getattr(args, "force", False) and not args.resume:
        raise UserError("--force goes with --resume (it accepts a changed config when continuing a run)")
    cfg = load_config(args.cfg, list(extra_overrides) + list(args.overrides))
    probe = getattr(args, "linear_probe", None)
    if probe:
        cfg.train.probe = probe
        cfg.exp_name = f"{probe}_probe"  # beside the finetuning run, not over it
    if args.exp_name:
        cfg.exp_name = args.exp_name
    if args.ckpt:
        cfg.pretrained = absolute_spec(args.ckpt)
    if getattr(args, "protocol", None):
        cfg.eval.protocol = args.protocol
    return cfg


def finetune(args: argparse.Namespace, cfg: Config):
    """What a finetuning command does with its parsed flags: train (one run or one per seed), or ``--eval``."""
    if args.eval:
        if args.seeds or args.resume:
            raise UserError("--eval scores one checkpoint: drop --seeds / --resume")
        return evaluate_checkpoint(cfg, args.ckpt, device=args.device)
    return run_finetune(cfg, seeds=args.seeds, device=args.device, resume=args.resume, force=args.force)


def main(run, summary=format_results, debug=None, argv: Optional[Sequence[str]] = None) -> None:
    """Call ``run()`` (which returns the results); print ``summary(results)``; a user error (a
    :class:`~pointmap.errors.UserError`: config, data, checkpoint, flags, a diverged run) is ``error: ...``
    on one line and exit 2, with its traceback first under ``--debug`` (``debug``: None reads it from
    ``argv``, default sys.argv); anything else is a bug and raises with its traceback. The command runs in a
    process scope (:class:`~pointmap.engine.ProcessScope`): every setting a run changes is given back, and
    SIGINT/SIGTERM stop a run or driver at its next check point (elsewhere at once); then the line saying
    how to continue and exit 130 (SIGINT) or 143 (SIGTERM), as a shell reports a process the signal ended."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv) if debug is None else debug
    # a config's old spellings are the user's to fix: show pointmap's deprecation warnings (Python hides them)
    warnings.filterwarnings("default", category=DeprecationWarning, module=r"pointmap(\.|$)")
    try:
        with ProcessScope(defer_stop=False), user_errors_exit(debug):
            results = run()
            if is_main_process():
                text = summary(results)
                if text:
                    print(text)
    except RunInterrupted as e:
        if is_main_process():
            print(str(e), file=sys.stderr)
        sys.exit(exit_code(e))
    except KeyboardInterrupt as e:  # a second signal: stopped at once, without a checkpoint of that point
        print("interrupted", file=sys.stderr)
        sys.exit(exit_code(e))
    finally:
        shutdown()
