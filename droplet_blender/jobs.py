"""Job bookkeeping: one worker thread per job follows it on the server. Pure Python, no ``bpy``.

Worker threads never touch Blender data. Each change of a job is put on :attr:`JobManager.events`
as a copy of its :class:`JobState`; Blender's main thread drains that queue from a
``bpy.app.timers`` callback (see ``runtime.py``). Each job's folder in the download folder holds
``droplet_job.json`` from the moment the server accepts it: while the job is in flight it says so, and a
later Blender session follows it again (:meth:`JobManager.resume`); once finished it is the history
entry, so the history and re-import work from disk alone.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .client import DropletClient, DropletClientError
from .params import JobParams

TERMINAL = ("succeeded", "failed", "cancelled")
JOB_FILE = "droplet_job.json"


@dataclass
class JobState:
    key: str  # local id, known before the server assigns one
    mode: str = "orbit"
    server: str = ""
    status: str = "submitting"  # submitting, queued, running, downloading, then one of TERMINAL
    stage: str = ""
    progress: float = 0.0
    step: int = 0
    total: int = 0
    eta_seconds: float | None = None
    queue_position: int | None = None
    error: str = ""
    warnings: str = ""  # the server's notes on a job that still succeeded (e.g. nominal cameras), one per line
    job_id: str = ""
    folder: str = ""
    prompt: str = ""
    source: dict = field(default_factory=dict)  # what the importer needs: name, centre, size
    created_at: float = field(default_factory=time.time)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> JobState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def apply_status(self, status: dict) -> None:
        """Copy a server status object (docs/design.md §5) onto this state."""
        self.job_id = status.get("id", self.job_id)
        self.status = status.get("status", self.status)
        self.stage = status.get("stage") or self.stage
        self.progress = float(status.get("progress") or 0.0)
        self.step = int(status.get("step") or 0)
        self.total = int(status.get("total") or 0)
        self.eta_seconds = status.get("eta_seconds")
        self.queue_position = status.get("queue_position")
        self.warnings = "\n".join(warning_text(w) for w in status.get("warnings") or [])
        err = status.get("error")
        if err:
            if isinstance(err, dict):
                self.error = err.get("message") or err.get("code") or "the job failed"
            else:
                self.error = str(err)


def warning_text(warning) -> str:
    """The message of a server warning ``{code, message}`` (older servers sent plain strings)."""
    if isinstance(warning, dict):
        return str(warning.get("message") or warning.get("code") or "")
    return str(warning)


def default_owner() -> str:
    """Who submits, as the server's job list can be filtered by it: ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        user = "user"
    return f"{user}@{socket.gethostname()}"


def job_folder(download_dir: Path, job_id: str) -> Path:
    return Path(download_dir) / f"droplet-{job_id}"


