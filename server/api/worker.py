"""The job manager: a FIFO queue and the one worker thread that runs jobs in order.

The HTTP side only enqueues, cancels and reads snapshots under a short lock. The worker thread hands
each job's model work to the model process (model_process.py) and records what it reports, so no
route ever waits for the GPU or the GIL. An exception inside a job, or the model process dying,
fails that job alone, with its message, and the worker takes the next one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from ..errors import Cancelled, DropletError, InputError
from .artifacts import list_artifacts
from .http_errors import ApiError
from .model_process import ModelProcess
from .progress import ProgressTracker, stages_for
from .settings import Settings
from .store import Job, JobStore, select_expired

log = logging.getLogger(__name__)

SHUTDOWN_MESSAGE = "the server was shut down while this job was running: submit it again"


class JobManager:
    def __init__(self, settings: Settings, store: JobStore, models: ModelProcess) -> None:
        self.settings, self.store, self.models = settings, store, models
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._queue: deque[str] = deque()
        self._running: str | None = None
        self._tracker: ProgressTracker | None = None
        self._stopping = False
        self._seq = 0
        self._history: dict[str, dict[str, float]] = {}  # mode → stage durations of its last success
        self._last_duration: dict[str, float] = {}  # mode → seconds its last success took
        self._thread: threading.Thread | None = None
        self._subscribers: dict[str, list[tuple[Any, Any]]] = {}  # job id → [(event loop, asyncio.Queue)]

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
        self._thread = threading.Thread(target=self._work, name="droplet-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; the running one stops at its next step and is marked failed (it can be resubmitted).
        Queued jobs stay queued on disk and run after the next start."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self.models.close()

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
            self._wakeup.notify_all()
        return job

    def snapshot(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else self._public(job)

    def subscribe(self, job_id: str, loop, queue) -> dict[str, Any] | None:
        """Every later change of the job is put on ``queue`` (from the worker, thread-safely); returns the current
        status, taken under the same lock so that no change falls between the two."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            self._subscribers.setdefault(job_id, []).append((loop, queue))
            return self._public(job)

    def unsubscribe(self, job_id: str, queue) -> None:
        with self._lock:
            subscribers = [(lp, q) for lp, q in self._subscribers.get(job_id, []) if q is not queue]
            if subscribers:
                self._subscribers[job_id] = subscribers
            else:
                self._subscribers.pop(job_id, None)

    def _publish(self, job: Job) -> None:
        """Under the lock: bump the version and hand the new status to the job's SSE streams."""
        job.version += 1
        subscribers = self._subscribers.get(job.id)
        if subscribers:
            snapshot = self._public(job)
            for loop, queue in subscribers:
                with contextlib.suppress(RuntimeError):  # that stream's loop has closed
                    loop.call_soon_threadsafe(queue.put_nowait, snapshot)

    def version(self, job_id: str) -> int | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else job.version

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._public(job) for job in sorted(self._jobs.values(), key=lambda j: j.seq)]

    def artifact_path(self, job_id: str, name: str) -> Path | None:
        """The file behind a listed artifact name; None for anything the job does not list."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or not any(a["name"] == name for a in job.artifacts):
                return None
        return self.store.path(job_id) / name

    def cancel_or_delete(self, job_id: str) -> dict[str, Any] | None:
        """Queued → cancelled at once; running → cancelled at its next step; finished → deleted (returns None)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise ApiError(404, f"no job {job_id}")
            if job.status == "queued":
                self._queue.remove(job_id)
                self._finish(job, "cancelled", None)
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

    def counts(self) -> tuple[int, str | None]:
        with self._lock:
            return len(self._queue), self._running

    # -- worker thread ---------------------------------------------------------------------------------
    def _work(self) -> None:
        try:
            self.models.start()
        except Exception as exc:  # the next job starts a fresh model process
            log.warning("model process start failed (jobs will retry): %s", exc)
        while True:
            with self._wakeup:
                while not self._queue and not self._stopping:
                    self._wakeup.wait()
                if self._stopping:
                    return
                job = self._jobs[self._queue.popleft()]
                self._running = job.id
                self._tracker = ProgressTracker(stages_for(job.mode, bool(job.params.get("view_align"))),
                                                self._history.get(job.mode))
                job.status, job.stage, job.started_at = "running", self._tracker.stages[0], time.time()
                self._publish(job)
            try:
                self.store.save(job)
                self._execute(job)
            except Exception:  # bookkeeping failed (disk full...): fail the job, keep the worker
                log.exception("job %s: worker error", job.id)
                with self._lock:
                    if not job.finished:
                        self._finish(job, "failed", {"code": "internal_error", "message": "worker error; see log"})
            self.apply_retention()

    def _progress(self, job: Job, stage: str, step: int, total: int, _elapsed: float) -> None:
        with self._lock:
            tracker = self._tracker
            new_stage = stage != job.stage
            tracker.update(stage, int(step or 0), int(total or 0))
            job.stage, job.progress = stage, round(tracker.fraction, 4)
            job.step, job.total = (int(step), int(total)) if total else (None, None)
            self._publish(job)
        if new_stage:
            self.store.save(job)

    def _execute(self, job: Job) -> None:
        job_dir = self.store.path(job.id)
        error: dict[str, Any] | None = None
        warnings: list[dict[str, str]] = []
        try:
            warnings = self.models.run(job.mode, job.params, job.inputs, job_dir,
                                       progress=lambda *a: self._progress(job, *a),
                                       should_cancel=lambda: job.cancel_requested or self._stopping)
            outcome = "succeeded"
        except Cancelled as exc:
            if job.cancel_requested:
                outcome = "cancelled"
            else:
                outcome, error = "failed", {"code": "interrupted", "message": SHUTDOWN_MESSAGE}
            log.info("job %s: %s (%s)", job.id, outcome, exc)
        except DropletError as exc:
            outcome, error = "failed", {"code": exc.code, "message": exc.message}
            if isinstance(exc, InputError) and exc.field:
                error["field"] = exc.field
            log.warning("job %s failed: %s", job.id, exc)
        except Exception as exc:  # a bug or a resource failure inside the job: fail this job only
            outcome, error = "failed", {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
            log.exception("job %s failed", job.id)
        artifacts = list_artifacts(job_dir) if outcome == "succeeded" else []
        with self._lock:
            job.artifacts = [{**a, "url": f"/v1/jobs/{job.id}/artifacts/{a['name']}"} for a in artifacts]
            job.warnings = warnings
            if outcome == "succeeded":
                self._history[job.mode] = self._tracker.finish()
                self._last_duration[job.mode] = time.time() - job.started_at
                job.progress = 1.0
            self._finish(job, outcome, error)
        self.store.save(job)

    def _finish(self, job: Job, outcome: str, error: dict[str, Any] | None) -> None:
        """Under the lock: record a terminal state."""
        job.status, job.error, job.finished_at, job.eta_seconds = outcome, error, time.time(), None
        job.stage = "done" if outcome == "succeeded" else outcome
        job.step = job.total = None
        if self._running == job.id:
            self._running, self._tracker = None, None
        self._publish(job)

    # -- retention ---------------------------------------------------------------------------------------
    def apply_retention(self) -> list[str]:
        s = self.settings
        with self._lock:
            jobs = list(self._jobs.values())
        sizes = {j.id: self.store.size_of(j.id) for j in jobs} if s.max_disk_bytes is not None else {}
        max_age = None if s.max_age_hours is None else s.max_age_hours * 3600
        doomed = select_expired(jobs, sizes, keep=s.keep_jobs, max_age_s=max_age, max_bytes=s.max_disk_bytes,
                                now=time.time())
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
        """Under the lock: the status JSON of the contract."""
        position = eta = None
        if job.status == "queued":
            position = self._queue.index(job.id) + 1
            eta = self._queue_eta(position, job.mode)
        elif job.status == "running" and self._tracker is not None and self._running == job.id:
            eta = self._tracker.eta()
        error = None if job.error is None else dict(job.error)
        return {"id": job.id, "mode": job.mode, "status": job.status, "stage": job.stage, "progress": job.progress,
                "step": job.step, "total": job.total, "eta_seconds": eta, "queue_position": position, "error": error,
                "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
                "params": job.params, "artifacts": job.artifacts, "warnings": job.warnings}

    def _queue_eta(self, position: int, mode: str) -> float | None:
        """The running job's ETA plus the last measured duration of each queued job ahead and this one."""
        total = 0.0
        if self._running is not None:
            running_eta = self._tracker.eta() if self._tracker is not None else None
            if running_eta is None:
                return None
            total += running_eta
        for job_id in list(self._queue)[:position]:
            last = self._last_duration.get(self._jobs[job_id].mode)
            if last is None:
                return None
            total += last
        return round(total, 2)
