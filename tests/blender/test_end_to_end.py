"""The installed add-on against a live ``droplet3d serve`` (tiny random checkpoint) on 127.0.0.1.

Operators are called as the panel's buttons call them; the timer callback is pumped on this thread
because background Blender runs no event loop (``bpy.app.timers`` would call the same function).

The tiny checkpoint is random, so its generated frames hold no object and an orbit job cannot be
reconstructed: the success path with a mesh runs in reconstruct mode on a synthetic orbit instead, and
orbit generation runs end to end on the cameras the server calibrates (or, failing that, its nominal orbit).
An orbit job that asks for a mesh of that noise is how the failure policy is tested: the job succeeds with a
warning, and the rig is imported without a mesh.
"""

import json
import math
import urllib.request

import bpy
import pytest
from bpy_extras.object_utils import world_to_camera_view
from conftest import PKG, TOKEN, LiveServer, make_job, module
from layout_recorder import draw_panels
from mathutils import Matrix, Vector


@pytest.fixture
def connected(scene, live_server, tmp_path):
    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.server_url, prefs.download_dir, prefs.poll_interval = live_server.url, str(tmp_path / "downloads"), 0.1
    return scene


@pytest.fixture(scope="module")
def orbit_frames(tmp_path_factory):
    job = make_job(tmp_path_factory.mktemp("orbit") / "job", frames=12, size=(64, 64), job_id="src", rendered=True)
    return job / "frames"


def pump_until(predicate, timeout=120.0):
    assert module("runtime").wait_until(predicate, timeout=timeout), "timed out waiting for the job"


def latest_job():
    return bpy.context.window_manager.droplet_jobs[0]


def server_status(server, job_id):
    with urllib.request.urlopen(f"{server.url}/v1/jobs/{job_id}", timeout=10) as response:
        return json.loads(response.read())


def test_check_server_reports_device_models_and_queue(connected):
    assert bpy.ops.droplet.check_server() == {"FINISHED"}
    wm = bpy.context.window_manager
    pump_until(lambda: wm.droplet_server_status.startswith(("OK", "Cannot")), timeout=30)
    assert wm.droplet_server_ok and "cpu" in wm.droplet_server_status and "orbit" in wm.droplet_server_status


