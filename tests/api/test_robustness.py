"""Load and faults: concurrent submissions, a server killed with SIGKILL in the middle of a job, and its model
process killed the same way."""

from __future__ import annotations

import hashlib
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from api_helpers import FAST, Server, submit, wait_for

TINY_VIDEO = {"mode": "video", "prompt": "quick", "width": 32, "height": 32, "num_frames": 1, "steps": 1}


def test_twenty_concurrent_submissions_all_complete_in_order(model_server):
    with model_server.client() as client, ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda k: submit(client, {**TINY_VIDEO, "seed": k}), range(20)))
        assert [r.status_code for r in responses] == [202] * 20
        ids = {r.json()["id"] for r in responses}
        for job_id in ids:
            wait_for(client, job_id, timeout=300)
        jobs = [j for j in client.get("/v1/jobs").json()["jobs"] if j["id"] in ids]  # listed in queue order
    assert len(jobs) == 20 and all(j["status"] == "succeeded" for j in jobs)
    started = [j["started_at"] for j in jobs]
    finished = [j["finished_at"] for j in jobs]
    assert started == sorted(started) and finished == sorted(finished)
    assert all(a <= b for a, b in zip(finished, started[1:], strict=False))  # one at a time


def test_sigkill_mid_job_keeps_finished_artifacts_and_reports_the_interrupted_job(tiny_ckpts, tmp_path):
    args = ("--ckpt", str(tiny_ckpts["droplet3d"]), "--video-ckpt", str(tiny_ckpts["dropletvideo"]), "--device", "cpu")
    server = Server(tmp_path, *args).start()
    try:
        with server.client() as client:
            done = submit(client, {**TINY_VIDEO, "num_frames": 5}).json()["id"]
            finished = wait_for(client, done)
            assert finished["status"] == "succeeded"
            before = {a["name"]: client.get(a["url"]).content for a in finished["artifacts"]}
            victim = submit(client, {"prompt": "killed mid-run", **FAST, "steps": 400}).json()["id"]
            waiting = submit(client, {**TINY_VIDEO, "prompt": "queued at the crash"}).json()["id"]
            wait_for(client, victim, ("running",), predicate=lambda s: s["stage"] == "denoising" and s["step"])
        server.kill()

        server = Server(tmp_path, *args).start()
        with server.client() as client:
            after = client.get(f"/v1/jobs/{done}").json()
            assert after["status"] == "succeeded" and after["artifacts"] == finished["artifacts"]
            for artifact in after["artifacts"]:
                body = client.get(artifact["url"]).content
                assert body == before[artifact["name"]], artifact["name"]
                assert hashlib.sha256(body).hexdigest() == artifact["sha256"]
            interrupted = client.get(f"/v1/jobs/{victim}").json()
            assert interrupted["status"] == "failed" and interrupted["error"]["code"] == "interrupted"
            assert "server stopped" in interrupted["error"]["message"] and interrupted["artifacts"] == []
            assert wait_for(client, waiting)["status"] == "succeeded"  # queued jobs run after the restart
    finally:
        server.stop()


def parent_pid(pid: int) -> int:
    return int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("PPid:")))


def test_models_stay_loaded_in_one_model_process_between_jobs(model_server):
    with model_server.client() as client:
        first = wait_for(client, submit(client, {"prompt": "first", **FAST}).json()["id"])
        health = client.get("/v1/health").json()
        second = wait_for(client, submit(client, {"prompt": "second", **FAST, "seed": 3}).json()["id"])
        again = client.get("/v1/health").json()
    assert first["status"] == second["status"] == "succeeded"
    worker = health["workers"][0]
    assert worker["alive"] and parent_pid(worker["pid"]) == model_server.proc.pid  # a child of the server
    assert again["workers"][0] == worker  # the same process ran both jobs: no restart, no reload
    orbit = {m["role"]: m for m in health["models"]}["orbit"]
    assert orbit["loaded"] and orbit["details"]["device"] == "cpu" and health["device"] == "cpu"
    assert {m["role"]: m for m in again["models"]}["orbit"] == orbit


def test_model_process_killed_mid_job_fails_that_job_only_and_a_fresh_one_runs_the_next(tiny_ckpts, tmp_path):
    server = Server(tmp_path, "--ckpt", str(tiny_ckpts["droplet3d"]), "--device", "cpu").start()
    try:
        with server.client() as client:
            victim = submit(client, {"prompt": "killed mid-run", **FAST, "steps": 400}).json()["id"]
            wait_for(client, victim, ("running",), predicate=lambda s: s["stage"] == "denoising" and s["step"])
            killed = client.get("/v1/health").json()["workers"][0]["pid"]
            assert parent_pid(killed) == server.proc.pid
            os.kill(killed, signal.SIGKILL)

            failed = wait_for(client, victim)
            assert failed["status"] == "failed" and failed["error"]["code"] == "model_process_died"
            assert "model process exited unexpectedly (signal 9) while running this job" in failed["error"]["message"]
            health = client.get("/v1/health")
            assert health.status_code == 200 and health.json()["workers"][0]["alive"] is False

            after = wait_for(client, submit(client, {"prompt": "after the crash", **FAST}).json()["id"])
            assert after["status"] == "succeeded", after
            worker = client.get("/v1/health").json()["workers"][0]
            assert worker["alive"] and worker["pid"] != killed and worker["restarts"] == 1
        assert server.proc.poll() is None
    finally:
        server.stop()
