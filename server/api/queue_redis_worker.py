"""``droplet3d worker``: an RQ worker that runs the jobs of ``droplet3d serve --broker`` fronts with its models warm.

It is RQ's SimpleWorker (jobs run in this process, one at a time, so nothing is forked per job) with two changes:
the execution heartbeat is short (``--heartbeat``), so that a worker killed mid-job is noticed in seconds, not
minutes, and it beats from a thread while the job runs, since the job can take far longer than any fixed TTL.
The model work itself runs in this worker's model process (model_process.py), exactly as in the embedded server,
through :func:`~droplet3d.api.worker.run_attempt`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rq import Queue, SimpleWorker
from rq.worker import WorkerStatus

from .model_process import ModelProcess
from .progress import ProgressTracker, stages_for
from .queue import finish
from .queue_redis import QUEUE_NAME, WORKERS, RedisJobs, cancel_key, connect, redact, worker_key
from .settings import Settings
from .store import JOB_FILE, Job, JobStore
from .worker import run_attempt

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.2  # how often a running job's cancel request is read from the broker


@dataclass
class WorkerContext:
    name: str
    settings: Settings
    models: ModelProcess
    jobs: RedisJobs
    store: JobStore
    job: str | None = None  # the job running now


# RQ calls run_queued_job by its import path, in this process: this is what it runs jobs with.
CONTEXT: WorkerContext | None = None


class DropletWorker(SimpleWorker):
    """SimpleWorker with a short execution heartbeat, kept up from a thread while a job runs."""

    def __init__(self, *args, heartbeat: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.heartbeat_ttl = max(math.ceil(heartbeat), 1)

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        return self.heartbeat_ttl

    def execute_job(self, job, queue) -> None:
        execution = self.prepare_execution(job)
        done = threading.Event()
        beat = threading.Thread(target=self._beat, args=(job, execution, done), name="droplet-heartbeat", daemon=True)
        beat.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            done.set()
            beat.join()
        self.set_state(WorkerStatus.IDLE)

    def _beat(self, job, execution, done: threading.Event) -> None:
        while not done.wait(self.heartbeat_ttl / 3):
            try:
                self.maintain_heartbeats(job, execution)
            except Exception as exc:  # the broker away for a moment: beat again next time
                log.warning("heartbeat failed: %s", exc)


def run_worker(settings: Settings, name: str) -> int:
    """Warm the models, then serve the queue until SIGINT/SIGTERM (RQ finishes the running job first)."""
    global CONTEXT
    client = connect(settings.broker)
    models = ModelProcess(settings, name=name)
    context = CONTEXT = WorkerContext(name, settings, models, RedisJobs(client), JobStore(settings.jobs_dir))
    models.start()
    stop = threading.Event()
    reporter = threading.Thread(target=report_loop, args=(context, client, stop), name="droplet-report", daemon=True)
    reporter.start()
    worker = DropletWorker([Queue(QUEUE_NAME, connection=client)], name=name, connection=client,
                           heartbeat=settings.heartbeat_seconds)
    # The line tests and operators wait for.
    print(f"droplet3d worker {name}: serving {redact(settings.broker)} (jobs in {settings.jobs_dir})", flush=True)
    try:
        worker.work(with_scheduler=False)
    finally:
        stop.set()
        reporter.join(5)
        with contextlib.suppress(Exception):
            client.delete(worker_key(name))
            client.srem(WORKERS, name)
        models.close()
    return 0


def report_loop(context: WorkerContext, client, stop: threading.Event) -> None:
    """Keep this worker's report (a WorkerInfo of /v1/health) on the broker; it expires when we stop beating."""
    interval = max(context.settings.heartbeat_seconds / 3, 0.2)
    ttl_ms = max(int(context.settings.heartbeat_seconds * 1000), 1000)
    while True:
        report = {"name": context.name, **context.models.health(), "job": context.job}
        try:
            with client.pipeline() as pipe:
                pipe.set(worker_key(context.name), json.dumps(report), px=ttl_ms)
                pipe.sadd(WORKERS, context.name)
                pipe.execute()
        except Exception as exc:
            log.warning("cannot report to the broker: %s", exc)
        if stop.wait(interval):
            return


