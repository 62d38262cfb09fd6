"""Render a real object into a synthetic job folder's frames, from its transforms.json cameras (Blender's venv).

    .venv-blender/bin/python tests/blender/render_job_frames.py JOB_DIR

The frames that make_job_fixture.py draws are flat discs, which no reconstruction can take for an
object; these are an actual orbit (a turned box with a ball on top, transparent background), so a
reconstruct job on them succeeds the way it would on a generated orbit.
"""

import json
import math
import sys
from pathlib import Path

import bpy
from mathutils import Matrix


def main(job: Path) -> None:
    transforms = json.loads((job / "transforms.json").read_text())
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine, scene.cycles.samples, scene.render.film_transparent = "CYCLES", 4, True
    scene.render.resolution_x, scene.render.resolution_y = transforms["w"], transforms["h"]
    bpy.ops.mesh.primitive_cube_add(size=0.8, rotation=(0.0, 0.0, 0.5))
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.3, location=(0.0, 0.0, 0.5))
    scene.collection.objects.link(bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN")))
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    camera.data.sensor_fit = "AUTO"
    camera.data.angle = 2 * math.atan(max(transforms["w"], transforms["h"]) / 2 / transforms["fl_x"])
    for frame in transforms["frames"]:
        camera.matrix_world = Matrix(frame["transform_matrix"])
        scene.render.filepath = str(job / frame["file_path"])
        bpy.ops.render.render(write_still=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
