"""The extension installed through Blender's installer: registration, preferences, panel states, input capture,
and the operators' error paths that need no server."""

import math
import sys
import zipfile

import bpy
import pytest
from conftest import PKG, free_port, module
from layout_recorder import draw_panels


def test_extension_installs_through_blenders_installer_and_registers(addon):
    assert addon.__name__ == PKG and "extensions/user_default/droplet_blender" in addon.__file__
    assert PKG in bpy.context.preferences.addons
    for name in ("DROPLET_PT_main", "DROPLET_PT_jobs", "DROPLET_UL_jobs"):
        assert hasattr(bpy.types, name)
    for op in ("generate", "cancel", "check_server", "reimport", "open_folder", "preview_input", "refresh_history"):
        assert hasattr(bpy.ops.droplet, op)
    prefs = bpy.context.preferences.addons[PKG].preferences
    assert prefs.bl_rna.properties["token"].subtype == "PASSWORD"
    assert {"server_url", "timeout", "upload_timeout", "download_dir"} <= set(prefs.bl_rna.properties.keys())


def test_package_imports_without_bpy_for_the_pure_modules(tmp_path):
    import subprocess

    from conftest import REPO, SERVER_PY

    code = ("import sys; import droplet_blender.client, droplet_blender.jobs, droplet_blender.geometry, "
            "droplet_blender.params; assert 'bpy' not in sys.modules; print('ok')")
    out = subprocess.run([str(SERVER_PY), "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_built_zip_holds_the_manifest_and_package_only(tmp_path):
    sys.path.insert(0, str(__import__("conftest").REPO / "scripts"))
    import build_extension

    names = zipfile.ZipFile(build_extension.build(tmp_path)).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names and "client.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_panel_draws_in_every_source_and_mode_state(scene):
    props = scene.droplet
    for source in ("CAMERA", "OBJECTS", "IMAGE", "FILE"):
        for mode in ("orbit", "video"):
            for use_text in (False, True):
                props.source, props.mode, props.use_text = source, mode, use_text
                texts = draw_panels().texts()
                assert any("words" in t for t in texts)
    props.source = "OBJECTS"
    assert "Cube" in draw_panels().texts()
    # Orbit › From Capture: the rendered objects' camera; a file has none, so the panel says it is estimated
    props.mode, props.reconstruct, props.orbit_hints = "orbit", True, "CAPTURE"
    assert not any("No capture camera" in t for t in draw_panels().texts())
    props.source = "FILE"
    assert "No capture camera: estimated from the frames" in draw_panels().texts()
    props.source = "OBJECTS"
    scene.camera = None
    props.source = "CAMERA"
    assert "No active camera" in draw_panels().texts()


def test_panel_shows_server_state_errors_and_job_progress(scene):
    wm = bpy.context.window_manager
    runtime = module("runtime")
    jobs = module("jobs")
    wm.droplet_server_ok, wm.droplet_server_status = False, "Cannot reach the Droplet server: connection refused."
    wm.droplet_last_error = "Write a prompt describing the object (or pick a Text block)."
    states = [
        jobs.JobState(key="q", job_id="J-queued", status="queued", queue_position=2),
        jobs.JobState(key="r", job_id="J-run", status="running", stage="denoising", step=3, total=10, progress=0.3,
                      eta_seconds=41.0),
        jobs.JobState(key="f", job_id="J-fail", status="failed", error="CUDA out of memory"),
        jobs.JobState(key="s", job_id="J-ok", status="succeeded", folder="/nonexistent"),
        jobs.JobState(key="c", job_id="J-cancel", status="cancelled"),
        jobs.JobState(key="w", job_id="J-warn", status="succeeded", folder="/nonexistent",
                      warnings="orbit calibration failed; transforms.json holds the nominal orbit"),
    ]
    for state in states:
        runtime.apply_state(wm, state)
    texts = []
    for index in range(len(wm.droplet_jobs)):
        wm.droplet_job_index = index
        texts += draw_panels().texts()
    joined = " ".join(texts)
    assert "connection refused." in joined and "Write a prompt" in joined
    for expected in ("queued · position 2", "denoising 3/10 · 30 % · ETA 41 s", "failed", "succeeded", "cancelled",
                     "CUDA out of memory"):
        assert expected in joined
    # the failure went to the info log too
    assert ("ERROR", "Droplet job J-fail failed: CUDA out of memory") in runtime.reports
    # a job that succeeded with the server's warnings shows them in the panel and the info log
    assert "holds the nominal orbit" in joined
    assert ("WARNING", "Droplet job J-warn: orbit calibration failed; transforms.json holds the nominal orbit") \
        in runtime.reports


def test_online_access_off_is_explained_for_a_remote_server(scene):
    assert not bpy.app.online_access  # background Blender starts offline
    bpy.context.preferences.addons[PKG].preferences.server_url = "gpu.example.org:8765"
    assert any("will not be contacted" in t for t in draw_panels().texts())
    with pytest.raises(RuntimeError, match="online access is off"):  # an ERROR report raises in background mode
        bpy.ops.droplet.generate()
    assert "Allow Online Access" in bpy.context.window_manager.droplet_last_error


def test_bad_url_is_refused_before_anything_is_rendered(scene, tmp_path):
    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.server_url, prefs.download_dir = "ftp://127.0.0.1:1", str(tmp_path)
    with pytest.raises(RuntimeError, match="must start with http"):
        bpy.ops.droplet.generate()
    assert "http://" in bpy.context.window_manager.droplet_last_error
    assert not list(tmp_path.rglob("*.png"))


def test_missing_prompt_names_the_field_and_submits_nothing(scene, tmp_path):
    bpy.context.preferences.addons[PKG].preferences.download_dir = str(tmp_path)
    scene.droplet.prompt = "   "
    with pytest.raises(RuntimeError, match="Write a prompt"):
        bpy.ops.droplet.generate()
    assert "prompt" in bpy.context.window_manager.droplet_last_error
    assert len(bpy.context.window_manager.droplet_jobs) == 0


def test_selected_objects_render_alone_from_an_auto_framed_front_camera(scene, tmp_path):
    capture = module("capture")
    other = bpy.data.objects.new("Other", bpy.data.meshes.new("Other"))
    scene.collection.objects.link(other)
    scene.droplet.source, scene.droplet.view = "OBJECTS", "FRONT"
    path, source = capture.capture(bpy.context, scene.droplet, tmp_path)
    image = bpy.data.images.load(str(path))
    assert tuple(image.size) == (64, 64)
    assert source["centre"] == pytest.approx([2.0, 1.0, 0.5]) and source["size"] == pytest.approx(1.0)
    # the front camera, as orbit hints about the cube's centre: level, 40°, framing its bounding sphere
    distance = math.sqrt(3) / 2 / math.sin(math.radians(20)) * 1.1
    assert source["camera"] == pytest.approx({"elevation": 0.0, "fov": 40.0, "radius": distance,
                                              "start_azimuth": 0.0}, abs=1e-4)
    pixels = list(image.pixels)
    corner, centre = pixels[0:4], pixels[(32 * 64 + 32) * 4:(32 * 64 + 32) * 4 + 4]
    assert corner[3] == 0.0 and centre[3] == 1.0  # a cut-out: the cube, framed in the middle, on nothing
    # ... sent with the panel's background colour, which the server composites it on
    assert scene.droplet.job_params().to_json()["background"] == "#ffffff"
    scene.droplet.source = "CAMERA"
    assert "background" not in scene.droplet.job_params().to_json()
    # the scene is as it was: camera, world, visibility, no capture camera left behind
    assert scene.camera.name == "Camera" and not other.hide_render and "Droplet Capture" not in bpy.data.objects


def test_camera_render_file_and_image_sources(scene, tmp_path):
    capture = module("capture")
    props = scene.droplet
    props.source = "CAMERA"
    path, source = capture.capture(bpy.context, props, tmp_path / "cam")
    assert path.is_file() and tuple(bpy.data.images.load(str(path)).size) == (64, 64)
    # the scene camera looks level at the cube's centre from 5 m: an orbit camera (Blender's default 50 mm lens)
    assert source["camera"] == pytest.approx({"elevation": 0.0, "fov": math.degrees(2 * math.atan(18 / 50)),
                                              "radius": 5.0, "start_azimuth": 0.0}, abs=1e-4)
    scene.camera.rotation_euler[2] = math.radians(10)  # turned away from the cube: its render is no orbit view
    assert "camera" not in capture.capture(bpy.context, props, tmp_path / "cam2")[1]
    props.source, props.filepath = "FILE", str(path)
    assert capture.capture(bpy.context, props, tmp_path / "file")[0] == path
    generated = bpy.data.images.new("Painted", 32, 16)
    props.source, props.image = "IMAGE", generated
    out, source = capture.capture(bpy.context, props, tmp_path / "img")
    assert tuple(bpy.data.images.load(str(out)).size) == (32, 16) and source == {}
    props.source, props.filepath = "FILE", str(tmp_path / "nope.png")
    with pytest.raises(capture.CaptureError, match="not found"):
        capture.capture(bpy.context, props, tmp_path / "x")


def test_server_not_running_fails_the_job_with_the_reason_in_panel_and_info_log(scene, tmp_path):
    runtime = module("runtime")
    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.server_url, prefs.download_dir = f"127.0.0.1:{free_port()}", str(tmp_path)
    assert bpy.ops.droplet.generate() == {"FINISHED"}
    assert bpy.app.timers.is_registered(runtime.pump)
    wm = bpy.context.window_manager
    assert runtime.wait_until(lambda: wm.droplet_jobs[0].status == "failed", timeout=30)
    assert "connection refused" in wm.droplet_jobs[0].error
    assert any(kind == "ERROR" and "connection refused" in msg for kind, msg in runtime.reports)
    assert "connection refused" in " ".join(draw_panels().texts())  # the panel wraps long lines


def test_panel_settings_become_the_job_params(scene):
    props = scene.droplet
    props.prompt, props.add_orbit_sentence, props.orbit_direction = "A  teapot,\n glazed.", True, "cw"
    props.random_seed, props.custom_size, props.frames = True, False, 0
    props.orbit_hints, props.hint_elevation, props.mesh_resolution = "MANUAL", 15.0, 64
    body = props.job_params().to_json()
    assert body["prompt"].startswith("A teapot, glazed. The camera orbits") and "clockwise" in body["prompt"]
    assert "seed" not in body and "width" not in body and "num_frames" not in body
    assert body["orbit"] == {"elevation": 15.0, "fov": 40.0} and body["mesh"] == {"resolution": 64}
    assert (body["profile"], body["steps"]) == ("faithful", 50)
    props.mode, props.quality = "video", "fast"
    body = props.job_params().to_json()
    assert "orbit" not in body and "mesh" not in body and "The camera orbits" not in body["prompt"]
    assert body["profile"] == "fast" and "steps" not in body  # the fast profile's own step count


def test_preview_shows_the_input_that_would_be_sent(scene, tmp_path):
    bpy.context.preferences.addons[PKG].preferences.download_dir = str(tmp_path)
    scene.droplet.source = "OBJECTS"
    assert bpy.ops.droplet.preview_input() == {"FINISHED"}
    image = bpy.data.images[bpy.context.window_manager.droplet_preview]
    assert tuple(image.size) == (64, 64) and image.preview is not None
    assert ("template_icon", image.preview.icon_id) in draw_panels().log


def test_preferences_draw_and_are_found_by_scripts_using_the_repository_copy(scene):
    from types import SimpleNamespace

    from layout_recorder import Layout

    import droplet_blender.prefs as repo_prefs  # the repository copy, as scripts/blender_generate.py imports it

    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.server_url, prefs.token = "127.0.0.1:9999", "s3cret"
    layout = Layout()

    class Proxy(SimpleNamespace):
        def __getattr__(self, name):
            return getattr(prefs, name)

    type(prefs).draw(Proxy(layout=layout), bpy.context)
    assert ("prop", "token", None) in layout.log and ("prop", "download_dir", None) in layout.log
    found = repo_prefs.settings()
    assert (found.url, found.token) == ("127.0.0.1:9999", "s3cret")


def test_check_server_against_nothing_shows_why_in_the_panel(scene):
    runtime = module("runtime")
    wm = bpy.context.window_manager
    bpy.context.preferences.addons[PKG].preferences.server_url = f"localhost:{free_port()}"
    assert bpy.ops.droplet.check_server() == {"FINISHED"}  # returns at once; the answer comes by the timer
    assert bpy.app.timers.is_registered(runtime.pump)
    assert runtime.wait_until(lambda: not wm.droplet_server_status.startswith("Checking"), timeout=30)
    assert not wm.droplet_server_ok and "connection refused" in wm.droplet_server_status
    assert "connection refused" in " ".join(draw_panels().texts())