def test_reconstruct_end_to_end_imports_cameras_planes_turntable_and_mesh_on_the_source(connected, orbit_frames):
    props = connected.droplet
    props.mode, props.frames_path = "reconstruct", str(orbit_frames)
    props.orbit_hints, props.hint_elevation, props.hint_fov = "MANUAL", 20.0, 45.0
    props.mesh_resolution, props.face_budget = 32, 2000
    assert bpy.ops.droplet.generate() == {"FINISHED"}
    item = latest_job()
    assert item.status in ("submitting", "queued", "running")  # Generate returned before the job finished
    pump_until(lambda: latest_job().status in ("succeeded", "failed", "cancelled"))
    item = latest_job()
    assert item.status == "succeeded", item.error
    coll = bpy.data.collections[item.collection]
    bpy.context.view_layer.update()

    transforms = json.loads((module("jobs").Path(item.folder) / "transforms.json").read_text())
    cams = sorted((o for o in coll.all_objects if " Camera " in o.name), key=lambda o: o.name)
    planes = sorted((o for o in coll.all_objects if " Plane " in o.name), key=lambda o: o.name)
    rig = next(o for o in coll.all_objects if o.name.endswith(" Rig"))
    turntable = next(o for o in coll.all_objects if o.name.endswith(" Turntable"))
    assert len(cams) == len(planes) == len(transforms["frames"]) == 12
    cube = bpy.data.objects["Cube"]
    assert tuple(rig.location) == pytest.approx((2.0, 1.0, 0.5))  # the selected cube's bounds centre
    for cam, plane, frame in zip(cams, planes, transforms["frames"], strict=True):
        expected = rig.matrix_world @ Matrix(frame["transform_matrix"])
        assert (cam.matrix_world.to_translation() - expected.to_translation()).length < 1e-4
        assert abs(cam.matrix_world.to_quaternion().dot(expected.to_quaternion())) > 1 - 1e-6
        image = plane.active_material.node_tree.nodes["Frame"].image
        assert tuple(image.size) == (64, 64) and image.filepath.endswith(frame["file_path"])
        corners = [tuple(world_to_camera_view(connected, cam, plane.matrix_world @ v.co))[:2]
                   for v in plane.data.vertices]
        assert corners == [pytest.approx(c, abs=1e-4) for c in [(0, 0), (1, 0), (1, 1), (0, 1)]]
    for k in (0, 5, 11):
        connected.frame_set(connected.frame_start + k)
        assert [p.name for p in planes if not p.hide_render] == [planes[k].name]
        assert (turntable.matrix_world.to_translation() - cams[k].matrix_world.to_translation()).length < 1e-4
    mesh = next(o for o in coll.all_objects if o.type == "MESH" and o.name.endswith(" Mesh"))
    assert mesh.parent == rig
    corners = [mesh.matrix_world @ Vector(c) for c in mesh.bound_box]
    sides = [max(c[i] for c in corners) - min(c[i] for c in corners) for i in range(3)]
    centre = sum(corners, Vector()) / 8
    assert max(sides) == pytest.approx(max(cube.dimensions), rel=1e-3)  # scaled to the source's size
    # exactly where the GLB puts it in the orbit frame, carried by the rig ...
    local = sum((mesh.matrix_basis @ Vector(c) for c in mesh.bound_box), Vector()) / 8
    assert (centre - rig.matrix_world @ local).length < 1e-4
    # ... which lands it on the source: the coarse 32³ hull of the synthetic orbit is only roughly centred
    assert all(lo < c < hi for c, lo, hi in zip(centre, (1.5, 0.5, 0.0), (2.5, 1.5, 1.0), strict=True))
    assert any(kind == "INFO" and item.job_id in msg for kind, msg in module("runtime").reports)


def test_generate_orbit_end_to_end_imports_cameras_planes_and_turntable_without_a_mesh(connected):
    props = connected.droplet
    props.mode, props.steps, props.frames, props.reconstruct = "orbit", 2, 9, False
    assert props.source == "OBJECTS" and props.orbit_hints == "CAPTURE"  # the defaults: the cube, its camera
    assert bpy.ops.droplet.generate() == {"FINISHED"}
    pump_until(lambda: latest_job().status in ("succeeded", "failed", "cancelled"))
    item = latest_job()
    assert item.status == "succeeded", item.error
    coll = bpy.data.collections[item.collection]
    transforms = json.loads((module("jobs").Path(item.folder) / "transforms.json").read_text())
    cams = sorted((o for o in coll.all_objects if " Camera " in o.name), key=lambda o: o.name)
    planes = sorted((o for o in coll.all_objects if " Plane " in o.name), key=lambda o: o.name)
    assert len(cams) == len(planes) == len(transforms["frames"]) == 9
    assert not any(o.name.endswith(" Mesh") for o in coll.all_objects)  # no mesh was asked for
    assert tuple(planes[0].active_material.node_tree.nodes["Frame"].image.size) == (64, 64)
    connected.frame_set(connected.frame_start + 4)
    assert [p.name for p in planes if not p.hide_render] == [planes[4].name]
    # The capture camera went to the server as the orbit hints, so the orbit comes back in world units: frame 0's
    # camera stands where the front camera rendered the cube from, with its field of view, unscaled.
    distance = math.sqrt(3) / 2 / math.sin(math.radians(20)) * 1.1
    rig = next(o for o in coll.all_objects if o.name.endswith(" Rig"))
    record = module("importer").job_record(module("jobs").Path(item.folder))
    assert tuple(rig.scale) == (1, 1, 1) and record["source"]["placement"] == "camera"
    bpy.context.view_layer.update()
    assert (cams[0].matrix_world.to_translation() - Vector((2.0, 1.0 - distance, 0.5))).length < 0.02 * distance
    assert math.degrees(cams[0].data.angle) == pytest.approx(40.0, abs=0.01)


