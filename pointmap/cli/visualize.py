"""Show what a pretrained model reconstructs: input, visible patches, masked truth, reconstruction.

    pointmap visualize --ckpt experiments/map_demo/default/ckpt-last.pth --dataset synthetic_pretrain \
        --index 3 --out recon.png --ply recon_ply
    pointmap visualize --cfg map_demo --ckpt CKPT --input bunny.obj --out bunny.png --show
    pointmap visualize --ckpt experiments/map_image_demo/default/ckpt-last.pth --out digits.png

--input reads .npy/.txt/.xyz/.pts/.pcd/.ply points or .obj/.off/.stl/.glb/.ply meshes (surface-sampled);
without --input, item --index of --dataset (default: the config's data set) is shown. The Chamfer
distance of the sample is in the picture's caption and printed. Rendering uses Open3D offscreen, or
matplotlib (with a warning saying why) when Open3D cannot render here.
"""
import argparse
import os

from ..config import load_config
from ..errors import UserError, UserFileNotFoundError, add_debug_flag, user_errors_exit
from ..models import list_pretrained, pretrained_card
from ..vis import (dataset_images, dataset_item, image_grid, image_reconstructions, load_input,
                   reconstruction_figure, save_png, show_panels)
from ..vis.model import load_pretrainer
from .common import CFG_HELP


def parse_args(argv=None, prog=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default=None, help=f"pretraining {CFG_HELP} (default: the one saved in the checkpoint "
                                               "or its export; a published entry: its recipe)")
    p.add_argument("--ckpt", required=True, help="a pretraining run's checkpoint (ckpt-last.pth / ckpt-best.pth), its "
                                                "export, a peer's pretraining file, or a published entry such as "
                                                "pointmae.shapenet55 (downloaded once)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input", default=None, help="a point file or a mesh")
    src.add_argument("--dataset", default=None, help="a data set name (default: the config's)")
    p.add_argument("--split", default=None, help="data set split (default: the config's test split, else test)")
    p.add_argument("--index", type=int, default=0, help="item of the data set (default 0)")
    p.add_argument("--out", default=None, help="PNG to write")
    p.add_argument("--ply", default=None, metavar="DIR", help="also write each panel as DIR/<panel>.ply")
    p.add_argument("--show", action="store_true", help="open Open3D's window with the panels")
    p.add_argument("--mask-ratio", type=float, default=None, help="mask ratio (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="seeds the mask (and mesh sampling)")
    p.add_argument("--num-points", type=int, default=None, help="points taken from --input (default: the config's "
                   "data.options.num_points, else 1024)")
    p.add_argument("--size", default="1600x440", help="image size WxH (default 1600x440)")
    p.add_argument("--backend", choices=["auto", "open3d", "matplotlib"], default="auto")
    p.add_argument("--color-by", choices=["role", "patch"], default="role",
                   help="role: one colour per role; patch: one hue per masked patch, matched in truth and prediction")
    p.add_argument("--point-size", type=float, default=4.0, help="dot size in pixels")
    p.add_argument("--num-images", type=int, default=4, help="image models: rows of the grid")
    p.add_argument("--device", default="cpu")
    add_debug_flag(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (with --cfg)")
    args = p.parse_args(argv)
    if not (args.out or args.ply or args.show):
        p.error("nothing to do: pass --out, --ply and/or --show")
    return args


def _size(text: str):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise UserError(f"--size {text!r}: expected WxH, e.g. 1600x440") from e
    return w, h


def run(args: argparse.Namespace) -> str:
    size = _size(args.size)
    if args.input and not os.path.isfile(args.input):
        raise UserFileNotFoundError(f"input file not found: {os.path.abspath(args.input)}")
    if args.cfg is None and args.ckpt in list_pretrained():
        args.cfg = pretrained_card(args.ckpt).config  # a shipped config's name
    cfg = load_config(args.cfg, args.overrides) if args.cfg else None
    model, cfg = load_pretrainer(args.ckpt, cfg, args.device)
    d = cfg.data
    if model.encoder.modality == "image":
        if args.input:
            raise UserError("--input takes point clouds and meshes; an image model shows --dataset items")
        name = args.dataset or d.name
        same = name == d.name
        images, norm = dataset_images(name, d.root, args.split or d.test_split or "test", args.index, args.num_images,
                                      d.options if same else {}, d.test_transforms if same else None,
                                      size=model.encoder.patch_embed.img_size[0])
        image = image_grid(model, images, seed=args.seed, mask_ratio=args.mask_ratio, **(norm or {}))
        mse = image_reconstructions(model, images, seed=args.seed, mask_ratio=args.mask_ratio)[3]  # the picture's
        if args.out:
            save_png(image, args.out)
        return f"{len(images)} images | MSE {mse:.6g} | {args.out or '-'}"
    if args.input:
        n = args.num_points or int(d.options.get("num_points", 1024))
        points, what = load_input(args.input, n, args.seed), args.input
    else:
        name = args.dataset or d.name
        split = args.split or d.test_split or "test"
        same = name == d.name
        item = dataset_item(name, d.root, split, args.index, d.options if same else {},
                            d.test_transforms if same else None)
        points, what = item["points"], f"{name}/{split}[{args.index}]"
    fig = reconstruction_figure(model, points, seed=args.seed, mask_ratio=args.mask_ratio, size=size,
                                backend=args.backend, color_by=args.color_by, point_size=args.point_size,
                                title=os.path.basename(what) if args.input else what)
    fig.save(args.out, args.ply)
    if args.show:
        show_panels(fig.panels, fig.caption)
    return f"{what} | Chamfer L2 {fig.chamfer:.6g} | {args.out or '-'}" + (f" | ply {args.ply}" if args.ply else "")


def main(argv=None, prog=None) -> None:
    args = parse_args(argv, prog)
    with user_errors_exit(args.debug):
        print(run(args))

