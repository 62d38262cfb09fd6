"""Render the README's picture of an imported job (docs/blender-import.png) with Workbench.

    .venv-blender/bin/python scripts/render_blender_docs.py [--out docs/blender-import.png]

A real round trip: Blender renders an orbit of a box with a ball, a live ``droplet3d serve`` (tiny
checkpoint) reconstructs it in reconstruct mode, and the add-on's API imports the result onto a
source cube. Camera frusta are drawn as wire meshes for the picture only (cameras do not render).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench_blender import REPO, make_job, start_server


def frustum(name: str, cam, coll):
    """Lines from a camera to its view at the rig centre's depth, as a thin curve (cameras do not render)."""
    import bpy

    corners = cam.data.view_frame(scene=bpy.context.scene)  # camera space, on a plane at some z < 0
    depth = cam.matrix_basis.to_translation().length  # rig space: distance to the orbit centre
    points = [cam.matrix_world @ (v * depth / abs(corners[0].z)) for v in corners]
    apex = cam.matrix_world.to_translation()
    curve = bpy.data.curves.new(name, "CURVE")
    curve.dimensions, curve.bevel_depth = "3D", 0.006
    for line in ([apex, points[0]], [apex, points[1]], [apex, points[2]], [apex, points[3]], [*points, points[0]]):
        spline = curve.splines.new("POLY")
        spline.points.add(len(line) - 1)
        for p, v in zip(spline.points, line, strict=True):
            p.co = (*v, 1.0)
    obj = bpy.data.objects.new(name, curve)
    coll.objects.link(obj)
    return obj


def render(path: Path) -> None:
    import bpy

    bpy.context.scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)


def side_by_side(left: Path, right: Path, out: Path) -> None:
    import bpy
    import numpy as np

    images = [bpy.data.images.load(str(p)) for p in (left, right)]
    arrays = []
    for image in images:
        pixels = np.empty(image.size[0] * image.size[1] * 4, dtype=np.float32)
        image.pixels.foreach_get(pixels)
        arrays.append(pixels.reshape(image.size[1], image.size[0], 4))
    joined = np.concatenate(arrays, axis=1)
    result = bpy.data.images.new("Doc", joined.shape[1], joined.shape[0], alpha=True)
    result.pixels.foreach_set(joined.ravel())
    result.filepath_raw, result.file_format = str(out), "PNG"
    result.save()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "blender-import.png")
    args = parser.parse_args()
    import bpy
    from mathutils import Vector

    import droplet_blender as droplet

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        orbit = make_job(tmp / "orbit", 24, 128, 0, rendered=True)
        proc, url = start_server(tmp)
        try:
            bpy.ops.wm.read_homefile(use_empty=True)
            scene = bpy.context.scene
            bpy.ops.mesh.primitive_plane_add(size=12.0, location=(1.0, 1.0, -0.01))
            bpy.ops.mesh.primitive_cube_add(size=1.0, location=(1.0, 1.0, 0.5))
            source = bpy.context.active_object
            source.name = "Source"
            job = droplet.submit(mode="reconstruct", frames=orbit / "frames", server=url, download_dir=tmp / "dl",
                                 orbit={"elevation": 20.0, "fov": 45.0}, mesh={"resolution": 64},
                                 source={"centre": [1.0, 1.0, 0.5], "size": 1.0})
            job = droplet.wait(job, timeout=300)
            coll = droplet.import_job(job)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        bpy.context.view_layer.update()
        rig = next(o for o in coll.all_objects if o.name.endswith(" Rig"))
        mesh = next(o for o in coll.all_objects if o.name.endswith(" Mesh"))
        planes = sorted((o for o in coll.all_objects if " Plane " in o.name), key=lambda o: o.name)
        wires = bpy.data.collections.new("Frusta")
        scene.collection.children.link(wires)
        orange = bpy.data.materials.new("Frustum")
        orange.diffuse_color = (1.0, 0.45, 0.05, 1.0)
        cams = sorted((o for o in coll.all_objects if " Camera " in o.name), key=lambda o: o.name)
        for cam in cams[::2]:
            frustum(f"Frustum {cam.name}", cam, wires).data.materials.append(orange)
        source.hide_render = True
        view = bpy.data.objects.new("Doc View", bpy.data.cameras.new("Doc View"))
        scene.collection.objects.link(view)
        view.location = rig.matrix_world.to_translation() + Vector((3.6, -4.4, 3.3))
        view.rotation_euler = (rig.matrix_world.to_translation() - view.location).to_track_quat("-Z", "Y").to_euler()
        view.data.lens = 40
        scene.camera = view
        scene.render.engine = "BLENDER_WORKBENCH"
        shading = scene.display.shading
        shading.light, shading.color_type = "STUDIO", "TEXTURE"
        scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 640, 540, 100
        scene.render.image_settings.file_format = "PNG"
        # Left: the rig, every 6th frame's plane shown at once (the turntable shows one per frame), mesh hidden.
        for k, plane in enumerate(planes):
            plane.animation_data_clear()
            plane.hide_render = k % 6 != 0
        mesh.hide_render = True
        render(tmp / "left.png")
        # Right: the reconstructed mesh, standing on the source where the artist put it.
        for plane in planes:
            plane.hide_render = True
        wires.hide_render, mesh.hide_render = True, False
        render(tmp / "right.png")
        side_by_side(tmp / "left.png", tmp / "right.png", args.out.resolve())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