def test_orbit_whose_mesh_fails_imports_the_rig_without_a_mesh_and_shows_the_warning(connected):
    props = connected.droplet
    props.mode, props.steps, props.frames, props.reconstruct, props.mesh_resolution = "orbit", 1, 9, True, 32
    assert bpy.ops.droplet.generate() == {"FINISHED"}
    pump_until(lambda: latest_job().status in ("succeeded", "failed", "cancelled"))
    item = latest_job()
    assert item.status == "succeeded", item.error
    assert item.warnings.startswith("mesh failed (") and "nominal orbit" in item.warnings
    coll = bpy.data.collections[item.collection]
    assert len([o for o in coll.all_objects if " Camera " in o.name]) == 9
    assert any(o.name.endswith(" Rig") for o in coll.all_objects)
    assert not any(o.name.endswith(" Mesh") for o in coll.all_objects)
    assert ("WARNING", f"Droplet job {item.job_id}: {item.warnings}") in module("runtime").reports
    bpy.context.window_manager.droplet_job_index = 0
    assert "mesh failed" in " ".join(draw_panels().texts())


def test_addon_against_a_real_token_server_needs_the_right_token_for_jobs_only(scene, token_server, tmp_path):
    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.server_url, prefs.download_dir, prefs.poll_interval = token_server.url, str(tmp_path / "dl"), 0.1
    props, wm = scene.droplet, bpy.context.window_manager
    props.mode, props.steps, props.frames, props.reconstruct = "orbit", 1, 9, False
    prefs.token = ""
    assert bpy.ops.droplet.check_server() == {"FINISHED"}  # health needs no token on the real server
    pump_until(lambda: wm.droplet_server_status.startswith(("OK", "Cannot")), timeout=30)
    assert wm.droplet_server_ok, wm.droplet_server_status
    for token in ("", "not-the-token"):
        prefs.token = token
        assert bpy.ops.droplet.generate() == {"FINISHED"}
        pump_until(lambda: latest_job().status in ("succeeded", "failed", "cancelled"), timeout=60)
        item = latest_job()
        assert item.status == "failed" and not item.job_id, item.error
        assert item.error == "missing or wrong bearer token. Set the token in Preferences → Add-ons → Droplet."
    prefs.token = TOKEN
    assert bpy.ops.droplet.generate() == {"FINISHED"}
    pump_until(lambda: latest_job().status in ("succeeded", "failed", "cancelled"))
    item = latest_job()
    assert item.status == "succeeded", item.error
    coll = bpy.data.collections[item.collection]
    assert len([o for o in coll.all_objects if " Camera " in o.name]) == 9


def test_generate_shows_denoising_progress_and_cancel_reaches_the_server(connected, live_server):
    props = connected.droplet
    props.mode, props.steps, props.frames, props.reconstruct = "orbit", 400, 9, False
    assert bpy.ops.droplet.generate() == {"FINISHED"}
    pump_until(lambda: latest_job().stage == "denoising" and latest_job().step >= 1)
    key, job_id = latest_job().key, latest_job().job_id
    progress = [e for e in draw_panels().log if e[0] == "progress"]
    assert progress and progress[0][2].startswith("denoising ") and "/400" in progress[0][2]
    assert bpy.ops.droplet.cancel(key=key) == {"FINISHED"}
    pump_until(lambda: latest_job().status in ("succeeded", "failed", "cancelled"), timeout=60)
    assert latest_job().status == "cancelled"
    assert server_status(live_server, job_id)["status"] == "cancelled"
    assert ("WARNING", f"Droplet job {job_id} was cancelled") in module("runtime").reports


