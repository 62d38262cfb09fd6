"""The main-thread side of asynchronous work (touches ``bpy``).

Worker threads (jobs, health checks) only put results on queues. :func:`pump`, registered with
``bpy.app.timers`` while anything is in flight, drains them on Blender's main thread: it mirrors job
states into ``WindowManager.droplet_jobs`` for the panel, imports finished jobs that asked for it,
and reports failures to the info log. Each call does a bounded amount of work so the UI never stalls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import bpy

from .jobs import JobManager, JobState, load_history

manager = JobManager()
auto_import: set[str] = set()  # job keys to import as soon as they succeed
latest: dict[str, JobState] = {}  # newest state of every job of the session, by key
reports: deque[tuple[str, str]] = deque(maxlen=50)  # (type, message), newest last: what went to the info log
_callbacks: queue.Queue[Callable[[], None]] = queue.Queue()
_threads: list[threading.Thread] = []


def report(kind: str, message: str) -> None:
    """To the info log (via an operator, the only way a timer can report) and the console."""
    reports.append((kind, message))
    if not hasattr(bpy.types, "DROPLET_OT_report"):  # the API used without enabling the add-on
        print(f"Droplet {kind.lower()}: {message}")
        return
    with contextlib.suppress(RuntimeError):  # background Blender raises on ERROR reports, after logging them
        bpy.ops.droplet.report(kind=kind, message=message)


def run_async(work: Callable[[], object], done: Callable[[object, Exception | None], None]) -> None:
    """Run ``work()`` on a thread; ``done(result, error)`` runs later on the main thread."""

    def worker():
        try:
            result, error = work(), None
        except Exception as exc:  # handed to the main thread, which reports it
            result, error = None, exc
        _callbacks.put(lambda: done(result, error))

    thread = threading.Thread(target=worker, name="droplet-async", daemon=True)
    _threads[:] = [t for t in _threads if t.is_alive()] + [thread]
    thread.start()
    ensure_timer()

def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(pump):
        bpy.app.timers.register(pump, first_interval=0.05, persistent=True)


def pump() -> float | None:
    """Timer callback: apply what the workers posted. Returns the next interval, or None when idle."""
    while True:
        try:
            _callbacks.get_nowait()()
        except queue.Empty:
            break
    wm = bpy.context.window_manager
    registered = hasattr(wm, "droplet_jobs")  # scripts may use the API without enabling the add-on
    for state in manager.drain():
        latest[state.key] = state
        if registered:
            apply_state(wm, state)
    _redraw()
    busy = manager.busy() or any(t.is_alive() for t in _threads)
    if busy or not manager.events.empty() or not _callbacks.empty():
        return 0.1
    return None


def find_item(wm, key: str):
    return next((item for item in wm.droplet_jobs if item.key == key), None)


def _copied_fields(item) -> list[str]:
    """The JobState fields the panel's job item holds under the same name and type (all but the optional ones)."""
    return [f.name for f in dataclasses.fields(JobState)
            if f.name not in ("key", "queue_position", "eta_seconds") and hasattr(item, f.name)]


def apply_state(wm, state: JobState, *, quiet: bool = False) -> None:
    item = find_item(wm, state.key)
    if item is None:
        item = wm.droplet_jobs.add()
        item.key = state.key
        wm.droplet_jobs.move(len(wm.droplet_jobs) - 1, 0)  # newest first
        item = wm.droplet_jobs[0]
    previous = item.status
    for name in _copied_fields(item):
        setattr(item, name, getattr(state, name))
    # Blender properties hold no None: -1 stands for "unknown".
    item.eta = -1.0 if state.eta_seconds is None else float(state.eta_seconds)
    item.queue_position = -1 if state.queue_position is None else int(state.queue_position)
    if state.status == previous or quiet:
        return
    name = state.job_id or state.key
    if state.status == "failed":
        report("ERROR", f"Droplet job {name} failed: {state.error}")
    elif state.status == "cancelled":
        report("WARNING", f"Droplet job {name} was cancelled")
    elif state.status == "succeeded":
        report("INFO", f"Droplet job {name} finished: {state.folder}")
        for warning in filter(None, state.warnings.splitlines()):
            report("WARNING", f"Droplet job {name}: {warning}")
        if state.key in auto_import:
            auto_import.discard(state.key)
            import_item(item, state.source)


