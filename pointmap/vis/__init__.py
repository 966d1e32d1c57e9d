"""Seeing what a pretrainer learned: reconstruction pictures of point clouds (Open3D offscreen, matplotlib
as the fallback), PLY files of each panel, the 2D adapter's image grid, and the ``vis`` training hook.

    from pointmap.vis import reconstruction_figure, load_input
    fig = reconstruction_figure(model, load_input("bunny.obj", 1024))
    fig.save("bunny.png", ply_dir="bunny_ply")

open3d is imported only when a picture is rendered; ``import pointmap.vis`` works without it.
"""
from .figure import Reconstruction, reconstruction_figure
from .hook import VisHook, fixed_sample
from .images import image_grid, image_reconstructions, unpatchify
from .inputs import INPUT_EXTENSIONS, dataset_images, dataset_item, load_input, prepare_points, read_points_file
from .panels import ROLE_COLORS, Panel, patch_palette, reconstruction_panels, run_pretrainer, sample_chamfer
from .render import Camera, open3d_problem, read_ply, render_panels, save_png, show_panels, write_ply

__all__ = [
    "Reconstruction", "reconstruction_figure", "VisHook", "fixed_sample", "image_grid", "image_reconstructions",
    "unpatchify", "INPUT_EXTENSIONS", "dataset_images", "dataset_item", "load_input", "prepare_points",
    "read_points_file",
    "ROLE_COLORS", "Panel", "patch_palette", "reconstruction_panels", "run_pretrainer", "sample_chamfer", "Camera",
    "open3d_problem", "read_ply", "render_panels", "save_png", "show_panels", "write_ply",
]
