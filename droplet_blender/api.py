"""The scripting API: submit, wait, import (touches ``bpy``). For the Python console and ``blender -b -P``.

    import droplet_blender as droplet
    job = droplet.submit(prompt="...", object=bpy.data.objects["Teapot"], steps=30)
    job = droplet.wait(job, timeout=600)          # raises DropletJobFailed(reason) on failure/cancel
    coll = droplet.import_job(job)               # one collection with the rig, cameras, planes, mesh

Jobs go through the same manager as the panel's, so they show in the Jobs list too. ``wait`` pumps
the add-on's main-thread queue itself, which a background Blender needs (no timers run there).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import bpy

from . import capture, importer, runtime
from .client import DropletClientError
from .jobs import JobState
from .params import JobParams, with_capture_hints
from .prefs import settings


class DropletJobFailed(RuntimeError):
    """A job that failed or was cancelled; the message is the server's (or the client's) reason."""

    def __init__(self, job: JobState):
        super().__init__(f"job {job.job_id or job.key} {job.status}: {job.error or 'no reason given'}")
        self.job = job


def submit(
    prompt: str = "",
    *,
    image: str | Path | None = None,
    object: bpy.types.Object | list | None = None,
    camera: bool = False,
    frames: list[str | Path] | str | Path | None = None,
    video: str | Path | None = None,
    server: str | None = None,
    token: str | None = None,
    front: bool = True,
    capture_hints: bool = True,
    source: dict | None = None,
    download_dir: str | Path | None = None,
    **params,
) -> JobState:
    """Start a job and return its state at once.

    The input is a file (``image``), objects rendered alone on white (``object``: one or a list; from
    an auto-framed front camera, or the scene camera with ``front=False``) or the scene camera's
    render (``camera=True``). With ``capture_hints`` (and no ``orbit`` hints given, no view alignment) the
    camera that rendered ``object`` becomes the reconstruction's orbit hints, and the mesh comes back at the
    objects' size without measuring it. Reconstruct mode takes ``frames`` (paths in order, or a folder) or a
    ``video``. ``params`` are :class:`~droplet_blender.params.JobParams` fields (``mode``, ``steps``,
    ``width``, ``num_frames``, ``reconstruct``, ...). ``source`` (``{"centre", "size"}``) places the
    imported rig; by default the rendered objects' bounds. ``server``, ``token`` and ``download_dir``
    override the add-on preferences for this job. Bad input raises before anything is sent:
    ``ValueError`` (:class:`~droplet_blender.params.ParamError`, ``CaptureError``) or
    :class:`~droplet_blender.client.DropletClientError`.
    """
    prefs = _preferences(server, token, download_dir)
    client = prefs.client()
    job_params = JobParams(prompt=prompt, **params)
    job_params.validate()
    size = (job_params.width or 512, job_params.height or 512)
    scene = bpy.context.scene
    found: dict = {}
    if frames is not None or video is not None:
        if frames is not None and not isinstance(frames, (list, tuple)):
            folder = Path(frames)  # a folder of frames, or one zip of them
            frames = (sorted(p for p in folder.iterdir() if p.suffix.lower() in capture.FRAME_SUFFIXES)
                      if folder.is_dir() else [folder])
        inputs = {"frames": [Path(p) for p in frames]} if frames is not None else {"video": Path(video)}
    elif image is not None:
        inputs = {"image": Path(image)}
    elif object is not None:
        objs = object if isinstance(object, (list, tuple)) else [object]
        path = Path(tempfile.mkdtemp(prefix="droplet-input-")) / "input.png"
        inputs, found = {"image": path}, capture.render_alone(scene, objs, path, size, front=front)
        if capture_hints:
            found = with_capture_hints(job_params, found)
        if job_params.background is None:  # the cut-out on white, as the panel's default
            job_params.background = "#ffffff"
    elif camera:
        if scene.camera is None:
            raise capture.CaptureError("The scene has no active camera to render from.")
        path = Path(tempfile.mkdtemp(prefix="droplet-input-")) / "input.png"
        capture.render_scene(scene, path, size)
        inputs = {"image": path}
    else:
        raise ValueError("give image=, object=, camera=True, or frames=/video= for reconstruct mode")
    for path in [p for value in inputs.values() for p in (value if isinstance(value, list) else [value])]:
        if not path.is_file():
            raise DropletClientError(f"Input file not found: {path}", code="invalid_input")
    return runtime.manager.submit(client, job_params, inputs, prefs.downloads(),
                                  source=found if source is None else source, poll_interval=prefs.poll_interval)

def attach(job_id: str, *, server: str | None = None, token: str | None = None,
           download_dir: str | Path | None = None) -> JobState:
    """Follow a job submitted earlier (by another script or session, e.g. ``blender_generate.py --no-wait``) and
    download it when done; then :func:`wait` and :func:`import_job` as for your own."""
    prefs = _preferences(server, token, download_dir)
    return runtime.manager.attach(prefs.client(), job_id, prefs.downloads(), poll_interval=prefs.poll_interval)


def wait(job: JobState, timeout: float | None = None) -> JobState:
    """Block until the job finishes (its files downloaded); returns the final state or raises."""
    def finished() -> bool:
        state = runtime.latest.get(job.key)
        return state is not None and state.finished

    if not runtime.wait_until(finished, timeout):
        raise TimeoutError(f"job {job.job_id or job.key} still {runtime.latest[job.key].status} after {timeout} s")
    state = runtime.latest[job.key]
    if state.status != "succeeded":
        raise DropletJobFailed(state)
    return state

def import_job(job: JobState | str | Path, **kwargs) -> bpy.types.Collection:
    """Import a finished job (a state from :func:`wait`, or a job folder); see ``importer.import_job``."""
    if isinstance(job, JobState):
        kwargs.setdefault("source", job.source)
        job = job.folder
    return importer.import_job(Path(job), **kwargs)


def _preferences(server: str | None, token: str | None, download_dir: str | Path | None):
    """The add-on preferences, with this call's overrides applied."""
    prefs = settings()
    if server is not None:
        prefs.url = server
    if token is not None:
        prefs.token = token
    if download_dir is not None:
        prefs.download_dir = str(download_dir)
    return prefs
