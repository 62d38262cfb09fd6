"""Job parameters built by the add-on (pure Python) against the server's own strict request schema."""

import json
import subprocess

import pytest
from conftest import REPO, SERVER_PY

from droplet_blender import params as addon_params
from droplet_blender.jobs import JobState, load_history
from droplet_blender.params import JobParams, ParamError, orbit_sentence

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
