"""Render the README's pictures: an imported job (docs/blender-import.png, Workbench) and the panel
while a job runs (docs/blender-panel.png).

    .venv-blender/bin/python scripts/render_blender_docs.py [--out docs/blender-import.png]

A real round trip: Blender renders an orbit of a painted vase (``render_orbit.py``), a live ``droplet3d
serve`` (tiny checkpoint) reconstructs it in reconstruct mode, and the add-on's API imports the result onto a
source cube. Camera frusta are drawn as wire meshes for the picture only (cameras do not render).

Background Blender has no UI and no GPU drawing, so the panel cannot be screenshot: its picture is
drawn with PIL (under the server's venv) from the calls that the panel's real ``draw`` code makes
while an orbit job is denoising on the same server, recorded by tests/blender/layout_recorder.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

from bench_blender import REPO, SERVER_BIN, start_server

ORBIT = {"elevation": 20.0, "fov": 45.0, "direction": "ccw", "closed": False}  # as rendered


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


def orbit_frames(out: Path, frames: int = 24, size: int = 160) -> Path:
    """A rendered orbit of the painted vase, cut out (alpha, as the add-on's own renders are), from ``render_orbit.py``
    under the server's venv (cached)."""
    code = (f"import sys; sys.path.insert(0, {str(REPO / 'scripts')!r}); from render_orbit import render; "
            "from droplet3d.orbit import Orbit; "
            f"print(render('vase_textured', Orbit(num_frames={frames}, elevation_deg={ORBIT['elevation']}, "
            f"fov_deg={ORBIT['fov']}, radius=2.5), size={size}, transparent=True))")
    folder = subprocess.run([str(SERVER_BIN / "python"), "-c", code], check=True, capture_output=True, text=True,
                            timeout=1800).stdout.strip().splitlines()[-1]
    out.mkdir(parents=True)
    for frame in sorted((Path(folder) / "frames").iterdir()):
        (out / frame.name).write_bytes(frame.read_bytes())
    return out


def record_panel(url: str, image: Path) -> list[dict]:
    """The panels' draw calls, with values, while a real orbit job is denoising."""
    import bpy

    import droplet_blender
    from droplet_blender import runtime

    sys.path.insert(0, str(REPO / "tests" / "blender"))
    from layout_recorder import Layout

    class ValueLayout(Layout):
        def prop(self, data, name, *, text=None, **kw):
            super().prop(data, name, text=text, **kw)
            rna = data.bl_rna.properties[name]
            value = getattr(data, name)
            if rna.type == "ENUM":
                value = rna.enum_items[value].name if isinstance(value, str) else value
            elif rna.type == "POINTER":
                value = value.name if value else ""
            elif rna.type == "FLOAT" and not getattr(rna, "is_array", False):
                value = f"{value:.2f}"
            elif rna.type == "FLOAT":
                value = "colour"
            self.log[-1] = ("prop", rna.name if text is None else text, value, rna.type)

        def operator(self, idname, *, text=None, **kw):
            props = super().operator(idname, text=text, **kw)
            module, name = idname.split(".")
            label = getattr(getattr(bpy.ops, module), name).get_rna_type().name
            self.log[-1] = ("operator", idname, f"[{label}]" if text == "" else text or label)
            return props

    droplet_blender.register()
    os.environ["DROPLET_URL"] = url
    props = bpy.context.scene.droplet
    props.source, props.filepath, props.steps, props.frames = "FILE", str(image), 400, 9
    props.prompt = ("A weathered bronze teapot with a curved spout, a domed lid topped by a small knob, "
                    "and a looping handle, standing on a plain white background.")
    props.custom_size, props.width, props.height, props.reconstruct = True, 64, 64, False
    bpy.ops.droplet.check_server()
    bpy.ops.droplet.generate()
    runtime.wait_until(lambda: bpy.context.window_manager.droplet_jobs[0].step >= 3, timeout=120)
    entries = []
    for name in ("DROPLET_PT_main", "DROPLET_PT_input", "DROPLET_PT_prompt", "DROPLET_PT_settings", "DROPLET_PT_jobs"):
        panel = getattr(bpy.types, name)
        layout = ValueLayout()
        panel.draw(SimpleNamespace(layout=layout), bpy.context)
        entries.append({"panel": panel.bl_label, "calls": [list(map(str, call)) for call in layout.log]})
    runtime.manager.cancel(bpy.context.window_manager.droplet_jobs[0].key)
    runtime.wait_until(lambda: not runtime.manager.busy(), timeout=60)
    droplet_blender.unregister()
    return entries


def draw_panel_png(entries: list[dict], out: Path) -> None:
    """A sidebar-like drawing of recorded draw calls (runs under the server's venv, which has PIL)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=13)
    width, row = 420, 24
    rows = sum(1 + sum(c[0] in ("label", "prop", "operator", "progress") for c in e["calls"]) for e in entries)
    image = Image.new("RGB", (width, rows * row + 16), (48, 48, 48))
    draw = ImageDraw.Draw(image)
    y = 8
    for entry in entries:
        draw.rectangle((4, y, width - 4, y + row - 4), fill=(61, 61, 61))
        draw.text((12, y + 4), entry["panel"], font=font, fill=(240, 240, 240))
        y += row
        for call in entry["calls"]:
            kind = call[0]
            if kind == "label" and call[1]:
                draw.text((16, y + 4), call[1], font=font, fill=(200, 200, 200))
            elif kind == "prop":
                label, value, rtype = call[1], call[2], call[3]
                if rtype == "BOOLEAN":
                    box = (16, y + 5, 28, y + 17)
                    draw.rectangle(box, fill=(71, 114, 179) if value == "True" else (84, 84, 84))
                    draw.text((34, y + 4), label, font=font, fill=(220, 220, 220))
                else:
                    draw.rounded_rectangle((16, y + 2, width - 16, y + row - 3), 4, fill=(84, 84, 84))
                    text = f"{label}: {value}" if label else value
                    draw.text((22, y + 4), text[:58], font=font, fill=(230, 230, 230))
            elif kind == "operator":
                draw.rounded_rectangle((16, y + 2, width - 16, y + row - 3), 4, fill=(88, 88, 88))
                draw.text((22, y + 4), call[2], font=font, fill=(240, 240, 240))
            elif kind == "progress":
                fraction = float(call[1])
                draw.rounded_rectangle((16, y + 2, width - 16, y + row - 3), 4, fill=(84, 84, 84))
                draw.rounded_rectangle((16, y + 2, 16 + (width - 32) * fraction, y + row - 3), 4, fill=(71, 114, 179))
                draw.text((22, y + 4), call[2], font=font, fill=(255, 255, 255))
            else:
                continue
            y += row
    image.save(out)


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
        frames = orbit_frames(tmp / "orbit" / "frames")
        proc, url = start_server(tmp)
        try:
            bpy.ops.wm.read_homefile(use_empty=True)
            scene = bpy.context.scene
            bpy.ops.mesh.primitive_plane_add(size=12.0, location=(1.0, 1.0, -0.01))
            bpy.ops.mesh.primitive_cube_add(size=1.0, location=(1.0, 1.0, 0.5))
            source = bpy.context.active_object
            source.name = "Source"
            job = droplet.submit(mode="reconstruct", frames=frames, server=url, download_dir=tmp / "dl",
                                 orbit=ORBIT, mesh={"resolution": 96},
                                 source={"centre": [1.0, 1.0, 0.5], "size": 1.0})
            job = droplet.wait(job, timeout=300)
            coll = droplet.import_job(job)
            panel = record_panel(url, frames / "0000.png")
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
        for cam in cams[::4]:
            frustum(f"Frustum {cam.name}", cam, wires).data.materials.append(orange)
        source.hide_render = True
        view = bpy.data.objects.new("Doc View", bpy.data.cameras.new("Doc View"))
        scene.collection.objects.link(view)
        view.location = rig.matrix_world.to_translation() + Vector((3.2, -4.0, 2.6))
        view.rotation_euler = (rig.matrix_world.to_translation() - view.location).to_track_quat("-Z", "Y").to_euler()
        view.data.lens = 40
        scene.camera = view
        scene.render.engine = "BLENDER_WORKBENCH"
        shading = scene.display.shading
        shading.light, shading.color_type = "STUDIO", "TEXTURE"
        scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 640, 540, 100
        scene.render.image_settings.file_format = "PNG"
        scene.world = scene.world or bpy.data.worlds.new("World")
        scene.world.color = (0.85, 0.87, 0.9)  # Workbench's background: light, so that the frames stand out
        # Left: the rig, every 6th frame's plane shown at once (the turntable shows one per frame), mesh hidden.
        for k, plane in enumerate(planes):
            plane.animation_data_clear()
            plane.hide_render = k % 6 != 0
        mesh.hide_render = True
        render(tmp / "left.png")
        # Right: the reconstructed mesh, standing on the source where the artist put it, behind frame 0's plane.
        for k, plane in enumerate(planes):
            plane.hide_render = k != 0
        wires.hide_render, mesh.hide_render = True, False
        render(tmp / "right.png")
        side_by_side(tmp / "left.png", tmp / "right.png", args.out.resolve())
        (tmp / "panel.json").write_text(json.dumps(panel))
        subprocess.run([str(REPO / ".venv" / "bin" / "python"), __file__, "--draw-panel", str(tmp / "panel.json"),
                        str(args.out.with_name("blender-panel.png"))], check=True, timeout=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--draw-panel"]:  # the PIL half, under the server's venv
        draw_panel_png(json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3]))
        sys.exit(0)
    sys.exit(main())
