"""Whole jobs of each mode through the real server and the real engine/reconstruction on tiny checkpoints."""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile

import numpy as np
from api_helpers import FAST, disc_frames, mp4_bytes, png_bytes, sse_statuses, submit, wait_for, zip_bytes
from PIL import Image

SMALL_MESH = {"resolution": 32, "face_budget": 500, "texture_size": 256}
STAGE_ORDER = ["queued", "loading", "encoding", "denoising", "decoding", "writing", "reconstructing", "done"]


def check_artifacts(client, status: dict) -> dict[str, bytes]:
    """Download every listed artifact; size, sha256 and content type must match the listing."""
    files = {}
    for artifact in status["artifacts"]:
        response = client.get(artifact["url"])
        assert response.status_code == 200, artifact
        assert len(response.content) == artifact["size"]
        assert hashlib.sha256(response.content).hexdigest() == artifact["sha256"]
        files[artifact["name"]] = response.content
        expected = {"png": "image/png", "mp4": "video/mp4", "json": "application/json", "zip": "application/zip",
                    "glb": "model/gltf-binary", "webp": "image/webp"}[artifact["name"].rsplit(".", 1)[1]]
        assert response.headers["content-type"].startswith(expected)
    return files


def test_orbit_job_streams_its_stages_and_serves_every_artifact(model_server):
    with model_server.client() as client:
        created = submit(client, {"prompt": "a red ceramic cup", **FAST, "seed": 7})
        assert created.status_code == 202
        job_id = created.json()["id"]
        events = sse_statuses(client, job_id)
        final = client.get(f"/v1/jobs/{job_id}").json()
        assert final["status"] == "succeeded", final
        files = check_artifacts(client, final)

        # SSE: the same status JSON, stages in pipeline order, progress never going back, steps counted.
        stages = [e["stage"] for e in events]
        assert [s for s in STAGE_ORDER if s in stages] == sorted(set(stages), key=STAGE_ORDER.index)
        assert {"encoding", "denoising", "decoding"} <= set(stages) and stages[-1] == "done"
        progress = [e["progress"] for e in events]
        assert progress == sorted(progress) and progress[-1] == 1.0
        assert {(e["step"], e["total"]) for e in events if e["stage"] == "denoising"} >= {(1, 2), (2, 2)}
        assert events[-1] == final

        names = set(files)
        frame_names = sorted(n for n in names if n.startswith("frames/"))
        assert frame_names[0] == "frames/0000.png"
        assert len(frame_names) == json.loads(files["manifest.json"])["num_frames"]
        assert {"frames.zip", "orbit.mp4", "input.png", "transforms.json", "manifest.json"} <= names
        with zipfile.ZipFile(io.BytesIO(files["frames.zip"])) as archive:
            assert {n: archive.read(n) for n in archive.namelist()} == {n: files[n] for n in names
                                                                        if n.startswith("frames/")}
        transforms = json.loads(files["transforms.json"])
        assert [f["file_path"] for f in transforms["frames"]] == frame_names
        assert json.loads(files["manifest.json"])["seed"] == 7
        # Tiny random weights draw noise, which has no silhouette: the job says the cameras are nominal.
        assert all(w["code"] == "nominal_cameras" and "calibration" in w["message"] for w in final["warnings"])

        # Range requests: a slice of the video, and an unsatisfiable range.
        url = f"/v1/jobs/{job_id}/artifacts/orbit.mp4"
        part = client.get(url, headers={"Range": "bytes=10-29"})
        assert part.status_code == 206 and part.content == files["orbit.mp4"][10:30]
        assert part.headers["content-range"] == f"bytes 10-29/{len(files['orbit.mp4'])}"
        assert client.get(url, headers={"Range": "bytes=999999999-"}).status_code == 416
        # Only listed names are served.
        for name in ("job.json", "upload/image.png", "../job.json", "frames/9999.png"):
            assert client.get(f"/v1/jobs/{job_id}/artifacts/{name}").status_code == 404


def test_video_job_uses_the_dropletvideo_checkpoint_with_fps(model_server):
    with model_server.client() as client:
        job_id = submit(client, {"mode": "video", "prompt": "a boat on a lake", **FAST, "fps": 8}).json()["id"]
        status = wait_for(client, job_id)
        assert status["status"] == "succeeded", status
        files = check_artifacts(client, status)
    manifest = json.loads(files["manifest.json"])
    assert manifest["kind"] == "dropletvideo" and manifest["params"]["fps"] == 8
    assert "orbit.mp4" in files and "transforms.json" not in files


def test_an_orbit_job_from_a_cut_out_offers_frame_0s_exact_alpha(model_server):
    with model_server.client() as client:
        cut_out = png_bytes((48, 40), (200, 60, 40, 90), mode="RGBA")  # translucent everywhere: it cuts something
        job_id = submit(client, {"prompt": "a cut-out", **FAST, "background": "#ffffff"}, image=cut_out).json()["id"]
        status = wait_for(client, job_id)
        assert status["status"] == "succeeded", status
        files = check_artifacts(client, status)
    alpha = np.asarray(Image.open(io.BytesIO(files["frame0_alpha.png"])))
    assert alpha.shape == (FAST["height"], FAST["width"]) and abs(int(alpha.mean()) - 90) <= 1
    manifest = json.loads(files["manifest.json"])
    assert "frame0_alpha.png" in manifest["files"] and manifest["params"]["background"] == "#ffffff"
    composite = np.asarray(Image.open(io.BytesIO(files["input.png"])))[0, 0]  # 90/255 of the colour on white
    assert abs(composite - (np.array([200, 60, 40]) * 90 + 255 * 165) / 255).max() <= 2