def write_record(state: JobState) -> None:
    """The job's ``droplet_job.json`` in its folder, written whole (via a temporary file) so a crash leaves the old
    record or the new one."""
    folder = Path(state.folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{JOB_FILE}.tmp"
    tmp.write_text(json.dumps(state.to_dict(), indent=2))
    tmp.replace(folder / JOB_FILE)


def pending_jobs(download_dir: Path) -> list[JobState]:
    """The jobs recorded in ``download_dir`` that were still in flight (submitted, not yet downloaded)."""
    return [s for s in load_history(download_dir) if not s.finished and s.job_id]


def load_history(download_dir: Path) -> list[JobState]:
    """Every job recorded under ``download_dir`` (newest first): the finished ones, and those still in flight."""
    states = []
    for path in Path(download_dir).glob(f"*/{JOB_FILE}"):
        try:
            state = JobState.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue  # a damaged record must not hide the others
        state.folder = str(path.parent)
        states.append(state)
    return sorted(states, key=lambda s: s.created_at, reverse=True)


class JobRunner(threading.Thread):
    """Submits one job (or, with ``params`` None, takes one the server already has: ``state.job_id``), follows it
    to a terminal status and downloads its artifacts."""

    def __init__(
        self,
        state: JobState,
        client: DropletClient,
        params: JobParams | None,
        inputs: dict,
        download_dir: Path,
        events: queue.Queue,
        *,
        poll_interval: float = 0.5,
        lost_after: float = 5.0,
    ):
        super().__init__(name=f"droplet-job-{state.key}", daemon=True)
        self.state, self.client, self.params = state, client, params
        self.inputs, self.download_dir, self.events = inputs, Path(download_dir), events
        self.poll_interval, self.lost_after = poll_interval, lost_after
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    def _post(self) -> None:
        self.events.put(dataclasses.replace(self.state, source=dict(self.state.source)))

    def _update(self, status: dict, *, record: bool = False) -> None:
        self.state.apply_status(status)
        if self.state.status == "succeeded":  # succeeded for us once the files are here
            self.state.status = "downloading"
        if record:  # before anyone hears of the job: from now on it outlives this Blender session
            write_record(self.state)
        self._post()

    def run(self) -> None:
        settled = False  # the job's own outcome (not a network failure here): the record stops saying "in flight"
        try:
            settled = self._follow()
        except DropletClientError as exc:
            self.state.status, self.state.error = "failed", exc.message
            settled = exc.status == 404  # the server no longer has it: stop following it
        except Exception as exc:  # a worker must always report back, whatever happened
            self.state.status, self.state.error = "failed", f"Unexpected error: {exc!r}"
        if settled and self.state.folder:
            try:
                write_record(self.state)
            except OSError as exc:
                self.state.error = self.state.error or f"Could not record the job in {self.state.folder}: {exc}"
        self._post()

    def _follow(self) -> bool:
        """True once the job has an outcome: the server's failure or cancel, or its files downloaded."""
        client = self.client
        self.state.server = client.url
        if self._cancel.is_set():
            self.state.status = "cancelled"
            return False
        if self.params is None:  # following a job submitted earlier (another session, another script)
            status = client.job(self.state.job_id)
        else:
            status = client.submit(self.params.to_json(), **self.inputs)
        self.state.folder = str(job_folder(self.download_dir, status["id"]))
        self._update(status, record=True)
        cancel_sent, last_ok = False, time.monotonic()
        while status.get("status") not in TERMINAL:
            if self._cancel.is_set() and not cancel_sent:
                client.cancel(self.state.job_id)
                cancel_sent = True
            self._cancel.wait(self.poll_interval)
            try:
                status = client.job(self.state.job_id)
                last_ok = time.monotonic()
            except DropletClientError as exc:
                if exc.code in ("unreachable", "timeout") and time.monotonic() - last_ok < self.lost_after:
                    continue
                raise DropletClientError(
                    f"Lost the server during job {self.state.job_id} ({self.state.stage or self.state.status}): "
                    f"{exc.message}", code=exc.code, status=exc.status) from None
            self._update(status)
        if status["status"] != "succeeded":
            if status["status"] == "failed" and not self.state.error:
                self.state.error = "The job failed on the server (no reason given)."
            return True
        client.download_job(status, Path(self.state.folder))
        self.state.status = "succeeded"
        return True


class JobManager:
    """The jobs of one Blender session; safe to call from the main thread while workers run."""

    def __init__(self) -> None:
        self.events: queue.Queue[JobState] = queue.Queue()
        self.runners: dict[str, JobRunner] = {}

    def submit(
        self,
        client: DropletClient,
        params: JobParams,
        inputs: dict,
        download_dir: Path,
        *,
        source: dict | None = None,
        poll_interval: float = 0.5,
    ) -> JobState:
        """Start a worker and return at once; validation errors raise here, before any thread starts.

        ``inputs`` are :meth:`DropletClient.submit`'s files: ``{"image": path}``, or ``{"frames": [paths]}`` /
        ``{"video": path}`` for reconstruct mode.
        """
        params.validate()
        if not params.owner:
            params.owner = default_owner()
        state = JobState(key=uuid.uuid4().hex[:12], mode=params.mode, prompt=params.prompt, source=source or {})
        return self._start(JobRunner(state, client, params, inputs, download_dir, self.events,
                                     poll_interval=poll_interval))

    def attach(self, client: DropletClient, job_id: str, download_dir: Path, *, state: JobState | None = None,
               poll_interval: float = 0.5) -> JobState:
        """Follow a job the server already has (submitted by another session or script) and download it when done.
        ``state``: its record from an earlier session (keeps the prompt and where to import it)."""
        for runner in self.runners.values():
            if runner.state.job_id == job_id and runner.is_alive():
                return runner.state
        state = dataclasses.replace(state) if state is not None else JobState(key=job_id, job_id=job_id)
        state.job_id, state.status, state.error = job_id, "submitting", ""
        return self._start(JobRunner(state, client, None, {}, download_dir, self.events, poll_interval=poll_interval))

    def resume(self, client: DropletClient, download_dir: Path, *, poll_interval: float = 0.5) -> list[JobState]:
        """Follow again every job of ``download_dir`` that was in flight when its Blender session ended (on the
        server this client talks to). Jobs this session already followed are left alone: one whose server went
        away stays recorded for the next session, rather than failing again at every file load."""
        followed = {runner.state.job_id for runner in self.runners.values()}
        return [self.attach(client, state.job_id, download_dir, state=state, poll_interval=poll_interval)
                for state in pending_jobs(download_dir)
                if state.server in ("", client.url) and state.job_id not in followed]

    def _start(self, runner: JobRunner) -> JobState:
        self.runners[runner.state.key] = runner
        self.events.put(dataclasses.replace(runner.state, source=dict(runner.state.source)))
        runner.start()
        return runner.state

    def cancel(self, key: str) -> bool:
        if not self.running(key):
            return False
        self.runners[key].cancel()
        return True

    def running(self, key: str) -> bool:
        runner = self.runners.get(key)
        return runner is not None and runner.is_alive()

    def busy(self) -> bool:
        return any(r.is_alive() for r in self.runners.values())

    def drain(self) -> list[JobState]:
        """The states posted since the last call, oldest first."""
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out
