"""Scale out with real processes: a real redis-server, real fronts (``serve --broker``) and real ``droplet3d worker``
processes on tiny checkpoints; and ``serve --workers 2`` in one server."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest
from api_helpers import FAST, Server, sse_statuses, submit, wait_for
from scale_helpers import HEARTBEAT, RedisServer, Worker, free_port

LONG = {**FAST, "prompt": "a long job", "steps": 400}  # stays in denoising long enough to be cancelled or killed


@pytest.fixture
def broker():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def cluster(broker, tiny_ckpts, tmp_path):
    """A front and two workers sharing one jobs folder; stopped (killed if need be) afterwards."""
    jobs = tmp_path / "jobs"
    front = Server(jobs, "--broker", broker.url, "--heartbeat", HEARTBEAT)
    workers = [Worker(broker.url, jobs, tiny_ckpts["droplet3d"], name) for name in ("wa", "wb")]
    started = []
    try:
        for process in (front, *workers):
            process.start()
            started.append(process)
        yield front, workers
    finally:
        for process in started:
            process.kill()


def running_on(client: httpx.Client, job_id: str, timeout: float = 120.0) -> dict:
    return wait_for(client, job_id, ("running",), timeout=timeout,
                    predicate=lambda s: s["stage"] == "denoising" and s["step"])


def test_ten_jobs_spread_over_two_workers_and_each_names_its_worker(cluster):
    front, _ = cluster
    with front.client() as client:
        health = client.get("/v1/health").json()
        assert health["broker"] is True and {w["name"] for w in health["workers"]} == {"wa", "wb"}
        assert all(w["alive"] and w["device"] == "cpu" for w in health["workers"])
        ids = [submit(client, {"prompt": f"job {k}", **FAST, "seed": k}).json()["id"] for k in range(10)]
        events = sse_statuses(client, ids[-1])
        finals = [wait_for(client, job_id, timeout=300) for job_id in ids]
        assert [f["status"] for f in finals] == ["succeeded"] * 10, finals
        assert {f["worker"] for f in finals} == {"wa", "wb"}
        # The front streams the worker's progress and serves the files the worker wrote.
        assert events[-1]["status"] == "succeeded" and "denoising" in {e["stage"] for e in events}
        assert [e["progress"] for e in events] == sorted(e["progress"] for e in events)
        mp4 = next(a for a in finals[0]["artifacts"] if a["name"] == "orbit.mp4")
        assert len(client.get(mp4["url"]).content) == mp4["size"]
        assert [j["id"] for j in client.get("/v1/jobs").json()["jobs"]] == ids


def test_cancel_reaches_the_worker_at_the_next_step(cluster):
    front, _ = cluster
    with front.client() as client:
        job_id = submit(client, LONG).json()["id"]
        running = running_on(client, job_id)
        assert running["worker"] in {"wa", "wb"}
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 202
        cancelled = wait_for(client, job_id, timeout=30)
        assert cancelled["status"] == "cancelled" and cancelled["step"] is None
        assert client.get("/v1/health").json()["running"] == []
        # A queued job is cancelled at once and never runs; a finished one is then deleted.
        after = wait_for(client, submit(client, {"prompt": "after", **FAST}).json()["id"])
        assert after["status"] == "succeeded"
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404


def test_a_killed_workers_job_runs_once_more_elsewhere_then_fails_worker_lost(cluster, broker, tiny_ckpts):
    front, (wa, wb) = cluster
    by_name = {"wa": wa, "wb": wb}
    with front.client() as client:
        first = submit(client, {**FAST, "prompt": "killed once", "steps": 60}).json()["id"]
        victim = by_name[running_on(client, first)["worker"]]
        victim.kill()
        survivor = wb if victim is wa else wa
        done = wait_for(client, first, timeout=120)
        assert done["status"] == "succeeded" and done["worker"] == survivor.name, done

        second = submit(client, {**LONG, "prompt": "killed twice"}).json()["id"]
        assert running_on(client, second)["worker"] == survivor.name
        survivor.kill()
        requeued = wait_for(client, second, ("queued",), timeout=30)  # no worker left: it waits, not "running"
        assert requeued["queue_position"] == 1
        late = Worker(broker.url, front.jobs_dir, tiny_ckpts["droplet3d"], "late").start()  # picks up the queue
        try:
            assert running_on(client, second)["worker"] == "late"
            late.kill()
            lost = wait_for(client, second, timeout=30)
        finally:
            late.kill()
        assert lost["status"] == "failed" and lost["error"]["code"] == "worker_lost", lost
        assert lost["artifacts"] == []


def test_a_restarted_front_keeps_every_queued_running_and_finished_job(cluster):
    front, _ = cluster
    with front.client() as client:
        done = wait_for(client, submit(client, {"prompt": "before", **FAST}).json()["id"])
        ids = [submit(client, {"prompt": f"queued {k}", **FAST, "steps": 8}).json()["id"] for k in range(4)]
        before = [j["status"] for j in client.get("/v1/jobs").json()["jobs"]]
    assert "queued" in before  # 4 jobs for 2 workers: the front dies mid-queue
    front.kill()
    again = Server(front.jobs_dir, *front.args).start()
    try:
        with again.client() as client:
            listed = {j["id"]: j for j in client.get("/v1/jobs").json()["jobs"]}
            assert set(listed) == {done["id"], *ids} and listed[done["id"]] == done
            assert sse_statuses(client, ids[-1])[-1]["status"] == "succeeded"
            assert [wait_for(client, job_id)["status"] for job_id in ids] == ["succeeded"] * 4
    finally:
        again.kill()


def test_serve_with_two_workers_runs_two_jobs_at_once_and_a_dead_model_process_fails_only_its_job(tiny_ckpts,
                                                                                                   tmp_path):
    server = Server(tmp_path, "--ckpt", str(tiny_ckpts["droplet3d"]), "--workers", "2").start()
    try:
        with server.client() as client:
            health = client.get("/v1/health").json()
            assert [w["name"] for w in health["workers"]] == ["cpu-0", "cpu-1"] and health["broker"] is False
            first, second = (submit(client, {**LONG, "prompt": f"long {k}"}).json()["id"] for k in range(2))
            runs = [running_on(client, job_id) for job_id in (first, second)]
            assert {r["worker"] for r in runs} == {"cpu-0", "cpu-1"}  # both at once, one per worker
            workers = {w["name"]: w for w in client.get("/v1/health").json()["workers"]}
            assert sorted(client.get("/v1/health").json()["running"]) == sorted((first, second))
            os.kill(workers[runs[0]["worker"]]["pid"], signal.SIGKILL)
            assert client.delete(f"/v1/jobs/{second}").status_code == 202

            failed, cancelled = wait_for(client, first), wait_for(client, second)
            assert failed["status"] == "failed" and failed["error"]["code"] == "model_process_died"
            assert cancelled["status"] == "cancelled"
            started = time.monotonic()
            ids = [submit(client, {"prompt": f"after {k}", **FAST}).json()["id"] for k in range(4)]
            finals = [wait_for(client, job_id) for job_id in ids]
            assert [f["status"] for f in finals] == ["succeeded"] * 4, time.monotonic() - started
            assert {f["worker"] for f in finals} == {"cpu-0", "cpu-1"}
    finally:
        server.stop()


def test_cpu_workers_keep_one_thread_each_after_jobs_that_load_the_matting_libraries(tiny_ckpts, tmp_path):
    """Two CPU workers on two cores get a thread each. An orbit job loads rembg, whose numba resets OpenMP to every
    core unless the budget is set before it loads: then each idle OpenMP thread spins on the other worker's core."""
    server = Server(tmp_path, "--ckpt", str(tiny_ckpts["droplet3d"]), "--workers", str(os.cpu_count())).start()
    try:
        with server.client() as client:
            ids = [submit(client, {"prompt": f"budget {k}", **FAST}).json()["id"] for k in range(2 * os.cpu_count())]
            assert [wait_for(client, job_id)["status"] for job_id in ids] == ["succeeded"] * len(ids)
            workers = client.get("/v1/health").json()["workers"]
        assert [w["cpu_threads"] for w in workers] == [1] * os.cpu_count()
    finally:
        server.stop()