def test_orbit_job_whose_mesh_fails_succeeds_with_its_frames_and_a_warning(model_server):
    with model_server.client() as client:
        job_id = submit(client, {"prompt": "a cup", **FAST, "reconstruct": True, "mesh": SMALL_MESH}).json()["id"]
        status = wait_for(client, job_id)
        assert status["status"] == "succeeded", status
        files = check_artifacts(client, status)
    assert "orbit.mp4" in files and "transforms.json" in files and "mesh.glb" not in files
    assert any(name.startswith("frames/") or name == "frames.zip" for name in files)
    [warning] = status["warnings"]
    assert warning["code"] == "reconstruction_failed" and "mesh failed" in warning["message"]
    failure = json.loads(files["manifest.json"])["reconstruction"]
    expected = ("no_foreground", "foreground_clipped", "empty_reconstruction", "calibration_failed")
    assert failure["status"] == "failed" and failure["code"] in expected, failure


def test_reconstruct_job_from_a_frames_zip(model_server):
    frames = disc_frames(9)
    archive = zip_bytes({f"view_{k}.png": f for k, f in enumerate(frames)})
    with model_server.client() as client:
        response = submit(client, {"mode": "reconstruct", "mesh": SMALL_MESH, "orbit": {"elevation": 0}},
                          files=[("frames", ("frames.zip", archive, "application/zip"))])
        assert response.status_code == 202, response.text
        status = wait_for(client, response.json()["id"])
        assert status["status"] == "succeeded", status
        files = check_artifacts(client, status)
    assert {"mesh.glb", "transforms.json", "frames.zip", "masks/0000.png"} <= set(files)
    assert files["mesh.glb"][:4] == b"glTF"
    assert [files[f"frames/{k:04d}.png"] for k in range(9)] == frames  # stored in the zip's numeric order


def test_reconstruct_job_from_frame_files_and_from_a_video(model_server, tmp_path):
    frames = disc_frames(9)
    with model_server.client() as client:
        by_files = submit(client, {"mode": "reconstruct", "mesh": SMALL_MESH},
                          files=[("frames", (f"{k}.png", f, "image/png")) for k, f in enumerate(frames)])
        by_video = submit(client, {"mode": "reconstruct", "mesh": SMALL_MESH},
                          files=[("video", ("orbit.mp4", mp4_bytes(frames, tmp_path / "o.mp4"), "video/mp4"))])
        for response in (by_files, by_video):
            assert response.status_code == 202, response.text
            status = wait_for(client, response.json()["id"])
            assert status["status"] == "succeeded", status
            names = {a["name"] for a in status["artifacts"]}
            assert {"mesh.glb", "transforms.json"} <= names


def test_reconstruct_job_from_webp_frames_the_upload_accepted(model_server):
    webp = []
    for frame in disc_frames(9):
        buf = io.BytesIO()
        Image.open(io.BytesIO(frame)).save(buf, format="WEBP", lossless=True)
        webp.append(buf.getvalue())
    with model_server.client() as client:
        response = submit(client, {"mode": "reconstruct", "mesh": SMALL_MESH, "orbit": {"elevation": 0}},
                          files=[("frames", (f"{k}.webp", f, "image/webp")) for k, f in enumerate(webp)])
        assert response.status_code == 202, response.text
        status = wait_for(client, response.json()["id"])
        assert status["status"] == "succeeded", status
        files = check_artifacts(client, status)
    assert files["mesh.glb"][:4] == b"glTF"
    paths = [f["file_path"] for f in json.loads(files["transforms.json"])["frames"]]
    assert paths == [f"frames/{k:04d}.webp" for k in range(9)]
    assert [files[p] for p in paths] == webp  # every frame the cameras name is served, as sent


def test_cancel_stops_a_running_job_at_the_next_step_and_a_queued_one_at_once(model_server):
    with model_server.client() as client:
        long = submit(client, {"prompt": "a long job", **FAST, "steps": 400}).json()["id"]
        queued = submit(client, {"prompt": "waits its turn", **FAST}).json()["id"]
        running = wait_for(client, long, ("running",), predicate=lambda s: s["stage"] == "denoising" and s["step"])
        assert running["eta_seconds"] is not None and running["eta_seconds"] > 0
        waiting = client.get(f"/v1/jobs/{queued}").json()
        assert waiting["status"] == "queued" and waiting["queue_position"] == 1

        health_started = time.monotonic()
        health = client.get("/v1/health").json()  # answers while the model works
        assert time.monotonic() - health_started < 5 and health["running"] == [long] and health["queue_length"] == 1

        cancelled_at_once = client.delete(f"/v1/jobs/{queued}")
        assert cancelled_at_once.status_code == 202 and cancelled_at_once.json()["status"] == "cancelled"
        assert client.delete(f"/v1/jobs/{long}").status_code == 202
        final = wait_for(client, long, timeout=60)
        assert final["status"] == "cancelled" and final["artifacts"] == []
        assert client.get(f"/v1/jobs/{queued}").json()["status"] == "cancelled"
        # The worker goes on.
        after = submit(client, {"mode": "video", "prompt": "next", **FAST, "num_frames": 1}).json()["id"]
        assert wait_for(client, after)["status"] == "succeeded"
