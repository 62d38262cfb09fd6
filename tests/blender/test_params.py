"""Job parameters built by the add-on (pure Python) against the server's own strict request schema."""

import json
import math
import subprocess

import pytest
from conftest import REPO, SERVER_PY

from droplet_blender import geometry
from droplet_blender import params as addon_params
from droplet_blender.jobs import JobState, load_history
from droplet_blender.params import JobParams, ParamError, orbit_sentence, with_capture_hints

CASES = [
    JobParams(prompt="a teapot"),
    JobParams(prompt="a teapot", reconstruct=False, view_align=True, seed=None, width=64, height=48, num_frames=9),
    JobParams(prompt="a teapot", orbit={"elevation": 20.0, "fov": 45.0}, mesh={"resolution": 64, "face_budget": 5000}),
    JobParams(mode="video", prompt="a boat", fps=8, negative_prompt="blurry", reconstruct=True, orbit={"fov": 40.0}),
    JobParams(mode="reconstruct", prompt="ignored", orbit={"elevation": 10.0}, mesh={"resolution": 32}),
    JobParams(prompt="a teapot", profile="fast", steps=None),
    JobParams(mode="video", prompt="a boat", profile="faithful"),
    JobParams(mode="reconstruct", profile="fast"),
    JobParams(prompt="a teapot", background="#ffffff"),
    JobParams(mode="reconstruct", background="#ffffff"),
    JobParams(prompt="a teapot", orbit={"elevation": 12.5, "fov": 40.0, "radius": 3.2, "start_azimuth": -30.0,
                                        "frame0": True}),
]


def test_params_for_every_mode_pass_the_servers_strict_schema():
    bodies = [p.to_json() for p in CASES]
    code = ("import json, sys; from droplet3d.api.schemas import JobParams\n"
            "for body in json.load(sys.stdin): JobParams.model_validate(body)\nprint('ok')")
    out = subprocess.run([str(SERVER_PY), "-c", code], input=json.dumps(bodies), capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
    assert "prompt" not in bodies[4] and "reconstruct" not in bodies[3] and "mesh" not in bodies[1]
    assert bodies[5]["profile"] == "fast" and "steps" not in bodies[5] and "profile" not in bodies[7]
    assert bodies[8]["background"] == "#ffffff" and "background" not in bodies[9]


def test_the_addons_limits_are_the_servers():
    code = ("import json; from droplet3d.recon import limits; from droplet3d.api import schemas, uploads\n"
            "field = schemas.MeshOptions.model_json_schema()['properties']['resolution']['anyOf'][0]\n"
            "print(json.dumps([limits.MIN_FRAMES, uploads.MIN_FRAMES, limits.MIN_RESOLUTION, field['minimum'],"
            " limits.MAX_RESOLUTION, field['maximum']]))")
    out = subprocess.run([str(SERVER_PY), "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    min_frames, upload_min, low, schema_low, high, schema_high = json.loads(out.stdout or "null") or pytest.fail(
        out.stderr[-2000:])
    assert addon_params.MIN_FRAMES == min_frames == upload_min
    assert (addon_params.MIN_RESOLUTION, addon_params.MAX_RESOLUTION) == (low, high) == (schema_low, schema_high)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        (JobParams(prompt="  "), "prompt"),
        (JobParams(prompt="x", width=100), "width"),
        (JobParams(prompt="x", steps=0), "steps"),
        (JobParams(prompt="x", fps=8), "fps"),
        (JobParams(mode="sculpt", prompt="x"), "mode"),
        (JobParams(prompt="x", mesh={"resolution": 1024}), "mesh.resolution"),
        (JobParams(prompt="x", profile="turbo"), "profile"),
        (JobParams(prompt="x", background="white"), "background"),
    ],
)
def test_bad_params_name_their_field_before_anything_is_sent(params, field):
    with pytest.raises(ParamError) as err:
        params.to_json()
    assert err.value.field == field