def test_several_jobs_can_be_in_flight_at_once(connected, live_server):
    props = connected.droplet
    props.mode, props.steps, props.frames, props.reconstruct = "orbit", 400, 9, False
    assert bpy.ops.droplet.generate() == {"FINISHED"}
    assert bpy.ops.droplet.generate() == {"FINISHED"}
    runtime = module("runtime")
    keys = [item.key for item in bpy.context.window_manager.droplet_jobs][:2]
    assert all(runtime.manager.running(k) for k in keys)
    pump_until(lambda: all(runtime.find_item(bpy.context.window_manager, k).job_id for k in keys))
    queued = [runtime.find_item(bpy.context.window_manager, k) for k in keys]
    pump_until(lambda: any(i.status == "queued" and i.queue_position >= 1 for i in queued)
               or all(i.status == "running" for i in queued), timeout=30)
    for key in keys:
        bpy.ops.droplet.cancel(key=key)
    pump_until(lambda: not any(runtime.manager.running(k) for k in keys), timeout=60)
    assert {runtime.find_item(bpy.context.window_manager, k).status for k in keys} == {"cancelled"}


def test_failed_job_shows_the_servers_reason_in_panel_and_info_log(connected, tmp_path):
    blank = tmp_path / "blank"
    blank.mkdir()
    for k in range(8):  # an orbit of nothing: the reconstruction finds no object and the job fails
        bpy.data.images.new(f"blank{k}", 32, 32).save(filepath=str(blank / f"{k:04d}.png"))
    connected.droplet.mode, connected.droplet.frames_path = "reconstruct", str(blank)
    assert bpy.ops.droplet.generate() == {"FINISHED"}
    pump_until(lambda: latest_job().status in ("succeeded", "failed", "cancelled"))
    item = latest_job()
    assert item.status == "failed" and "foreground" in item.error
    assert any(kind == "ERROR" and "foreground" in msg for kind, msg in module("runtime").reports)
    bpy.context.window_manager.droplet_job_index = 0
    assert "foreground" in " ".join(draw_panels().texts())


def test_upload_refused_by_the_server_shows_its_4xx_text(connected):
    connected.droplet.prompt = "word " * 1000  # 5000 characters: over the server's prompt limit
    assert bpy.ops.droplet.generate() == {"FINISHED"}
    pump_until(lambda: latest_job().status in ("failed", "succeeded", "cancelled"), timeout=60)
    item = latest_job()
    assert item.status == "failed" and "limit is" in item.error and not item.job_id


def test_server_dying_mid_job_fails_the_job_with_the_reason(connected, tiny_ckpt, tmp_path):
    doomed = LiveServer(tiny_ckpt, tmp_path / "jobs", tmp_path / "serve.log")
    try:
        bpy.context.preferences.addons[PKG].preferences.server_url = doomed.url
        connected.droplet.steps, connected.droplet.frames, connected.droplet.reconstruct = 400, 9, False
        assert bpy.ops.droplet.generate() == {"FINISHED"}
        pump_until(lambda: latest_job().status == "running")
        doomed.stop()
        pump_until(lambda: latest_job().status in ("failed", "succeeded", "cancelled"), timeout=60)
    finally:
        doomed.stop()
    item = latest_job()
    assert item.status == "failed" and "Lost the server" in item.error


