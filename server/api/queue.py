"""The one queue interface the HTTP routes use, whichever back-end runs the jobs.

- :class:`~droplet3d.api.worker.EmbeddedQueue` (the default): an in-process queue and one model process per
  device (``--gpus``) or per CPU worker (``--workers``), all inside ``droplet3d serve``.
- :class:`~droplet3d.api.queue_redis.RedisQueue` (``--broker redis://…``): the server is a front; jobs travel on
  an RQ queue to ``droplet3d worker`` processes on any machine that shares the jobs folder.

Both keep each job as the one :class:`~droplet3d.api.store.Job` record and answer with :func:`public_status`.
"""

from __future__ import annotations

import abc
import contextlib
import time
from pathlib import Path
from typing import Any

from .schemas import JobStatus
from .settings import Settings
from .store import Job, JobStore, select_expired

WORKER_LOST_MESSAGE = ("the worker running this job was lost twice (killed, or its machine went away): "
                       "submit it again")
STATUS_FIELDS = tuple(JobStatus.model_fields)


def public_status(job: Job, queue_position: int | None = None, eta_seconds: float | None = None) -> dict[str, Any]:
    """The status JSON of the contract, from the one record: every JobStatus field the record has, plus what only
    the queue knows (the position, and a live ETA where it has one)."""
    status = {name: getattr(job, name, None) for name in STATUS_FIELDS}
    status["queue_position"] = queue_position if job.status == "queued" else None
    if eta_seconds is not None:
        status["eta_seconds"] = eta_seconds
    status["error"] = None if job.error is None else dict(job.error)
    return status


def finish(job: Job, outcome: str, error: dict[str, Any] | None) -> None:
    """Record a terminal state on the record (the caller holds whatever lock guards it)."""
    job.status, job.error, job.finished_at, job.eta_seconds = outcome, error, time.time(), None
    job.stage = "done" if outcome == "succeeded" else outcome
    job.step = job.total = None
    if outcome == "succeeded":
        job.progress = 1.0


def expired(jobs: list[Job], settings: Settings, store: JobStore) -> list[str]:
    """The finished jobs that retention (--keep-jobs, --max-age-hours, --max-disk-gb) deletes now, oldest first."""
    s = settings
    sizes = {j.id: store.size_of(j.id) for j in jobs} if s.max_disk_bytes is not None else {}
    max_age = None if s.max_age_hours is None else s.max_age_hours * 3600
    return select_expired(jobs, sizes, keep=s.keep_jobs, max_age_s=max_age, max_bytes=s.max_disk_bytes,
                          now=time.time())


class Streams:
    """The SSE streams following each job, as (event loop, asyncio.Queue) pairs. The owning queue's lock guards it."""

    def __init__(self) -> None:
        self._by_job: dict[str, list[tuple[Any, Any]]] = {}

    def add(self, job_id: str, loop, queue) -> None:
        self._by_job.setdefault(job_id, []).append((loop, queue))

    def remove(self, job_id: str, queue) -> None:
        kept = [(lp, q) for lp, q in self._by_job.get(job_id, []) if q is not queue]
        if kept:
            self._by_job[job_id] = kept
        else:
            self._by_job.pop(job_id, None)

    def followed(self) -> list[str]:
        return list(self._by_job)

    def of(self, job_id: str) -> list[tuple[Any, Any]]:
        return list(self._by_job.get(job_id, ()))


def send(streams: list[tuple[Any, Any]], snapshot: dict[str, Any]) -> None:
    """Hand a status to each stream on its own event loop (safe from any thread)."""
    for loop, queue in streams:
        with contextlib.suppress(RuntimeError):  # that stream's loop has closed
            loop.call_soon_threadsafe(queue.put_nowait, snapshot)


class JobQueue(abc.ABC):
    """What the routes need from a queue. Snapshots are ``public_status`` dicts; ``None`` means no such job."""

    @abc.abstractmethod
    def start(self) -> None:
        """Recover the jobs kept from before and start running them."""

    @abc.abstractmethod
    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; nothing queued is lost."""

    @abc.abstractmethod
    def submit(self, staging: Path, job: Job) -> Job:
        """Move the staged upload into place as the job's folder and queue it (429 when the queue is full)."""

    @abc.abstractmethod
    def snapshot(self, job_id: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def exists(self, job_id: str) -> bool: ...

    @abc.abstractmethod
    def list(self) -> list[dict[str, Any]]:
        """Every job's status in submission order."""

    @abc.abstractmethod
    def subscribe(self, job_id: str, loop, queue) -> dict[str, Any] | None:
        """Put every later status of the job on the asyncio ``queue`` (thread-safely, through ``loop``); returns the
        current status, taken so that no change falls between the two."""

    @abc.abstractmethod
    def unsubscribe(self, job_id: str, queue) -> None: ...

    @abc.abstractmethod
    def artifact_path(self, job_id: str, name: str) -> Path | None:
        """The file behind a listed artifact name; None for anything the job does not list."""

    @abc.abstractmethod
    def cancel_or_delete(self, job_id: str) -> dict[str, Any] | None:
        """Queued → cancelled at once; running → cancelled at its next step; finished → deleted (returns None)."""

    @abc.abstractmethod
    def health(self) -> dict[str, Any]:
        """``workers``, ``queue_length``, ``running`` and ``broker`` of ``/v1/health``."""