def test_a_capture_camera_reads_back_as_the_servers_orbit_pose_it_sits_on():
    poses = [(0.0, 0.0, 2.5), (-30.0, 12.5, 3.2), (135.0, -20.0, 1.1)]  # azimuth, elevation, distance
    code = ("import json, sys; from droplet3d.orbit import camera_position, look_at\n"
            "print(json.dumps([look_at(camera_position(a, e, d) + [1, 2, 3], [1, 2, 3]).tolist() "
            "for a, e, d in json.load(sys.stdin)]))")
    out = subprocess.run([str(SERVER_PY), "-c", code], input=json.dumps(poses), capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    matrices = json.loads(out.stdout or "null") or pytest.fail(out.stderr[-2000:])
    for (azimuth, elevation, distance), c2w in zip(poses, matrices, strict=True):
        hints = geometry.capture_orbit(c2w, (1.0, 2.0, 3.0), 0.6)
        assert hints == pytest.approx({"elevation": elevation, "fov": 34.377, "radius": distance,
                                       "start_azimuth": azimuth}, abs=1e-3)
    assert geometry.capture_orbit(matrices[1], (1.2, 2.0, 3.0), 0.6) is None  # aimed elsewhere: no orbit camera
    rolled = [[row[1], -row[0], row[2], row[3]] for row in matrices[0][:3]] + [matrices[0][3]]  # about its axis
    assert geometry.capture_orbit(rolled, (1.0, 2.0, 3.0), 0.6) is None  # a tilted horizon: no orbit camera either


def test_the_fov_across_the_larger_side_follows_blenders_sensor_fit():
    assert geometry.fov_across_larger(0.5, "AUTO", 320, 180) == 0.5
    assert geometry.fov_across_larger(0.5, "HORIZONTAL", 320, 180) == 0.5
    wider = geometry.fov_across_larger(0.5, "VERTICAL", 320, 180)
    assert wider == pytest.approx(2 * math.atan(math.tan(0.25) * 320 / 180))
    assert geometry.fov_across_larger(0.5, "VERTICAL", 64, 64) == 0.5


def test_capture_hints_are_sent_unless_hints_were_given_or_the_view_is_realigned():
    camera = {"elevation": 0.0, "fov": 40.0, "radius": 3.0, "start_azimuth": 0.0}
    source = {"centre": [0, 0, 1], "size": 2.0, "camera": camera}
    params = JobParams(prompt="a teapot")
    placed = with_capture_hints(params, source)
    assert params.orbit == {**camera, "frame0": True} and placed == {**source, "placement": "camera"}
    assert params.to_json()["orbit"] == {**camera, "frame0": True}  # frame 0's own camera, not the orbit's mean
    for untouched in (JobParams(prompt="x", orbit={"fov": 30.0}), JobParams(prompt="x", view_align=True),
                      JobParams(mode="video", prompt="x"), JobParams(mode="reconstruct")):
        before = untouched.orbit
        assert with_capture_hints(untouched, source) == source and untouched.orbit == before
    plain = JobParams(prompt="x")
    assert with_capture_hints(plain, {"centre": [0, 0, 0], "size": 1.0}) == {"centre": [0, 0, 0], "size": 1.0}
    assert plain.orbit is None


def test_orbit_sentence_follows_the_direction():
    assert "counter-clockwise" in orbit_sentence("ccw") and " clockwise" in orbit_sentence("cw")


def test_server_status_maps_onto_the_job_state():
    state = JobState(key="k")
    state.apply_status({"id": "J", "status": "running", "stage": "denoising", "progress": 0.5, "step": 5, "total": 10,
                        "eta_seconds": 3.5, "queue_position": None, "error": None})
    assert (state.job_id, state.stage, state.step, state.total, state.eta_seconds) == ("J", "denoising", 5, 10, 3.5)
    state.apply_status({"id": "J", "status": "failed", "stage": "failed", "progress": 0.5,
                        "error": {"code": "oom", "message": "CUDA out of memory"}})
    assert state.finished and state.error == "CUDA out of memory"
    state.apply_status({"id": "J", "status": "succeeded", "warnings": [
        {"code": "nominal_cameras", "message": "cameras are nominal"},
        {"code": "reconstruction_failed", "message": "no mesh"}]})
    assert state.warnings == "cameras are nominal\nno mesh"
    state.apply_status({"id": "J", "status": "succeeded", "warnings": ["an older server's plain text"]})
    assert state.warnings == "an older server's plain text"


def test_history_is_read_from_job_folders_and_skips_damaged_records(tmp_path):
    for name, created in (("droplet-a", 1.0), ("droplet-b", 2.0)):
        (tmp_path / name).mkdir()
        state = JobState(key=name, job_id=name[-1], status="succeeded", created_at=created)
        (tmp_path / name / "droplet_job.json").write_text(json.dumps(state.to_dict()))
    (tmp_path / "droplet-c").mkdir()
    (tmp_path / "droplet-c" / "droplet_job.json").write_text("{broken")
    history = load_history(tmp_path)
    assert [s.job_id for s in history] == ["b", "a"] and history[0].folder == str(tmp_path / "droplet-b")
