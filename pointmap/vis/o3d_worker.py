"""The Open3D offscreen renderer, run as a child process by :mod:`pointmap.vis.render`.

``python -m pointmap.vis.o3d_worker PANELS.npz TILES.npy``: reads the panels (``points{i}``,
``colors{i}``) and a json ``meta`` (tile size, point size, background, camera), writes the rendered
tiles as one (P, h, w, 3) uint8 array. Needs only numpy and open3d; an exit status other than 0 (or an
abort inside Filament) tells the parent to fall back to matplotlib.
"""
import json
import sys

import numpy as np


def render(panels_file: str, tiles_file: str) -> None:
    import open3d as o3d
    from open3d.visualization import rendering

    data = np.load(panels_file)
    meta = json.loads(str(data["meta"]))
    w, h, cam = int(meta["width"]), int(meta["height"]), meta["camera"]
    renderer = rendering.OffscreenRenderer(w, h)
    scene = renderer.scene
    scene.set_background([*meta["background"], 1.0])
    scene.view.set_post_processing(False)  # no tone mapping: pixels keep the exact role colours
    material = rendering.MaterialRecord()
    material.shader = "defaultUnlit"
    material.point_size = float(meta["point_size"])
    tiles = []
    for i in range(int(meta["panels"])):
        scene.clear_geometry()
        points = data[f"points{i}"].astype(np.float64)
        if len(points):
            cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
            cloud.colors = o3d.utility.Vector3dVector(data[f"colors{i}"].astype(np.float64))
            scene.add_geometry(f"panel{i}", cloud, material)
        renderer.setup_camera(float(cam["fov"]), cam["center"], cam["eye"], cam["up"])
        tiles.append(np.asarray(renderer.render_to_image())[..., :3].copy())
    scene.clear_geometry()  # Filament aborts at exit if a material is still in use
    del scene, renderer
    np.save(tiles_file, np.stack(tiles).astype(np.uint8))


if __name__ == "__main__":
    render(sys.argv[1], sys.argv[2])
