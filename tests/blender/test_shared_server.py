"""Blender keeps up with a shared server: jobs outlive the Blender session (or script) that submitted them.

Against a live ``droplet3d serve`` on 127.0.0.1; the submitting sessions are real separate Blender processes
(scripts/blender_generate.py under the bpy wheel's Python) that exit while their job is in flight.
"""

import json
import re
import time

import bpy
import pytest
from conftest import PKG, make_job, module
from test_headless import run, scene_blend

RECON = ("--elevation", 20, "--fov", 45, "--mesh-resolution", 32)


@pytest.fixture(scope="module")
def orbit_frames(tmp_path_factory):
    job = make_job(tmp_path_factory.mktemp("orbit") / "job", frames=12, size=(64, 64), job_id="src", rendered=True)
    return job / "frames"


def submit_no_wait(blend, frames, server, download_dir) -> str:
    """A headless session submits a job and exits at once; returns the job id it printed."""
    result = run("--open", blend, "--", "--frames", frames, *RECON, "--server", server.url, "--download-dir",
                 download_dir, "--no-wait")
    assert result.returncode == 0, result.stderr
    return re.search(r"job (\S+) submitted", result.stdout).group(1)


def pump_until(predicate, timeout=180.0):
    assert module("runtime").wait_until(predicate, timeout=timeout), "timed out"


def test_no_wait_prints_the_id_with_the_job_recorded_and_attach_collects_and_imports_it(live_server, orbit_frames,
                                                                                       tmp_path, empty_scene):
    blend = scene_blend(tmp_path / "scene.blend")
    job_id = submit_no_wait(blend, orbit_frames, live_server, tmp_path / "dl")
    record = json.loads((tmp_path / "dl" / f"droplet-{job_id}" / "droplet_job.json").read_text())
    assert record["job_id"] == job_id and record["server"] == live_server.url
    assert record["status"] in ("queued", "running", "downloading")  # recorded at submit, not when done

    out = tmp_path / "out.blend"
    result = run("--open", blend, "--", "--attach", job_id, "--server", live_server.url, "--download-dir",
                 tmp_path / "collect", "--save", out)
    assert result.returncode == 0, result.stderr
    assert f"waiting for job {job_id}" in result.stdout and "imported Droplet" in result.stdout
    bpy.ops.wm.open_mainfile(filepath=str(out))
    coll = next(c for c in bpy.data.collections if c.get("droplet_job") == job_id)
    assert len([o for o in coll.all_objects if " Camera " in o.name]) == 12


def test_attach_to_an_unknown_job_exits_non_zero_with_the_reason(live_server, tmp_path, empty_scene):
    blend = scene_blend(tmp_path / "scene.blend")
    result = run("--open", blend, "--", "--attach", "20250101-000000-00000000", "--server", live_server.url,
                 "--download-dir", tmp_path / "dl", "--save", tmp_path / "out.blend")
    assert result.returncode == 1 and "no job" in result.stderr
    assert not (tmp_path / "out.blend").exists()


def test_a_job_left_in_flight_by_an_ended_session_is_followed_when_a_blend_loads(addon, live_server, orbit_frames,
                                                                              tmp_path, empty_scene):
    downloads = tmp_path / "dl"
    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.server_url, prefs.download_dir, prefs.poll_interval = live_server.url, str(downloads), 0.1
    blend = scene_blend(tmp_path / "scene.blend")
    job_id = submit_no_wait(blend, orbit_frames, live_server, downloads)
    wm = bpy.context.window_manager
    wm.droplet_jobs.clear()

    bpy.ops.wm.open_mainfile(filepath=str(blend))  # load_post: the add-on follows what the download folder records

    def downloaded():
        items = [i for i in bpy.context.window_manager.droplet_jobs if i.job_id == job_id]
        return bool(items) and items[0].status == "succeeded"

    pump_until(downloaded)
    folder = downloads / f"droplet-{job_id}"
    record = json.loads((folder / "droplet_job.json").read_text())
    assert record["status"] == "succeeded" and (folder / "mesh.glb").is_file()
    assert module("jobs").pending_jobs(downloads) == []  # followed once: a later load does not fetch it again


def test_server_jobs_list_filters_to_this_user_and_imports_a_finished_job(addon, live_server, orbit_frames,
                                                                           tmp_path, empty_scene):
    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.server_url, prefs.download_dir, prefs.poll_interval = live_server.url, str(tmp_path / "dl"), 0.1
    client, me = module("client").DropletClient(live_server.url), module("jobs").default_owner()
    frames = sorted(orbit_frames.glob("*.png"))
    params = {"mode": "reconstruct", "orbit": {"elevation": 20, "fov": 45}, "mesh": {"resolution": 32}}
    mine = client.submit({**params, "owner": me}, frames=frames)["id"]
    theirs = client.submit({**params, "owner": "someone@elsewhere"}, frames=frames)["id"]
    deadline = time.monotonic() + 180
    while {client.job(j)["status"] for j in (mine, theirs)} != {"succeeded"}:
        assert time.monotonic() < deadline, "jobs did not finish"
        time.sleep(0.2)

    wm = bpy.context.window_manager
    wm.droplet_server_jobs.clear()
    wm.droplet_server_mine = True
    assert bpy.ops.droplet.server_jobs() == {"FINISHED"}
    pump_until(lambda: len(wm.droplet_server_jobs) > 0, timeout=30)
    listed = {item.job_id: item for item in wm.droplet_server_jobs}
    assert mine in listed and theirs not in listed and {item.owner for item in listed.values()} == {me}
    wm.droplet_server_mine = False
    assert bpy.ops.droplet.server_jobs() == {"FINISHED"}
    pump_until(lambda: theirs in {item.job_id for item in wm.droplet_server_jobs}, timeout=30)

    assert bpy.ops.droplet.fetch_job(job_id=theirs) == {"FINISHED"}  # any finished job, whoever submitted it

    def imported():
        items = [i for i in wm.droplet_jobs if i.job_id == theirs]
        return bool(items) and bool(items[0].collection)

    pump_until(imported)
    item = next(i for i in wm.droplet_jobs if i.job_id == theirs)
    coll = bpy.data.collections[item.collection]
    assert len([o for o in coll.all_objects if " Camera " in o.name]) == 12
