"""scripts/blender_generate.py run as a separate headless Blender process (the bpy wheel's Python)."""

import subprocess
import sys

import bpy
from conftest import REPO, free_port, make_job

SCRIPT = REPO / "scripts" / "blender_generate.py"


def run(*args, timeout=180):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def scene_blend(path):
    bpy.ops.wm.read_homefile(use_empty=True)
    cube = bpy.data.objects.new("Cube", bpy.data.meshes.new("Cube"))
    bpy.context.scene.collection.objects.link(cube)
    bpy.context.scene.render.engine = "CYCLES"  # a fast render for the input
    bpy.context.scene.cycles.samples = 1
    bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True)
    return path


def test_headless_reconstruct_imports_and_saves_the_blend(live_server, tmp_path, empty_scene):
    frames = make_job(tmp_path / "orbit", frames=12, size=(64, 64), rendered=True) / "frames"
    blend = scene_blend(tmp_path / "scene.blend")
    out = tmp_path / "out.blend"
    result = run("--open", blend, "--", "--frames", frames, "--elevation", 20, "--fov", 45, "--mesh-resolution", 32,
                 "--server", live_server.url, "--download-dir", tmp_path / "dl", "--save", out)
    assert result.returncode == 0, result.stderr
    assert "imported Droplet" in result.stdout
    bpy.ops.wm.open_mainfile(filepath=str(out))
    coll = next(c for c in bpy.data.collections if c.name.startswith("Droplet ") and c.get("droplet_job"))
    assert len([o for o in coll.all_objects if " Camera " in o.name]) == 12
    assert any(o.type == "MESH" and o.name.endswith(" Mesh") for o in coll.all_objects)
    assert "Cube" in bpy.data.objects  # the opened scene is kept


def test_headless_run_exits_non_zero_with_the_reason_when_the_server_is_down(tmp_path, empty_scene):
    blend = scene_blend(tmp_path / "scene.blend")
    result = run("--open", blend, "--", "--object", "Cube", "--prompt", "a cube", "--server",
                 f"127.0.0.1:{free_port()}", "--download-dir", tmp_path / "dl", "--save", tmp_path / "out.blend")
    assert result.returncode == 1
    assert "connection refused" in result.stderr and not (tmp_path / "out.blend").exists()


def test_headless_run_rejects_a_missing_object_with_exit_2(tmp_path, empty_scene):
    blend = scene_blend(tmp_path / "scene.blend")
    result = run("--open", blend, "--", "--object", "Nope", "--prompt", "x", "--save", tmp_path / "out.blend")
    assert result.returncode == 2 and "no object named 'Nope'" in result.stderr