def import_item(item, source: dict | None = None) -> bpy.types.Collection | None:
    """Import a finished job of the list; failures go to the item and the info log."""
    from . import importer

    try:
        coll = importer.import_job(Path(item.folder), source=source)
    except Exception as exc:  # a bad folder must not break the timer: show it instead
        item.error = f"Import failed: {exc}"
        report("ERROR", f"Droplet: could not import job {item.job_id}: {exc}")
        return None
    item.collection = coll.name
    return coll


def refresh_history(wm, download_dir: Path) -> None:
    """Add finished jobs found on disk that the list does not show yet."""
    known = {item.job_id for item in wm.droplet_jobs if item.job_id}
    for state in reversed(load_history(download_dir)):
        if state.job_id not in known:
            state.key = state.key or state.job_id
            apply_state(wm, state, quiet=True)


def resume_pending() -> list[JobState]:
    """Follow again the jobs that were in flight when an earlier session ended (recorded in the download folder),
    downloading each when it is done. Runs at register and after a .blend loads (its download folder may differ)."""
    from .client import DropletClientError
    from .prefs import settings

    prefs = settings()
    try:
        states = manager.resume(prefs.client(), prefs.downloads(), poll_interval=prefs.poll_interval)
    except (DropletClientError, OSError) as exc:  # offline, or no download folder: nothing to follow from here
        print(f"Droplet: not following earlier jobs: {exc}")
        return []
    if states:
        report("INFO", f"Droplet: following {len(states)} job(s) submitted earlier")
        ensure_timer()
    return states


def fetch_server_job(job_id: str, *, import_when_done: bool = True) -> JobState:
    """Download a job of the server's list (any session's) and, by default, import it once it is here."""
    from .prefs import settings

    prefs = settings()
    state = manager.attach(prefs.client(), job_id, prefs.downloads(), poll_interval=prefs.poll_interval)
    if import_when_done:
        auto_import.add(state.key)
    ensure_timer()
    return state


def list_server_jobs(wm, jobs: list[dict]) -> None:
    """Mirror ``GET /v1/jobs`` into the panel's server list, newest first."""
    wm.droplet_server_jobs.clear()
    for status in sorted(jobs, key=lambda j: j.get("created_at") or 0, reverse=True):
        item = wm.droplet_server_jobs.add()
        params = status.get("params") or {}
        item.job_id, item.mode, item.status = status["id"], status.get("mode", ""), status.get("status", "")
        item.prompt, item.owner = params.get("prompt") or "", params.get("owner") or ""
        item.worker, item.created_at = status.get("worker") or "", float(status.get("created_at") or 0)


@bpy.app.handlers.persistent
def _resume_after_load(*_args) -> None:
    resume_pending()


def wait_until(predicate: Callable[[], bool], timeout: float | None = None, interval: float = 0.05) -> bool:
    """Pump on the calling (main) thread until ``predicate()``; for scripts, where no timer runs."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pump()
        if predicate():
            return True
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(interval)


def _redraw() -> None:
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


def register() -> None:
    bpy.app.handlers.load_post.append(_resume_after_load)
    # Preferences are readable only once registration is over: follow earlier jobs from a first timer tick.
    bpy.app.timers.register(_resume_once, first_interval=0.1)


def _resume_once() -> None:
    resume_pending()  # returning None: the timer runs once


def unregister() -> None:
    if _resume_after_load in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_resume_after_load)
    if bpy.app.timers.is_registered(pump):
        bpy.app.timers.unregister(pump)
    for key in list(manager.runners):
        manager.cancel(key)
