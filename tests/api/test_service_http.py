"""The service over real HTTP, with no usable model: errors, auth, limits, failing jobs, retention."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from api_helpers import Server, png_bytes, submit, wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Checkpoints that do not exist: every generation job fails fast, at model loading."""
    server = Server(tmp_path_factory.mktemp("jobs"), "--ckpt", "/nonexistent/droplet3d", "--keep-jobs", "3",
                    "--max-upload-mb", "1", "--max-image-pixels", "65536").start()
    yield server
    server.stop()


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]), body
    return body["error"]


def test_health_reports_models_queue_and_limits(server):
    with server.client() as client:
        health = client.get("/v1/health").json()
    assert health["status"] == "ok" and health["auth"] is False
    assert {m["role"]: m["present"] for m in health["models"]} == {"orbit": False, "video": False}
    assert health["queue_length"] == 0 and health["limits"]["max_image_pixels"] == 65536
    assert health["limits"]["min_frames"] == 8 and health["limits"]["mesh_resolution"] == [32, 512]


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/nope", 404, "not_found"),
    ("GET", "/v1/jobs/20250101-000000-00000000", 404, "not_found"),
    ("GET", "/v1/jobs/..%2F..%2Fetc", 404, "not_found"),
    ("GET", "/v1/jobs/20250101-000000-00000000/artifacts/mesh.glb", 404, "not_found"),
    ("DELETE", "/v1/jobs/not-a-job", 404, "not_found"),
    ("PUT", "/v1/jobs", 405, "method_not_allowed"),
    ("POST", "/v1/health", 405, "method_not_allowed"),
    ("POST", "/v1/jobs", 422, "invalid_params"),
])
def test_every_error_has_the_one_error_shape(server, method, path, status, code):
    with server.client() as client:
        response = client.request(method, path)
    assert response.status_code == status
    assert error_of(response)["code"] == code


def test_bad_params_name_the_field(server):
    with server.client() as client:
        cases = {"params.width": {"prompt": "x", "width": 65}, "params.colour": {"prompt": "x", "colour": 1},
                 "params.prompt": {"mode": "video"}, "params.fps": {"prompt": "x", "fps": 8}}
        for field, params in cases.items():
            response = submit(client, params)
            assert response.status_code == 422, response.text
            assert error_of(response)["field"] == field


def test_uploads_are_capped_and_sniffed(server):
    with server.client() as client:
        too_big = submit(client, {"prompt": "x"}, image=b"\x89PNG\r\n\x1a\n" + b"\0" * 2_000_000)
        assert too_big.status_code == 413 and error_of(too_big)["code"] == "payload_too_large"
        too_many_pixels = submit(client, {"prompt": "x"}, image=png_bytes((512, 512)))
        assert too_many_pixels.status_code == 413 and error_of(too_many_pixels)["field"] == "image"
        not_an_image = submit(client, {"prompt": "x"}, image=b"GIF89a" + b"\0" * 100)
        assert not_an_image.status_code == 415
        no_image = client.post("/v1/jobs", data={"params": json.dumps({"prompt": "x"})})
        assert no_image.status_code == 422 and error_of(no_image)["field"] == "image"


def test_a_failing_job_fails_alone_with_its_message_and_the_worker_goes_on(server):
    with server.client() as client:
        first = submit(client, {"prompt": "a cup", "steps": 1}).json()["id"]
        second = submit(client, {"prompt": "a cup", "steps": 1}).json()["id"]
        for job_id in (first, second):
            status = wait_for(client, job_id)
            assert status["status"] == "failed"
            assert status["error"]["code"] == "bad_checkpoint"
            assert "/nonexistent/droplet3d" in status["error"]["message"]
        assert client.get("/v1/health").json()["models"][0]["error"]


def test_finished_jobs_can_be_deleted(server):
    with server.client() as client:
        job_id = submit(client, {"prompt": "a cup"}).json()["id"]
        wait_for(client, job_id)
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404
        assert not (server.jobs_dir / job_id).exists()


def test_retention_keeps_the_newest_finished_jobs(server):
    with server.client() as client:
        ids = [submit(client, {"prompt": f"job {k}"}).json()["id"] for k in range(5)]
        wait_for(client, ids[-1])
        deadline = time.monotonic() + 30  # retention runs right after a job finishes
        while (listed := [j["id"] for j in client.get("/v1/jobs").json()["jobs"]]) != ids[-3:]:
            assert time.monotonic() < deadline, listed
            time.sleep(0.05)
    assert sorted(p.name for p in server.jobs_dir.iterdir()) == sorted(ids[-3:])


def test_no_token_means_loopback_only_and_no_browser_origins(server):
    with server.client() as client:
        assert client.get("/v1/jobs", headers={"Origin": "http://evil.example"}).status_code == 403
        assert client.get("/v1/jobs", headers={"Host": "evil.example"}).status_code == 403  # DNS rebinding
        assert client.get("/v1/jobs", headers={"Host": "localhost:1234"}).status_code == 200
        preflight = client.options("/v1/jobs", headers={"Origin": "http://evil.example",
                                                        "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers


def test_token_guards_every_route_but_health(tmp_path):
    server = Server(tmp_path, "--ckpt", "/nonexistent", "--host", "127.0.0.1", token="s3cret-token").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as anon:
            assert anon.get("/v1/health").json()["auth"] is True
            for method, path in [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/jobs/x"),
                                 ("DELETE", "/v1/jobs/x"), ("GET", "/v1/jobs/x/events")]:
                response = anon.request(method, path)
                assert response.status_code == 401, (method, path, response.text)
                assert error_of(response)["code"] == "unauthorized"
                assert response.headers["www-authenticate"] == "Bearer"
            wrong = anon.get("/v1/jobs", headers={"Authorization": "Bearer s3cret-tokeN"})
            assert wrong.status_code == 401
        with server.client() as client:
            assert client.get("/v1/jobs").status_code == 200
            job_id = submit(client, {"prompt": "x"}).json()["id"]
            assert wait_for(client, job_id)["status"] == "failed"
    finally:
        server.stop()


@pytest.mark.timeout(60)  # a broken check would start serving and never return
def test_serve_refuses_a_public_address_without_a_token(tmp_path):
    from droplet3d.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--port", "0", "--jobs-dir", str(tmp_path)]) == 2


def test_without_ckpt_the_default_hub_model_fails_the_job_clearly_when_it_cannot_be_fetched(tmp_path):
    server = Server(tmp_path).start()  # no --ckpt: DropletX/Droplet3D-5B, fetched on the first job; offline here
    try:
        with server.client() as client:
            health = client.get("/v1/health").json()
            assert health["models"][0]["ckpt"] == "DropletX/Droplet3D-5B" and not health["models"][0]["present"]
            job_id = submit(client, {"prompt": "x", "steps": 1}).json()["id"]
            status = wait_for(client, job_id)
        assert status["status"] == "failed" and "DropletX/Droplet3D-5B" in status["error"]["message"]
    finally:
        server.stop()
