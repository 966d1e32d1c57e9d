"""Classify (or part-segment) your own point clouds and meshes with a trained model: one line per file.

    pointmap predict --model exports/finetune_demo scans/ chair.ply --topk 3 --out predictions.json
    pointmap predict --model pointmae.modelnet40_1k bunny.obj --vote 10
    pointmap predict --model exports/partseg_demo plane.obj --category 0 --out-dir parts/

Files: .ply .pcd .xyz .pts .txt .npy .npz .h5 .las, meshes (.obj .off .stl .glb, surface-sampled); a folder
gives every such file under it. Each goes through the model card's test-time transforms. A classifier prints
``FILE | class prob | ...`` (most probable first); a part-segmentation model prints the point count per part
and, with --out-dir, writes each cloud as a PLY coloured by part. A file that cannot be read is named in one
``error:`` line on stderr and the others are still done; the exit code is then 2 (0 when every file was read).
"""
import csv
import json
import os
import sys

import numpy as np

from ..atomic import atomic_write
from ..engine.inference import is_segmenter, load_model, predict, segment
from ..errors import UserError, user_errors_exit
from .inference import Errors, inputs, parser, progress


def _write(path: str, preds, failed, model_name: str, topk: int) -> None:
    if path.lower().endswith(".csv"):
        def rows(f):
            w = csv.writer(f)
            w.writerow(["input", "error"] + [f"{c}_{r}" for r in range(1, topk + 1) for c in ("class", "label", "prob")])
            for p in preds:
                w.writerow([p["input"], ""] + [v for c, lab, pr in zip(p["classes"], p["labels"], p["probs"])
                                               for v in (c, lab, f"{pr:.6f}")])
            for name, message in failed.items():
                w.writerow([name, message])
        atomic_write(path, rows, binary=False)
    elif path.lower().endswith(".json"):
        doc = {"model": model_name, "predictions": preds,
               "errors": [{"input": n, "error": m} for n, m in failed.items()]}
        atomic_write(path, lambda f: json.dump(doc, f, indent=2), binary=False)
    else:
        raise UserError(f"--out {path}: write a .json or a .csv file")


def _write_parts(out_dir: str, result, taken: set) -> str:
    from ..vis.panels import patch_palette
    from ..vis.render import write_ply

    stem = os.path.splitext(os.path.basename(result["input"]))[0]
    name, i = stem, 1
    while name in taken:
        name, i = f"{stem}-{i}", i + 1
    taken.add(name)
    path = os.path.join(out_dir, name + ".ply")
    colors = patch_palette(int(result["parts"].max()) + 1)[result["parts"]]
    tmp = os.path.join(out_dir, f".tmp-{name}.ply")
    write_ply(result["points"], colors, tmp)
    os.replace(tmp, path)
    return path


def main(argv=None, prog=None) -> None:
    p = parser(__doc__.splitlines()[0], __doc__.split("\n\n", 1)[1], prog=prog)
    p.add_argument("--topk", type=int, default=5, help="classes per file, most probable first (default 5)")
    p.add_argument("--vote", type=int, default=1, help="average over this many randomly scaled and shifted views")
    p.add_argument("--out", default=None, help="also write the predictions to FILE.json or FILE.csv")
    p.add_argument("--category", default="0",
                   help="part segmentation: the shape category of every file (a name of the card or an index)")
    p.add_argument("--out-dir", default=None, help="part segmentation: write each cloud as a PLY coloured by part")
    args = p.parse_args(argv)
    errors = Errors()
    with user_errors_exit(args.debug):
        if args.out and not args.out.lower().endswith((".json", ".csv")):
            raise UserError(f"--out {args.out}: write a .json or a .csv file")
        if args.topk < 1 or args.vote < 1 or args.batch_size < 1:
            raise UserError("--topk, --vote and --batch-size must be at least 1")
        model = load_model(args.model, device=args.device)
        name = model.pretrained_cfg["name"]
        files = inputs(args.paths)
        if is_segmenter(model):
            if args.out_dir:
                os.makedirs(args.out_dir, exist_ok=True)
            taken: set = set()
            for r in segment(model, files, category=args.category, batch_size=args.batch_size,
                                      seed=args.seed, on_error=errors, progress=progress()):
                counts = {int(k): int(v) for k, v in zip(*np.unique(r["parts"], return_counts=True))}
                where = f" | {_write_parts(args.out_dir, r, taken)}" if args.out_dir else ""
                parts = ", ".join(f"part {k}: {v}" for k, v in counts.items())
                print(f"{r['input']} | {len(r['parts'])} points | {parts}{where}")
        else:
            preds = predict(model, files, topk=args.topk, vote=args.vote, batch_size=args.batch_size,
                                     seed=args.seed, on_error=errors, progress=progress())
            for r in preds:
                print(f"{r['input']} | " + " | ".join(f"{c} {pr:.3f}" for c, pr in zip(r["classes"], r["probs"])))
            if args.out:
                _write(args.out, preds, errors.failed, name, min(args.topk, model.num_classes))
    sys.exit(errors.code)

