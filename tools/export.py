"""Export a pointmap run for sharing: model.safetensors, card.json (preset, arguments, classes, input transforms,
metrics, protocol, versions and commits) and config.yaml, in one folder.

    python tools/export.py --ckpt experiments/finetune_demo/default --out exports/finetune_demo [--onnx]
    python -c "import pointmap; m = pointmap.create_model('hybridnet_s', pretrained='exports/finetune_demo')"

--onnx adds model.onnx: the whole classifier, grouping included, input `points` (B, N, 3) float32 with B dynamic,
output `logits`; onnxruntime's logits are checked against PyTorch's before the folder is kept (needs
pip install 'pointmap[onnx]').

--ckpt takes a run folder (its ckpt-best.pth, else ckpt-last.pth) or one of its ckpt-*.pth files. The folder
loads with create_model(<the card's preset>, pretrained=DIR) and with --ckpt DIR in every tool.
"""
import argparse

from _common import REPO  # noqa: F401  (puts the checkout on sys.path when pointmap is not installed)

from pointmap.engine import export_run
from pointmap.errors import add_debug_flag, user_errors_exit


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="a pointmap run folder or one of its ckpt-*.pth")
    p.add_argument("--out", required=True, help="the folder to write (must be empty or absent)")
    p.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (a classification run), checked with "
                                                       "onnxruntime against PyTorch")
    add_debug_flag(p)
    args = p.parse_args(argv)
    with user_errors_exit(args.debug):
        card = export_run(args.ckpt, args.out, overwrite=args.overwrite, onnx=args.onnx)
        head = ", ".join(f"{k}={v}" for k, v in card.head.items()) or "pretrainer"
        test = " ".join(f"{split.replace('_', ' ')} {k} {v:.2f}" for split in ("test", "test_vote")
                        for k, v in card.metrics.get(split, {}).items() if k in ("acc", "ins_miou"))
        onnx = card.provenance.get("onnx")
        checked = f" | model.onnx: max |onnx - torch| {onnx['max_abs_diff']:.1e}" if onnx else ""
        print(f"{card.preset} ({head}) | {test or 'no test metrics'} | protocol {card.protocol or '-'}{checked} | {args.out}")


if __name__ == "__main__":
    main()
