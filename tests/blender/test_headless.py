"""scripts/blender_generate.py run as a separate headless Blender process (the bpy wheel's Python).

Two ways in: ``run`` is the plain-Python path (``python scripts/blender_generate.py --open scene.blend -- ...``);
``run_as_blender`` is the closest the bpy wheel gets to ``blender -b scene.blend -P scripts/blender_generate.py
-- ...``: the .blend is opened first, then the script runs as ``__main__`` with Blender's own command line in
``sys.argv`` (everything before ``--`` is Blender's), which is how Blender runs a ``-P`` script.
"""

import subprocess
import sys

import bpy
from conftest import REPO, free_port, make_job

SCRIPT = REPO / "scripts" / "blender_generate.py"


def run(*args, timeout=180):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def run_as_blender(blend, *args, timeout=300):
    # Blender runs a -P file's text in a fresh __main__ namespace and leaves sys.argv alone (runpy would not:
    # it rewrites sys.argv[0]).
    code = ("import sys, bpy\n"
            "blend, script, ours = sys.argv[1], sys.argv[2], sys.argv[3:]\n"
            "bpy.ops.wm.open_mainfile(filepath=blend)\n"
            "sys.argv = ['blender', '-b', blend, '-P', script, '--', *ours]\n"
            "source = open(script, encoding='utf-8').read()\n"
            "exec(compile(source, script, 'exec'), {'__name__': '__main__', '__file__': script})\n")
    return subprocess.run([sys.executable, "-c", code, str(blend), str(SCRIPT), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


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


def test_blender_p_orbit_whose_mesh_fails_imports_the_rig_without_a_mesh_warns_and_exits_0(live_server, tmp_path,
                                                                                           empty_scene):
    blend = scene_blend(tmp_path / "scene.blend")
    out = tmp_path / "out.blend"
    result = run_as_blender(blend, "--object", "Cube", "--prompt", "a cube", "--steps", 1, "--width", 32,
                            "--height", 32, "--num-frames", 9, "--mesh-resolution", 32, "--server", live_server.url,
                            "--download-dir", tmp_path / "dl", "--save", out)
    assert result.returncode == 0, result.stderr
    assert "blender_generate: warning: mesh failed (" in result.stderr and "imported Droplet" in result.stdout
    bpy.ops.wm.open_mainfile(filepath=str(out))
    coll = next(c for c in bpy.data.collections if c.name.startswith("Droplet ") and c.get("droplet_job"))
    assert len([o for o in coll.all_objects if " Camera " in o.name]) == 9
    assert not any(o.name.endswith(" Mesh") for o in coll.all_objects)
    assert "Cube" in bpy.data.objects


def test_blender_p_exits_1_with_the_reason_when_the_job_fails(live_server, tmp_path, empty_scene):
    blank = tmp_path / "blank"
    blank.mkdir()
    for k in range(8):  # an orbit of nothing: reconstruct mode, where the mesh is the whole job, fails
        bpy.data.images.new(f"blank{k}", 32, 32).save(filepath=str(blank / f"{k:04d}.png"))
    blend = scene_blend(tmp_path / "scene.blend")
    result = run_as_blender(blend, "--frames", blank, "--server", live_server.url, "--download-dir", tmp_path / "dl",
                            "--save", tmp_path / "out.blend")
    assert result.returncode == 1, result.stderr
    assert "failed" in result.stderr and "foreground" in result.stderr and not (tmp_path / "out.blend").exists()


def test_blender_p_exits_2_for_bad_arguments(tmp_path, empty_scene):
    blend = scene_blend(tmp_path / "scene.blend")
    missing = run_as_blender(blend, "--object", "Nope", "--prompt", "x", "--save", tmp_path / "out.blend")
    assert missing.returncode == 2 and "no object named 'Nope'" in missing.stderr
    unparsable = run_as_blender(blend, "--object", "Cube", "--steps", "many", "--save", tmp_path / "out.blend")
    assert unparsable.returncode == 2 and "--steps: invalid int value" in unparsable.stderr
    bad_value = run_as_blender(blend, "--object", "Cube", "--prompt", "x", "--width", 100, "--server",
                               "127.0.0.1:1", "--save", tmp_path / "out.blend")
    assert bad_value.returncode == 2 and "width" in bad_value.stderr
