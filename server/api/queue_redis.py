"""The Redis back-end: ``droplet3d serve --broker redis://…`` is a front, ``droplet3d worker`` runs the jobs.

Jobs travel on an RQ queue (docs/scale-out.md says why RQ); RQ owns delivery, worker registration, heartbeats,
the one retry and abandoned-job detection. What RQ does not know lives in a few keys of ours:

- ``droplet3d:job:<id>``   the job's record (store.Job as JSON), written by the front (submit, cancel, loss) and
                            by the worker running it (start, progress, outcome) in WATCH transactions;
- ``droplet3d:jobs``        submission order (a sorted set by seq) and ``droplet3d:seq``, its counter;
- ``droplet3d:cancel:<id>`` a running job's cancel request, read by its worker at each step;
- ``droplet3d:worker:<name>`` each live worker's report (device, models, job), expiring with its heartbeat;
- ``droplet3d:events``      a channel carrying the id of each job that changed: the fronts' SSE streams follow it.

Files travel through the jobs folder, which fronts and workers share (docs/scale-out.md): the front stages the
upload into ``<jobs-dir>/<id>`` and the worker writes the outputs beside it.

A worker killed mid-job stops beating; the front's sweep (RQ's StartedJobRegistry cleanup, every heartbeat/2)
then finds the job abandoned: RQ re-queues it once (``Retry(max=1)``) and fails it the second time, and
:func:`on_rq_failure` mirrors both into the record (queued again, then ``worker_lost``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .http_errors import ApiError
from .queue import WORKER_LOST_MESSAGE, JobQueue, Streams, expired, finish, public_status, send
from .settings import Settings
from .store import Job, JobStore

log = logging.getLogger(__name__)

PREFIX = "droplet3d"
QUEUE_NAME = PREFIX
EVENTS = f"{PREFIX}:events"
JOBS_INDEX, SEQ = f"{PREFIX}:jobs", f"{PREFIX}:seq"
WORKERS = f"{PREFIX}:workers"
FAILED_RQ_JOB_TTL = 7 * 24 * 3600  # RQ's own copy of a failed job; our record is what clients see


def job_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def cancel_key(job_id: str) -> str:
    return f"{PREFIX}:cancel:{job_id}"


def worker_key(name: str) -> str:
    return f"{PREFIX}:worker:{name}"


def connect(url: str):
    """A client for the broker URL (redis://[:password@]host:port/db, rediss:// for TLS, unix://); raw bytes,
    as RQ requires. Raises a clear error when the broker does not answer."""
    import redis

    from ..errors import DropletError

    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise DropletError(f"cannot reach the broker {redact(url)}: {exc}", code="broker_unreachable") from exc
    return client


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.rsplit('@', 1)[1]}"


class RedisJobs:
    """The job records on the broker; shared by fronts, workers and RQ's failure callback."""

    def __init__(self, client) -> None:
        self.redis = client

    def get(self, job_id: str) -> Job | None:
        raw = self.redis.get(job_key(job_id))
        return None if raw is None else Job.from_record(json.loads(raw))

    def all(self) -> list[Job]:
        ids = [i.decode() for i in self.redis.zrange(JOBS_INDEX, 0, -1)]
        raws = self.redis.mget([job_key(i) for i in ids]) if ids else []
        return [Job.from_record(json.loads(raw)) for raw in raws if raw is not None]

    def add(self, job: Job, pipeline) -> None:
        pipeline.set(job_key(job.id), json.dumps(job.record()))
        pipeline.zadd(JOBS_INDEX, {job.id: job.seq})
        pipeline.publish(EVENTS, job.id)

    def update(self, job_id: str, change: Callable[[Job], bool]) -> Job | None:
        """Apply ``change`` to the record atomically (retried if another writer got in first); it returns False to
        leave the record alone. Returns the record as it now stands, or None when there is no such job."""
        import redis

        key = job_key(job_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        return None
                    job = Job.from_record(json.loads(raw))
                    if not change(job):
                        pipe.unwatch()
                        return job
                    pipe.multi()
                    pipe.set(key, json.dumps(job.record()))
                    pipe.publish(EVENTS, job_id)
                    pipe.execute()
                    return job
                except redis.WatchError:
                    continue

    def delete(self, job_id: str) -> None:
        with self.redis.pipeline() as pipe:
            pipe.delete(job_key(job_id), cancel_key(job_id))
            pipe.zrem(JOBS_INDEX, job_id)
            pipe.publish(EVENTS, job_id)
            pipe.execute()


def on_rq_failure(rq_job, connection, exc_type, exc_value, _traceback) -> None:
    """RQ's failure callback. Our job function reports every failure inside a job itself, so what lands here is
    RQ's: an abandoned job (its worker stopped beating) or a worker that broke outside the job. RQ re-queues the
    job while it has a retry left; the record follows, and the second loss fails it for good."""
    from rq.exceptions import AbandonedJobError

    lost = isinstance(exc_value, AbandonedJobError)
    again = bool(rq_job.retries_left)

    def change(job: Job) -> bool:
        if job.finished:
            return False
        log.warning("job %s: worker %s %s; %s", job.id, job.worker, "lost" if lost else f"failed: {exc_value}",
                    "queued again" if again else "failed")
        if again:
            job.status = job.stage = "queued"
            job.progress, job.step, job.total, job.eta_seconds = 0.0, None, None, None
        elif lost:
            finish(job, "failed", {"code": "worker_lost", "message": WORKER_LOST_MESSAGE})
        else:
            finish(job, "failed", {"code": "internal_error", "message": f"the worker failed: {exc_value}"})
        return True

    RedisJobs(connection).update(rq_job.id, change)


class RedisQueue(JobQueue):
    """The front: validates and stores uploads (routes), enqueues, answers from the broker's state."""

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings, self.store = settings, store
        self._lock = threading.Lock()
        self._streams = Streams()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.redis = self.jobs = self.queue = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        from rq import Queue

        self.redis = connect(self.settings.broker)
        self.jobs = RedisJobs(self.redis)
        self.queue = Queue(QUEUE_NAME, connection=self.redis)
        log.info("front of broker %s: %d queued jobs", redact(self.settings.broker), self.queue.count)
        for target in (self._follow_events, self._sweep):
            thread = threading.Thread(target=target, name=f"droplet-{target.__name__.strip('_')}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Jobs live on the broker: the front only stops its own threads."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(min(timeout, 5.0))

    # -- HTTP side ----------------------------------------------------------------------------------
    def submit(self, staging: Path, job: Job) -> Job:
        from rq import Callback, Retry

        from .queue_redis_worker import run_queued_job

        if self.queue.count >= self.settings.max_queue:
            raise ApiError(429, f"the queue is full ({self.settings.max_queue} jobs); try again later",
                           headers={"Retry-After": "30"})
        job.seq = int(self.redis.incr(SEQ))
        self.store.commit(staging, job)
        try:
            with self.redis.pipeline() as pipe:  # the record and the queue entry appear together
                pipe.multi()
                self.jobs.add(job, pipe)
                self.queue.enqueue(run_queued_job, job.id, job_id=job.id, retry=Retry(max=1), job_timeout=-1,
                                   result_ttl=0, failure_ttl=FAILED_RQ_JOB_TTL, on_failure=Callback(on_rq_failure),
                                   description=f"{job.mode} job {job.id}", pipeline=pipe)
                pipe.execute()
        except BaseException:
            self.store.remove(job.id)
            raise
        return job

    def snapshot(self, job_id: str) -> dict[str, Any] | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        position = None
        if job.status == "queued":
            index = self.queue.get_job_position(job_id)
            position = None if index is None else index + 1
        return public_status(job, position)

    def exists(self, job_id: str) -> bool:
        return bool(self.redis.exists(job_key(job_id)))

    def list(self) -> list[dict[str, Any]]:
        order = {job_id: index + 1 for index, job_id in enumerate(self.queue.get_job_ids())}
        return [public_status(job, order.get(job.id)) for job in self.jobs.all()]

    def subscribe(self, job_id: str, loop, queue) -> dict[str, Any] | None:
        with self._lock:  # registered first: a change from now on reaches the stream, at worst twice
            self._streams.add(job_id, loop, queue)
        snapshot = self.snapshot(job_id)
        if snapshot is None:
            self.unsubscribe(job_id, queue)
        return snapshot

    def unsubscribe(self, job_id: str, queue) -> None:
        with self._lock:
            self._streams.remove(job_id, queue)

    def artifact_path(self, job_id: str, name: str) -> Path | None:
        job = self.jobs.get(job_id)
        if job is None or not any(a["name"] == name for a in job.artifacts):
            return None
        return self.store.path(job_id) / name

    def cancel_or_delete(self, job_id: str) -> dict[str, Any] | None:
        cancelled = False

        def cancel_queued(job: Job) -> bool:
            nonlocal cancelled
            cancelled = job.status == "queued"
            if cancelled:
                finish(job, "cancelled", None)
            return cancelled

        job = self.jobs.update(job_id, cancel_queued)
        if job is None:
            raise ApiError(404, f"no job {job_id}")
        if cancelled:
            self.queue.remove(job_id)  # a worker that took it meanwhile finds it cancelled and skips it
            self.store.save(job)
        elif job.status == "running":
            self.redis.set(cancel_key(job_id), 1, ex=7 * 24 * 3600)
            self.redis.publish(EVENTS, job_id)
        elif job.finished:
            self._delete(job_id)
            return None
        return self.snapshot(job_id)

    def _delete(self, job_id: str) -> None:
        from rq.job import Job as RQJob

        self.jobs.delete(job_id)
        with contextlib.suppress(Exception):  # RQ may have dropped its copy already
            RQJob.fetch(job_id, connection=self.redis).delete()
        with contextlib.suppress(ValueError, OSError):  # another front deleted the folder first
            self.store.remove(job_id)

    def health(self) -> dict[str, Any]:
        names = sorted(n.decode() for n in self.redis.smembers(WORKERS))
        raws = self.redis.mget([worker_key(n) for n in names]) if names else []
        workers = []
        for name, raw in zip(names, raws, strict=True):
            if raw is None:  # its report expired: the worker is gone
                self.redis.srem(WORKERS, name)
            else:
                workers.append(json.loads(raw))
        running = [job.id for job in self.jobs.all() if job.status == "running"]  # the records, not the reports
        return {"workers": workers, "queue_length": self.queue.count, "broker": True, "running": running}

    # -- background threads --------------------------------------------------------------------------
    def _follow_events(self) -> None:
        """Relay the broker's job changes to this front's SSE streams."""
        import redis

        while not self._stopping.is_set():
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(EVENTS)
                with self._lock:
                    followed = self._streams.followed()
                self._push(followed)  # whatever changed while we were not listening
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self._push([message["data"].decode()])
            except redis.RedisError as exc:
                log.warning("lost the broker's events (%s); following again", exc)
                self._stopping.wait(1.0)

    def _push(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            with self._lock:
                streams = self._streams.of(job_id)
            snapshot = self.snapshot(job_id) if streams else None
            if snapshot is not None:
                send(streams, snapshot)

    def _sweep(self) -> None:
        """Find jobs whose worker stopped beating (RQ re-queues or fails them) and apply retention."""
        from rq.registry import StartedJobRegistry
        from rq.timeouts import TimerDeathPenalty

        interval = max(self.settings.heartbeat_seconds / 2, 0.5)
        registry = StartedJobRegistry(queue=self.queue, death_penalty_class=TimerDeathPenalty)  # not the main thread
        while not self._stopping.wait(interval):
            try:
                # RQ's own maintenance lock, held briefly so that a front killed while holding it blocks nothing long
                if self.redis.set(self.queue.registry_cleaning_key, 1, nx=True, ex=max(int(interval * 2), 1)):
                    try:
                        registry.cleanup()
                    finally:
                        self.queue.release_maintenance_lock()
                self.apply_retention()
            except Exception as exc:  # the broker away for a while: try again next time
                log.warning("sweep failed: %s", exc)

    def apply_retention(self) -> list[str]:
        doomed = expired(self.jobs.all(), self.settings, self.store)
        for job_id in doomed:
            self._delete(job_id)
            log.info("retention: deleted job %s", job_id)
        return doomed
