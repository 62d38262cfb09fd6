"""Jobs on disk: one folder per job holding an atomically written ``job.json``.

A job folder appears fully formed: it is assembled in a staging folder and renamed into place, and it
leaves by being renamed to ``.trash-*`` before it is deleted, so a crash never leaves half a job.
On start, jobs that were running when the server died are marked failed (``interrupted``): their
outputs may be partial and a rerun costs less than trusting them. Queued jobs are queued again,
in their original order.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..files import is_staging, make_staging, write_json_atomic
from .schemas import TERMINAL

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
JOB_ID_RE = re.compile(r"\A[0-9]{8}-[0-9]{6}-[0-9a-f]{8}\Z")
TRASH_PREFIX = ".trash-"
INTERRUPTED_MESSAGE = ("the server stopped while this job was running; its partial outputs are not served: "
                       "submit it again")


def new_job_id(now: float | None = None) -> str:
    """Sortable by creation time, unguessable enough to not collide: ``20250101-120000-1a2b3c4d``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{stamp}-{secrets.token_hex(4)}"


@dataclass
class Job:
    """A job's persistent record; the worker mutates it under the manager's lock."""

    id: str
    mode: str
    params: dict[str, Any]
    created_at: float
    seq: int  # submission order, kept across restarts
    inputs: dict[str, Any] = field(default_factory=dict)  # uploaded files, relative to the job folder
    status: str = "queued"
    stage: str = "queued"
    progress: float = 0.0
    step: int | None = None
    total: int | None = None
    eta_seconds: float | None = None
    error: dict[str, Any] | None = None
    started_at: float | None = None
    finished_at: float | None = None
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)  # {code, message}
    worker: str | None = None  # the worker that ran (or runs) it
    attempts: int = 0  # runs started; a job whose worker was lost runs once more, then fails
    # Not persisted.
    cancel_requested: bool = field(default=False, repr=False)

    PERSISTED = ("id", "mode", "params", "created_at", "seq", "inputs", "status", "stage", "progress", "step",
                 "total", "error", "started_at", "finished_at", "artifacts", "warnings", "worker", "attempts")

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def record(self) -> dict[str, Any]:
        data = asdict(self)
        return {key: data[key] for key in self.PERSISTED}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Job:
        job = cls(**{key: data[key] for key in cls.PERSISTED if key in data})
        job.warnings = [as_warning(w) for w in job.warnings or []]
        return job


def as_warning(value: Any) -> dict[str, str]:
    """A ``{code, message}`` warning; job.json files written before warnings had codes hold plain strings."""
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        return {"code": str(value.get("code") or "warning"), "message": value["message"]}
    return {"code": "warning", "message": str(value)}


class JobStore:
    """The jobs folder. Paths are only ever built from ids that match :data:`JOB_ID_RE`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, job_id: str) -> Path:
        if not JOB_ID_RE.match(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / job_id

    def staging(self) -> Path:
        return make_staging(self.root)

    def discard_staging(self, staging: Path) -> None:
        if staging.parent == self.root and is_staging(staging):
            shutil.rmtree(staging, ignore_errors=True)

    def commit(self, staging: Path, job: Job) -> Path:
        """Write ``job.json`` into a staging folder and move it into place as the job's folder."""
        write_json_atomic(staging / JOB_FILE, job.record(), indent=1)
        target = self.path(job.id)
        os.rename(staging, target)
        return target

    def save(self, job: Job) -> None:
        write_json_atomic(self.path(job.id) / JOB_FILE, job.record(), indent=1)

    def load_all(self) -> tuple[list[Job], list[Job]]:
        """Read every job; returns ``(jobs, interrupted)``. Leftover staging and trash folders are removed."""
        jobs, interrupted = [], []
        for entry in sorted(self.root.iterdir()):
            leftover = is_staging(entry) or entry.name.startswith(TRASH_PREFIX)  # the reconstruction's too
            if leftover and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
                continue
            if not JOB_ID_RE.match(entry.name) or entry.is_symlink() or not entry.is_dir():
                continue
            try:
                job = Job.from_record(json.loads((entry / JOB_FILE).read_text(encoding="utf-8")))
                if job.id != entry.name:
                    raise ValueError(f"job.json names {job.id!r}")
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.warning("skipping job folder %s: unreadable job.json (%s)", entry, exc)
                continue
            if job.status == "running":
                job.status, job.stage, job.eta_seconds = "failed", "interrupted", None
                job.error = {"code": "interrupted", "message": INTERRUPTED_MESSAGE}
                job.finished_at = time.time()
                job.artifacts = []
                self.save(job)
                interrupted.append(job)
            jobs.append(job)
        jobs.sort(key=lambda j: j.seq)
        return jobs, interrupted

    def remove(self, job_id: str) -> None:
        """Delete a job folder: only a real folder directly inside the jobs folder, never through a link."""
        path = self.path(job_id)
        if path.is_symlink() or not path.is_dir() or path.resolve().parent != self.root.resolve():
            raise ValueError(f"refusing to delete {path}")
        trash = self.root / f"{TRASH_PREFIX}{job_id}"
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def size_of(self, job_id: str) -> int:
        total = 0
        for dirpath, _dirs, files in os.walk(self.path(job_id)):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(dirpath, name)).st_size
        return total


def select_expired(jobs: list[Job], sizes: dict[str, int], *, keep: int, max_age_s: float | None,
                   max_bytes: int | None, now: float) -> list[str]:
    """Finished jobs to delete, oldest first: beyond ``keep``, older than ``max_age_s``, or while the
    jobs folder is over ``max_bytes``. Queued and running jobs are never selected."""
    finished = sorted((j for j in jobs if j.finished), key=lambda j: j.seq)
    doomed: list[str] = []
    excess = max(len(finished) - keep, 0)
    total = sum(sizes.values())
    for index, job in enumerate(finished):
        too_many = index < excess
        too_old = max_age_s is not None and now - (job.finished_at or job.created_at) > max_age_s
        too_big = max_bytes is not None and total > max_bytes
        if too_many or too_old or too_big:
            doomed.append(job.id)
            total -= sizes.get(job.id, 0)
    return doomed
