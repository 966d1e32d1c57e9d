"""What the tools share: the common flags, loading the config, one-line errors, the final summary."""
import argparse
import os
import sys
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    import pointmap  # noqa: F401
except ImportError:  # a checkout used without `pip install -e .`
    sys.path.insert(0, REPO)

from pointmap.config import Config, load_config  # noqa: E402
from pointmap.engine import ProcessScope, RunInterrupted, shutdown  # noqa: E402
from pointmap.engine.scope import exit_code  # noqa: E402
from pointmap.errors import UserError, add_debug_flag, user_errors_exit  # noqa: E402
from pointmap.engine.distributed import is_main_process  # noqa: E402
from pointmap.experiments import evaluate_checkpoint, format_results, run_finetune  # noqa: E402
from pointmap.models import absolute_spec  # noqa: E402


CKPT_HELP = ("weights to start from: a pointmap checkpoint, a peer's file (Point-MAE, PointMamba, MAP 3D, Mamba3D), "
             "a folder written by tools/export.py, or a published entry such as pointmae.scan_hardest, downloaded "
             "once into $POINTMAP_HOME (python -c 'import pointmap; print(pointmap.list_pretrained())')")


def cfg_path(name: str) -> str:
    return os.path.join(REPO, "cfgs", name)


def build_parser(description: str, default_cfg: str, seeds: bool = True, probe: bool = True,
                 evaluate: bool = False, downstream: bool = True) -> argparse.ArgumentParser:
    """The common flags; ``downstream=False`` (pretraining) leaves out the ones only a downstream task reads
    (--protocol, --linear-probe)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--cfg", default=default_cfg,
                   help=f"config file (default: {os.path.relpath(default_cfg, REPO) if default_cfg else 'see below'})")
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
    """What a finetuning tool does with its parsed flags: train (one run or one per seed), or ``--eval``."""
    if args.eval:
        if args.seeds or args.resume:
            raise UserError("--eval scores one checkpoint: drop --seeds / --resume")
        return evaluate_checkpoint(cfg, args.ckpt, device=args.device)
    return run_finetune(cfg, seeds=args.seeds, device=args.device, resume=args.resume, force=args.force)


def main(run, summary=format_results, debug=None) -> None:
    """Call ``run()`` (which returns the results); print ``summary(results)``; a user error (a
    :class:`~pointmap.errors.UserError`: config, data, checkpoint, flags, a diverged run) is ``error: ...``
    on one line and exit 2, with its traceback first under ``--debug`` (``debug``: None reads it from
    sys.argv); anything else is a bug and raises with its traceback. The tool runs in a process scope
    (:class:`~pointmap.engine.ProcessScope`): every setting a run changes is given back, and SIGINT/SIGTERM
    stop a run or driver at its next check point (elsewhere at once); then the line saying how to continue
    and exit 130 (SIGINT) or 143 (SIGTERM), as a shell reports a process the signal ended."""
    debug = "--debug" in sys.argv[1:] if debug is None else debug
    # a config's old spellings are the user's to fix: show pointmap's deprecation warnings (Python hides them)
    warnings.filterwarnings("default", category=DeprecationWarning, module=r"pointmap(\.|$)")
    try:
        with ProcessScope(defer_stop=False), user_errors_exit(debug):
            results = run()
            if is_main_process():
                print(summary(results))
    except RunInterrupted as e:
        if is_main_process():
            print(str(e), file=sys.stderr)
        sys.exit(exit_code(e))
    except KeyboardInterrupt as e:  # a second signal: stopped at once, without a checkpoint of that point
        print("interrupted", file=sys.stderr)
        sys.exit(exit_code(e))
    finally:
        shutdown()
