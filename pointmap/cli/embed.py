"""Features of your own point clouds and meshes: one row per readable file, the file order beside it.

    pointmap embed --model exports/finetune_demo scans/ --out feats.npy     # feats.npy + feats.txt

The features are the model's pooled features (a classifier's ``forward_head(tokens, pre_logits=True)``, an
encoder's [max; mean] of its tokens), float32 (files, D), in the order of feats.txt (one path per line).
Files and folders as pointmap predict takes them; a file that cannot be read is named in one ``error:`` line,
has no row, and makes the exit code 2.
"""
import os
import sys

import numpy as np

from ..atomic import atomic_write
from ..engine.inference import embed, load_model
from ..errors import UserError, user_errors_exit
from .inference import Errors, inputs, parser, progress


def main(argv=None, prog=None) -> None:
    p = parser(__doc__.splitlines()[0], __doc__.split("\n\n", 1)[1], prog=prog)
    p.add_argument("--out", required=True, help="the .npy file to write (the file order goes beside it, .txt)")
    args = p.parse_args(argv)
    errors = Errors()
    with user_errors_exit(args.debug):
        if not args.out.lower().endswith(".npy"):
            raise UserError(f"--out {args.out}: write a .npy file")
        model = load_model(args.model, device=args.device)
        files = inputs(args.paths)
        feats = embed(model, files, batch_size=args.batch_size, seed=args.seed, on_error=errors,
                               progress=progress())
        done = [f for f in files if f not in errors.failed]
        order = os.path.splitext(args.out)[0] + ".txt"
        atomic_write(args.out, lambda f: np.save(f, feats))
        atomic_write(order, lambda f: f.write("".join(f"{n}\n" for n in done)), binary=False)
        print(f"{feats.shape[0]} files x {feats.shape[1]} features | {args.out} | order: {order}"
              + (f" | {len(errors.failed)} failed" if errors.failed else ""))
    sys.exit(errors.code)

