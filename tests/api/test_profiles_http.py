"""The per-job ``profile`` through the real server: chosen per job, validated, recorded in the job's manifest."""

from __future__ import annotations

import json

from api_helpers import FAST, submit, wait_for

SIZE = {key: FAST[key] for key in ("width", "height", "num_frames")}


def test_a_fast_job_on_a_faithful_server_runs_the_fast_step_switches(model_server):
    with model_server.client() as client:
        created = submit(client, {"prompt": "a red ceramic cup", **SIZE, "profile": "fast"})
        assert created.status_code == 202, created.text
        final = wait_for(client, created.json()["id"])
        assert final["status"] == "succeeded", final
        manifest = json.loads(client.get(f"/v1/jobs/{final['id']}/artifacts/manifest.json").content)
    speed = manifest["speed"]
    assert (speed["profile"], speed["solver"], speed["steps"], speed["scheduler"]) == (  # no steps given: fast's
        "fast", "dpm", 25, "DPMSolverMultistepScheduler")
    assert speed["uncond_passes"] == 20 and manifest["engine"]["quantize"] is None  # a faithful server: no FP8


def test_bad_or_misplaced_profiles_are_4xx_naming_the_field(model_server):
    with model_server.client() as client:
        bad = submit(client, {"prompt": "a cup", **SIZE, "profile": "turbo"})
        misplaced = submit(client, {"mode": "reconstruct", "profile": "fast"}, files=[])
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "params.profile", bad.text
    assert misplaced.status_code in (400, 422), misplaced.text
    assert misplaced.json()["error"]["field"] == "params.profile"