def run_queued_job(job_id: str) -> None:
    """RQ's job function: run one of our jobs here, mirroring its progress and outcome into its record."""
    context = CONTEXT
    if context is None:
        raise RuntimeError("run_queued_job runs inside `droplet3d worker` only")
    job = claim(context, job_id)
    if job is None:
        return
    context.job = job_id
    try:
        run_claimed(context, job)
    finally:
        context.job = None


def claim(context: WorkerContext, job_id: str) -> Job | None:
    """queued → running on this worker, atomically; None when the job was cancelled or deleted meanwhile. RQ hands
    out a job only while it is queued on RQ's side, so a record still "running" is a lost attempt's that was not
    mirrored (the failure callback failed): take it over rather than leave it running forever."""

    def start(job: Job) -> bool:
        if job.status not in ("queued", "running"):
            return False
        job.status, job.started_at, job.worker, job.attempts = "running", time.time(), context.name, job.attempts + 1
        job.stage = stages_for(job.mode, bool(job.params.get("view_align")))[0]
        return True

    job = context.jobs.update(job_id, start)
    if job is None or job.status != "running" or job.worker != context.name:
        log.info("job %s is no longer queued: skipped", job_id)
        return None
    return job


def run_claimed(context: WorkerContext, job: Job) -> None:
    job_dir = context.store.path(job.id)
    if job.attempts > 1:
        clear_outputs(job_dir, job)
    tracker = ProgressTracker(stages_for(job.mode, bool(job.params.get("view_align"))))
    attempt = job.attempts
    lost = threading.Event()  # the front took the job from us (our heartbeat was late): stop writing into its folder

    def mine(record: Job) -> bool:
        """A record this attempt may still write: not finished, nor handed to another worker after a loss."""
        return not record.finished and record.worker == context.name and record.attempts == attempt

    def progress(stage: str, step: int, total: int, _elapsed: float) -> None:
        tracker.update(stage, int(step or 0), int(total or 0))

        def change(record: Job) -> bool:
            if not mine(record):
                lost.set()
                return False
            record.stage, record.progress = stage, round(tracker.fraction, 4)
            record.step, record.total = (int(step), int(total)) if total else (None, None)
            record.eta_seconds = tracker.eta()
            return True

        context.jobs.update(job.id, change)

    checked = [0.0, False]  # when the cancel key was last read, and what it said

    def should_cancel() -> bool:
        return lost.is_set() or cancel_requested()

    def cancel_requested() -> bool:
        now = time.monotonic()
        if not checked[1] and now - checked[0] >= CANCEL_POLL_SECONDS:
            checked[:] = [now, bool(context.jobs.redis.exists(cancel_key(job.id)))]
        return checked[1]

    outcome = run_attempt(context.models, job, job_dir, progress, should_cancel=should_cancel,
                          cancel_requested=cancel_requested)

    def record_outcome(record: Job) -> bool:
        if not mine(record):
            return False
        record.artifacts, record.warnings = outcome.artifacts, outcome.warnings
        finish(record, outcome.status, outcome.error)
        return True

    final = context.jobs.update(job.id, record_outcome)
    if final is not None and final.finished and final.worker == context.name:
        context.store.save(final)  # job.json beside the outputs, for anyone reading the shared folder
    log.info("job %s: %s", job.id, outcome.status)


def clear_outputs(job_dir: Path, job: Job) -> None:
    """Before a second attempt: remove what the lost one wrote, keeping job.json and the uploaded inputs."""
    keep = {JOB_FILE, *(Path(path).parts[0] for path in job.inputs.values())}
    for entry in job_dir.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
