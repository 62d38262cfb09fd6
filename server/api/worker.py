"""The embedded queue: a FIFO queue and one worker thread per model process, all inside ``droplet3d serve``.

The HTTP side only enqueues, cancels and reads snapshots under a short lock. Each worker thread owns one model
process (model_process.py: one per GPU with ``--gpus``, or per CPU worker with ``--workers``), takes the first
queued job when it is free, hands the model work to its process and records what it reports, so no route ever
waits for the GPU or the GIL. An exception inside a job, or a model process dying, fails that job alone, with its
message, and that worker takes the next one.

:func:`run_attempt` (one job on one model process → its outcome) is shared with the Redis worker.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import Cancelled, DropletError, InputError
from .artifacts import list_artifacts
from .http_errors import ApiError
from .model_process import ModelProcess
from .progress import ProgressTracker, stages_for
from .queue import JobQueue, Streams, expired, finish, public_status, send
from .settings import Settings
from .store import Job, JobStore

log = logging.getLogger(__name__)

SHUTDOWN_MESSAGE = "the server was shut down while this job was running: submit it again"


@dataclass
class Outcome:
    status: str  # succeeded, failed or cancelled
    error: dict[str, Any] | None = None
    warnings: list[dict[str, str]] = field(default_factory=list)  # {code, message}
    artifacts: list[dict[str, Any]] = field(default_factory=list)


def run_attempt(models: ModelProcess, job: Job, job_dir: Path, progress: Callable[[str, int, int, float], None],
                should_cancel: Callable[[], bool], cancel_requested: Callable[[], bool]) -> Outcome:
    """Run ``job`` on ``models`` into ``job_dir``. ``should_cancel`` stops it (a user's cancel or a shutdown);
    ``cancel_requested`` tells the two apart afterwards. Never raises for what happens inside the job."""
    try:
        warnings = models.run(job.mode, job.params, job.inputs, job_dir, progress=progress,
                              should_cancel=should_cancel)
    except Cancelled as exc:
        log.info("job %s stopped (%s)", job.id, exc)
        if cancel_requested():
            return Outcome("cancelled")
        return Outcome("failed", {"code": "interrupted", "message": SHUTDOWN_MESSAGE})
    except DropletError as exc:
        log.warning("job %s failed: %s", job.id, exc)
        error = {"code": exc.code, "message": exc.message}
        if isinstance(exc, InputError) and exc.field:
            error["field"] = exc.field
        return Outcome("failed", error)
    except Exception as exc:  # a bug or a resource failure inside the job: fail this job only
        log.exception("job %s failed", job.id)
        return Outcome("failed", {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"})
    artifacts = [{**a, "url": f"/v1/jobs/{job.id}/artifacts/{a['name']}"} for a in list_artifacts(job_dir)]
    return Outcome("succeeded", None, warnings, artifacts)


@dataclass
class _Slot:
    """One worker thread and its model process."""

    name: str
    models: ModelProcess
    job: Job | None = None
    tracker: ProgressTracker | None = None
    thread: threading.Thread | None = None


class EmbeddedQueue(JobQueue):
    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings, self.store = settings, store
        self._slots = [_Slot(name, ModelProcess(replace(settings, device=device), name=name))
                       for name, device in settings.workers]
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._queue: deque[str] = deque()
        self._stopping = False
        self._seq = 0
        self._history: dict[str, dict[str, float]] = {}  # mode → stage durations of its last success
        self._last_duration: dict[str, float] = {}  # mode → seconds its last success took
        self._streams = Streams()

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        jobs, interrupted = self.store.load_all()
        for job in interrupted:
            log.warning("job %s was running when the server stopped: marked failed (interrupted)", job.id)
        with self._lock:
            for job in jobs:
                self._jobs[job.id] = job
                if job.status == "queued":
                    self._queue.append(job.id)
            self._seq = max((j.seq for j in jobs), default=0)
        self.apply_retention()
        for slot in self._slots:
            slot.thread = threading.Thread(target=self._work, args=(slot,), name=f"droplet-worker-{slot.name}",
                                           daemon=True)
            slot.thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; running ones stop at their next step and are marked failed (they can be resubmitted).
        Queued jobs stay queued on disk and run after the next start."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        deadline = time.monotonic() + timeout
        for slot in self._slots:
            if slot.thread is not None:
                slot.thread.join(max(deadline - time.monotonic(), 0.1))
        for slot in self._slots:
            slot.models.close()

    # -- HTTP side ----------------------------------------------------------------------------------
    def submit(self, staging: Path, job: Job) -> Job:
        with self._wakeup:
            if self._stopping:
                raise ApiError(409, "the server is shutting down", code="shutting_down")
            if len(self._queue) >= self.settings.max_queue:
                raise ApiError(429, f"the queue is full ({self.settings.max_queue} jobs); try again later",
                               headers={"Retry-After": "30"})
            self._seq += 1
            job.seq = self._seq
            self.store.commit(staging, job)
            self._jobs[job.id] = job
            self._queue.append(job.id)
            self._wakeup.notify()
        return job

    def snapshot(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else self._public(job)

    def exists(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._jobs

    def subscribe(self, job_id: str, loop, queue) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            self._streams.add(job_id, loop, queue)
            return self._public(job)

    def unsubscribe(self, job_id: str, queue) -> None:
        with self._lock:
            self._streams.remove(job_id, queue)

    def _publish(self, job: Job) -> None:
        """Under the lock: hand the new status to the job's SSE streams."""
        streams = self._streams.of(job.id)
        if streams:
            send(streams, self._public(job))

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._public(job) for job in sorted(self._jobs.values(), key=lambda j: j.seq)]

    def artifact_path(self, job_id: str, name: str) -> Path | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or not any(a["name"] == name for a in job.artifacts):
                return None
        return self.store.path(job_id) / name

    def cancel_or_delete(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise ApiError(404, f"no job {job_id}")
            if job.status == "queued":
                self._queue.remove(job_id)
                finish(job, "cancelled", None)
                self._publish(job)
            elif job.status == "running":
                job.cancel_requested = True
                self._publish(job)
            else:
                del self._jobs[job_id]
                snapshot = None
            if job_id in self._jobs:
                snapshot = self._public(job)
        if snapshot is None:
            self.store.remove(job_id)
        elif job.status == "cancelled":
            self.store.save(job)
        return snapshot

    def health(self) -> dict[str, Any]:
        with self._lock:
            running = {slot.name: slot.job.id for slot in self._slots if slot.job is not None}
            queue_length = len(self._queue)
        workers = [{"name": slot.name, **slot.models.health(), "job": running.get(slot.name)} for slot in self._slots]
        return {"workers": workers, "queue_length": queue_length, "running": list(running.values()), "broker": False}

    # -- worker threads ---------------------------------------------------------------------------------
    def _work(self, slot: _Slot) -> None:
        try:
            slot.models.start()
        except Exception as exc:  # the next job starts a fresh model process
            log.warning("model process %s start failed (jobs will retry): %s", slot.name, exc)
        while True:
            with self._wakeup:
                while not self._queue and not self._stopping:
                    self._wakeup.wait()
                if self._stopping:
                    return
                job = self._jobs[self._queue.popleft()]
                slot.job = job
                slot.tracker = ProgressTracker(stages_for(job.mode, bool(job.params.get("view_align"))),
                                               self._history.get(job.mode))
                job.status, job.stage, job.started_at = "running", slot.tracker.stages[0], time.time()
                job.worker, job.attempts = slot.name, job.attempts + 1
                self._publish(job)
            try:
                self.store.save(job)
                self._execute(slot, job)
            except Exception:  # bookkeeping failed (disk full...): fail the job, keep the worker
                log.exception("job %s: worker error", job.id)
                with self._lock:
                    if not job.finished:
                        finish(job, "failed", {"code": "internal_error", "message": "worker error; see log"})
                        self._publish(job)
            finally:
                with self._lock:
                    slot.job = slot.tracker = None
            self.apply_retention()

    def _progress(self, slot: _Slot, job: Job, stage: str, step: int, total: int, _elapsed: float) -> None:
        with self._lock:
            new_stage = stage != job.stage
            slot.tracker.update(stage, int(step or 0), int(total or 0))
            job.stage, job.progress = stage, round(slot.tracker.fraction, 4)
            job.step, job.total = (int(step), int(total)) if total else (None, None)
            self._publish(job)
        if new_stage:
            self.store.save(job)

    def _execute(self, slot: _Slot, job: Job) -> None:
        outcome = run_attempt(slot.models, job, self.store.path(job.id),
                              progress=lambda *a: self._progress(slot, job, *a),
                              should_cancel=lambda: job.cancel_requested or self._stopping,
                              cancel_requested=lambda: job.cancel_requested)
        with self._lock:
            job.artifacts, job.warnings = outcome.artifacts, outcome.warnings
            if outcome.status == "succeeded":
                self._history[job.mode] = slot.tracker.finish()
                self._last_duration[job.mode] = time.time() - job.started_at
            finish(job, outcome.status, outcome.error)
            self._publish(job)
        self.store.save(job)

    # -- retention ---------------------------------------------------------------------------------------
    def apply_retention(self) -> list[str]:
        with self._lock:
            jobs = list(self._jobs.values())
        doomed = expired(jobs, self.settings, self.store)
        for job_id in doomed:
            with self._lock:
                job = self._jobs.get(job_id)
                if job is None or not job.finished:
                    continue
                del self._jobs[job_id]
            try:
                self.store.remove(job_id)
                log.info("retention: deleted job %s", job_id)
            except (OSError, ValueError) as exc:
                log.warning("retention: could not delete job %s: %s", job_id, exc)
        return doomed

    # -- status --------------------------------------------------------------------------------------------
    def _public(self, job: Job) -> dict[str, Any]:
        """Under the lock."""
        if job.status == "queued":
            position = self._queue.index(job.id) + 1
            return public_status(job, position, self._queue_eta(position))
        slot = next((s for s in self._slots if s.job is job), None) if job.status == "running" else None
        eta = slot.tracker.eta() if slot is not None and slot.tracker is not None else None
        return public_status(job, eta_seconds=eta)

    def _queue_eta(self, position: int) -> float | None:
        """When the job at ``position`` should be done: every worker finishes its running job (its ETA), then the
        queued jobs ahead and this one go, in order, to the worker free first, each taking the last measured
        duration of its mode."""
        free_at = []
        for slot in self._slots:
            eta = 0.0 if slot.job is None else (slot.tracker.eta() if slot.tracker is not None else None)
            if eta is None:
                return None
            free_at.append(eta)
        heapq.heapify(free_at)
        done = 0.0
        for job_id in list(self._queue)[:position]:
            last = self._last_duration.get(self._jobs[job_id].mode)
            if last is None:
                return None
            done = heapq.heappop(free_at) + last
            heapq.heappush(free_at, done)
        return round(done, 2)