def test_history_lists_finished_jobs_from_disk_and_reimports_idempotently(connected, orbit_frames):
    props = connected.droplet
    props.mode, props.frames_path = "reconstruct", str(orbit_frames)
    props.orbit_hints, props.hint_elevation, props.hint_fov, props.mesh_resolution = "MANUAL", 20.0, 45.0, 32
    bpy.ops.droplet.generate()
    pump_until(lambda: latest_job().status in ("succeeded", "failed", "cancelled"))
    job_id, collection = latest_job().job_id, latest_job().collection
    wm = bpy.context.window_manager
    wm.droplet_jobs.clear()  # as after a restart: the list comes back from the download folder
    reports = len(module("runtime").reports)
    assert bpy.ops.droplet.refresh_history() == {"FINISHED"}
    assert len(module("runtime").reports) == reports  # old jobs are listed, not announced again
    item = next(i for i in wm.droplet_jobs if i.job_id == job_id)
    assert item.status == "succeeded" and item.folder.endswith(job_id)
    counts = {k: len(getattr(bpy.data, k)) for k in ("objects", "meshes", "materials", "images", "collections")}
    assert bpy.ops.droplet.reimport(key=item.key) == {"FINISHED"}
    assert item.collection == collection
    assert {k: len(getattr(bpy.data, k)) for k in counts} == counts
    assert bpy.ops.droplet.remove_job(key=item.key) == {"FINISHED"}
    assert not any(i.job_id == job_id for i in wm.droplet_jobs)


def test_generate_video_end_to_end_imports_the_clip_as_an_image_sequence(connected):
    props = connected.droplet
    props.mode, props.steps, props.frames, props.fps = "video", 2, 9, 8
    props.width, props.height = 64, 48
    props.source = "CAMERA"  # the scene camera's render is the input
    text = bpy.data.texts.new("Dense Prompt")  # a dense prompt from a Text datablock, 260 words on many lines
    text.write("\n".join(" ".join(f"word{k}" for k in range(i, i + 10)) for i in range(0, 260, 10)))
    props.use_text, props.prompt_text = True, text
    assert bpy.ops.droplet.generate() == {"FINISHED"}
    pump_until(lambda: latest_job().status in ("succeeded", "failed", "cancelled"))
    item = latest_job()
    assert item.status == "succeeded", item.error
    coll = bpy.data.collections[item.collection]
    cam = next(o for o in coll.all_objects if o.type == "CAMERA")
    plane = next(o for o in coll.all_objects if o.type == "MESH")
    tex = plane.active_material.node_tree.nodes["Frame"]
    assert tex.image.source == "SEQUENCE" and tex.image_user.frame_duration == 9
    assert tuple(tex.image.size) == (64, 48)
    assert cam.data.background_images[0].image == tex.image
    assert (connected.frame_end - connected.frame_start + 1, connected.render.fps, connected.camera) == (9, 8, cam)
    manifest = json.loads((module("jobs").Path(item.folder) / "manifest.json").read_text())
    assert manifest["params"]["fps"] == 8 and manifest["params"]["prompt"] == props.prompt_value()
    assert len(manifest["params"]["prompt"].split()) == 260 and "word259" in manifest["params"]["prompt"]


def test_scripting_api_submits_an_object_waits_and_imports(connected, live_server, tmp_path):
    import droplet_blender as droplet  # the repository copy, as a script would import it

    cube = bpy.data.objects["Cube"]
    job = droplet.submit("A grey cube.", object=cube, mode="video", steps=2, width=64, height=48, num_frames=5,
                         fps=8, server=live_server.url, download_dir=tmp_path)
    assert job.source["centre"] == pytest.approx([2.0, 1.0, 0.5])
    job = droplet.wait(job, timeout=120)
    coll = droplet.import_job(job)
    assert coll.name == f"Droplet {job.job_id}" and (tmp_path / f"droplet-{job.job_id}" / "frames.zip").is_file()
    count = len(list((tmp_path / f"droplet-{job.job_id}" / "frames").glob("*.png")))
    plane = next(o for o in coll.all_objects if o.type == "MESH")
    assert count >= 5 and plane.active_material.node_tree.nodes["Frame"].image_user.frame_duration == count
    with pytest.raises(droplet.DropletJobFailed, match="foreground"):
        blank = tmp_path / "blank"
        blank.mkdir()
        for k in range(8):
            bpy.data.images.new(f"b{k}", 16, 16).save(filepath=str(blank / f"{k:04d}.png"))
        droplet.wait(droplet.submit(mode="reconstruct", frames=blank, server=live_server.url, download_dir=tmp_path),
                     timeout=120)