def test_gpus_and_workers_name_one_model_process_per_device_and_bad_lists_are_refused():
    from droplet3d.api.cli import worker_devices
    from droplet3d.errors import InputError

    assert worker_devices("0,2", None, None) == ((("cuda:0", "cuda:0"), ("cuda:2", "cuda:2")), None)
    names, threads = worker_devices(None, 2, None)
    assert names == (("cpu-0", "cpu"), ("cpu-1", "cpu")) and threads == max(1, (os.cpu_count() or 1) // 2)
    assert worker_devices(None, None, "cuda:1") == ((("local", "cuda:1"),), None)
    for gpus in ("x", "0,0", "-1", ""):
        with pytest.raises(InputError, match="--gpus"):
            worker_devices(gpus, None, None)
    with pytest.raises(InputError, match="--workers"):
        worker_devices(None, 0, None)


def test_serve_refuses_a_broker_that_is_not_redis_and_never_prints_its_password(tmp_path):
    from droplet3d.api.queue_redis import connect, redact
    from droplet3d.cli import main
    from droplet3d.errors import DropletError

    assert main(["serve", "--broker", "http://127.0.0.1:6379", "--jobs-dir", str(tmp_path)]) == 2
    assert redact("redis://:s3cret@host:6379/0") == "redis://***@host:6379/0"
    with pytest.raises(DropletError, match="cannot reach the broker") as caught:
        connect(f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    assert "s3cret" not in str(caught.value)


def test_a_front_whose_broker_goes_away_answers_503_and_recovers_when_it_is_back(broker, tmp_path):
    front = Server(tmp_path / "jobs", "--broker", broker.url, "--heartbeat", HEARTBEAT).start()
    try:
        with front.client() as client:
            queued = submit(client, {"prompt": "waits for a worker", **FAST}).json()["id"]
            broker.stop()
            for response in (client.get("/v1/jobs"), client.get("/v1/health"), submit(client, FAST | {"prompt": "x"})):
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "broker_unreachable"
            broker.start()  # same port, empty (no persistence in the test): the front reconnects by itself
            assert client.get("/v1/health").status_code == 200
            assert client.get(f"/v1/jobs/{queued}").status_code == 404
        assert front.proc.poll() is None
    finally:
        front.kill()


def test_a_model_process_on_cuda_n_sees_only_that_gpu():
    from droplet3d.api.model_process import pin_cuda_device

    env = {}
    assert pin_cuda_device("cuda:1", env) == "cuda" and env == {"CUDA_VISIBLE_DEVICES": "1"}
    env = {"CUDA_VISIBLE_DEVICES": "4,6"}  # the server was given GPUs 4 and 6: cuda:1 is GPU 6
    assert pin_cuda_device("cuda:1", env) == "cuda" and env["CUDA_VISIBLE_DEVICES"] == "6"
    env = {}
    assert pin_cuda_device("cpu", env) == "cpu" and pin_cuda_device("cuda", env) == "cuda" and env == {}


def test_a_broker_with_a_password_serves_jobs_and_a_wrong_one_is_refused_at_start(tiny_ckpts, tmp_path):
    import subprocess

    from api_helpers import DROPLET3D

    broker = RedisServer(password="s3cret").start()
    try:
        wrong = broker.url.replace("s3cret", "wrong")
        refused = subprocess.run([DROPLET3D, "serve", "--port", "0", "--broker", wrong, "--jobs-dir",
                                  str(tmp_path / "jobs")], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and "cannot reach the broker" in refused.stderr
        assert "wrong" not in refused.stderr and "***@127.0.0.1" in refused.stderr

        front = Server(tmp_path / "jobs", "--broker", broker.url, "--heartbeat", HEARTBEAT).start()
        worker = Worker(broker.url, tmp_path / "jobs", tiny_ckpts["droplet3d"], "locked").start()
        try:
            assert "s3cret" not in front.log() + worker.log()
            with front.client() as client:
                done = wait_for(client, submit(client, {"prompt": "behind a password", **FAST}).json()["id"])
            assert done["status"] == "succeeded" and done["worker"] == "locked"
        finally:
            worker.kill()
            front.kill()
    finally:
        broker.stop()


def test_the_front_applies_retention_to_jobs_finished_on_workers(broker, tiny_ckpts, tmp_path):
    jobs = tmp_path / "jobs"
    front = Server(jobs, "--broker", broker.url, "--heartbeat", HEARTBEAT, "--keep-jobs", "1").start()
    worker = Worker(broker.url, jobs, tiny_ckpts["droplet3d"], "keeper").start()
    try:
        with front.client() as client:
            first, second = (wait_for(client, submit(client, {"prompt": f"job {k}", **FAST}).json()["id"])["id"]
                             for k in range(2))
            deadline = time.monotonic() + 30
            while client.get(f"/v1/jobs/{first}").status_code != 404:
                assert time.monotonic() < deadline, "the oldest finished job was never deleted"
                time.sleep(0.2)
            assert not (jobs / first).exists() and (jobs / second / "orbit.mp4").is_file()
            assert [j["id"] for j in client.get("/v1/jobs").json()["jobs"]] == [second]
    finally:
        worker.kill()
        front.kill()
