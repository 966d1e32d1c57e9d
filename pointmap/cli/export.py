"""Export a pointmap run for sharing, ready for the Hugging Face Hub: model.safetensors, config.json (the card:
preset, arguments, classes, input transforms, metrics, protocol, licence, versions and commits), README.md (the
Hub's model card) and config.yaml, in one folder; --push-to-hub uploads it; --onnx adds model.onnx.

    pointmap export --ckpt experiments/finetune_demo/default --out exports/finetune_demo
    python -c "import pointmap; m = pointmap.create_model('hybridnet_s', pretrained='exports/finetune_demo')"
    pointmap export --ckpt experiments/finetune_demo/default --out exports/finetune_demo --push-to-hub me/demo
    pointmap export --ckpt experiments/finetune_demo/default --out exports/finetune_demo --onnx
    python -c "import pointmap; m = pointmap.create_model('hybridnet_s', pretrained='hf-hub:me/demo')"

--ckpt takes a run folder (its ckpt-best.pth, else ckpt-last.pth) or one of its ckpt-*.pth files. The folder
loads with create_model(<the card's preset>, pretrained=DIR) and with --ckpt DIR in every command; once on the
Hub, with hf-hub:owner/repo[@revision] instead of DIR. The upload uses huggingface_hub's login (hf auth login
or HF_TOKEN) and HF_ENDPOINT.

--onnx adds model.onnx: the whole classifier, grouping included, input `points` (B, N, 3) float32 with B dynamic,
output `logits`; onnxruntime's logits are checked against PyTorch's before the folder is kept (needs
pip install 'pointmap[onnx]').
"""
import argparse

from ..engine import export_run, push_to_hub
from ..engine.export import LICENCE
from ..errors import add_debug_flag, user_errors_exit


def main(argv=None, prog=None) -> None:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="a pointmap run folder or one of its ckpt-*.pth")
    p.add_argument("--out", required=True, help="the folder to write (must be empty or absent)")
    p.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    p.add_argument("--licence", default=LICENCE,
                   help=f"the weights' licence, as the Hub's metadata names it (default: {LICENCE}, pointmap's)")
    p.add_argument("--push-to-hub", default=None, metavar="REPO", help="then upload the folder to the Hub model "
                                                                       "repository REPO (owner/name; created if absent)")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (a classification run), checked with "
                                                       "onnxruntime against PyTorch")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
    add_debug_flag(p)
    args = p.parse_args(argv)
    with user_errors_exit(args.debug):
        card = export_run(args.ckpt, args.out, overwrite=args.overwrite, licence=args.licence, onnx=args.onnx)
        head = ", ".join(f"{k}={v}" for k, v in card.head.items()) or "pretrainer"
        test = " ".join(f"{split.replace('_', ' ')} {k} {v:.2f}" for split in ("test", "test_vote")
                        for k, v in card.metrics.get(split, {}).items() if k in ("acc", "ins_miou"))
        onnx = card.provenance.get("onnx")
        checked = f" | model.onnx: max |onnx - torch| {onnx['max_abs_diff']:.1e}" if onnx else ""
        print(f"{card.preset} ({head}) | {test or 'no test metrics'} | protocol {card.protocol or '-'}{checked} | "
              f"{args.out}")
        if args.push_to_hub:
            url = push_to_hub(args.out, args.push_to_hub, private=args.private)
            print(f"uploaded to hf-hub:{args.push_to_hub} | {url}")
