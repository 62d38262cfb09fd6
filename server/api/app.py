"""The FastAPI application: routes of the v1 HTTP contract (docs/design.md §5) over the job manager."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import ValidationError

from .. import __version__
from ..errors import InputError
from . import http_errors, uploads
from .artifacts import ARTIFACT_RE, content_type
from .auth import guards
from .http_errors import ApiError, describe_validation_error
from .queue import JobQueue
from .runner import validate_generation, validate_recon
from .schemas import TERMINAL, ErrorBody, Health, JobCreated, JobList, JobParams, JobStatus
from .settings import Settings
from .store import JOB_ID_RE, Job, JobStore, new_job_id

log = logging.getLogger(__name__)

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (401, 403, 404, 422)}


def existing_job(job_id: str, request: Request) -> str:
    if not JOB_ID_RE.match(job_id) or not request.app.state.manager.exists(job_id):
        raise ApiError(404, f"no job {job_id!r}")
    return job_id


JobId = Annotated[str, Depends(existing_job)]
FORM_PARTS = {"params", "image", "frames", "video"}


async def well_formed_parts(request: Request) -> None:
    """Refuse unknown or repeated parts instead of silently taking the last one (the form is already parsed)."""
    form = await request.form()
    for name in form:
        if name not in FORM_PARTS:
            raise ApiError(422, f"unknown form part {name!r}; expected {sorted(FORM_PARTS)}", field=name)
        if name != "frames" and len(form.getlist(name)) > 1:
            raise ApiError(422, f"form part {name!r} was given more than once", field=name)


def make_queue(settings: Settings, store: JobStore) -> JobQueue:
    """The embedded queue, or the front of a Redis broker when one is given."""
    if settings.broker:
        from .queue_redis import RedisQueue

        return RedisQueue(settings, store)
    from .worker import EmbeddedQueue

    return EmbeddedQueue(settings, store)


def create_app(settings: Settings) -> FastAPI:
    store = JobStore(settings.jobs_dir)
    manager = make_queue(settings, store)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manager.start()
        yield
        await asyncio.to_thread(manager.stop)

    app = FastAPI(title="Droplet for Blender sidecar", version=__version__, lifespan=lifespan,
                  responses=ERRORS)
    app.state.manager = manager
    http_errors.install(app)
    if settings.broker:
        from redis import RedisError

        @app.exception_handler(RedisError)
        async def _broker_down(request: Request, exc: RedisError):  # every job lives there: say so, keep serving
            return http_errors.error_response(503, "broker_unreachable", f"the job broker does not answer: {exc}",
                                              headers={"Retry-After": "5"})
    if settings.allow_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.allow_origins), allow_methods=["*"],
                           allow_headers=["*"])
    open_guard, token_guard = guards(settings)

    @app.get("/v1/health", response_model=Health, dependencies=[Depends(open_guard)], tags=["service"])
    def health() -> dict[str, Any]:
        """Answers while jobs run: every worker (its device, GPU memory and models as its model process last
        reported them, its job), the queue, limits, each checkpoint's doctor verdict. Top-level device, gpu and
        models are the first worker's."""
        state = manager.health()
        first = state["workers"][0] if state["workers"] else {"device": None, "gpu": None, "models": []}
        models = [{**m, "verdict": settings.checkpoint_verdicts.get(m["role"])} for m in first["models"]]
        return {"status": "ok", "version": __version__, "device": first["device"], "gpu": first["gpu"],
                "models": models, **state, "auth": bool(settings.token), "limits": settings.limits()}

    jobs = APIRouter(prefix="/v1/jobs", dependencies=[Depends(token_guard)], tags=["jobs"])

    @jobs.post("", status_code=202, response_model=JobCreated, max_body_size=settings.max_upload_bytes,
               dependencies=[Depends(well_formed_parts)],
               form_limits={"max_files": settings.max_frames + 2, "max_fields": 8, "max_part_size": 256 * 1024})
    def create_job(
        params: Annotated[str, Form(description="JobParams as a JSON object")],
        image: Annotated[UploadFile | None, File(description="input image (orbit, video)")] = None,
        frames: Annotated[list[UploadFile] | None, File(description="reconstruct: frame images in order, "
                                                        "or one zip of them")] = None,
        video: Annotated[UploadFile | None, File(description="reconstruct: an orbit video")] = None,
    ) -> dict[str, Any]:
        """Queue a job. ``params`` is a JSON object (see JobParams); files depend on the mode."""
        job_params = parse_params(params, settings)
        staging = store.staging()
        try:
            inputs = save_inputs(job_params, image, frames, video, staging, settings)
            now = time.time()
            job = Job(id=new_job_id(now), mode=job_params.mode, created_at=now, seq=0, inputs=inputs,
                      params=job_params.model_dump(exclude_unset=True, exclude_none=True) | {"mode": job_params.mode})
            manager.submit(staging, job)
        except BaseException:
            store.discard_staging(staging)
            raise
        base = f"/v1/jobs/{job.id}"
        return {"id": job.id, "status": job.status,
                "links": {"status": base, "events": f"{base}/events", "artifacts": f"{base}/artifacts/"}}

    @jobs.get("", response_model=JobList)
    async def list_jobs(owner: str | None = None) -> dict[str, Any]:
        """Every job in submission order; ``owner`` keeps only the jobs submitted with that ``params.owner``."""
        listed = manager.list()
        return {"jobs": listed if owner is None else [j for j in listed if j["params"].get("owner") == owner]}

    @jobs.get("/{job_id}", response_model=JobStatus)
    async def job_status(job_id: JobId) -> dict[str, Any]:
        snapshot = manager.snapshot(job_id)
        if snapshot is None:
            raise ApiError(404, f"no job {job_id!r}")
        return snapshot

    @jobs.delete("/{job_id}", status_code=202, response_model=JobStatus,
                 responses={204: {"description": "a finished job was deleted"}})
    def cancel_or_delete(job_id: JobId) -> Any:
        """Cancel a queued job (at once) or a running one (at its next step); delete a finished one."""
        snapshot = manager.cancel_or_delete(job_id)
        return Response(status_code=204) if snapshot is None else snapshot

    @jobs.get("/{job_id}/events", response_class=EventSourceResponse)
    async def job_events(job_id: JobId) -> AsyncIterator[ServerSentEvent]:
        """Server-Sent Events: a ``status`` event with the job's status JSON now and on every change, until it
        finishes (no change is skipped, however fast the stages go)."""
        queue: asyncio.Queue = asyncio.Queue()
        snapshot = manager.subscribe(job_id, asyncio.get_running_loop(), queue)
        try:
            while snapshot is not None:
                yield ServerSentEvent(data=snapshot, event="status")
                if snapshot["status"] in TERMINAL:
                    return
                snapshot = await queue.get()
        finally:
            manager.unsubscribe(job_id, queue)

    @jobs.api_route("/{job_id}/artifacts/{name:path}", methods=["GET", "HEAD"],
                    responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "a range"}})
    async def artifact(job_id: JobId, name: str) -> FileResponse:
        """Download an artifact listed in the job's status; Range requests are honoured."""
        path = manager.artifact_path(job_id, name) if ARTIFACT_RE.match(name) else None
        if path is None or not path.is_file():
            raise ApiError(404, f"job {job_id} has no artifact {name!r}")
        return FileResponse(path, media_type=content_type(name))

    app.include_router(jobs)
    return app


def parse_params(raw: str, settings: Settings) -> JobParams:
    try:
        params = JobParams.model_validate_json(raw, context={"max_prompt_chars": settings.max_prompt_chars})
    except ValidationError as exc:
        raise describe_validation_error(exc, prefix="params.") from exc
    if (problem := params.mode_problem()) is not None:
        raise ApiError(422, problem[1], field=f"params.{problem[0]}")
    try:
        if params.mode != "video":
            validate_recon(params.model_dump(exclude_unset=True))
    except InputError as exc:
        raise ApiError.from_input_error(exc, field_prefix="params.") from exc
    except ImportError as exc:
        log.warning("reconstruction not importable, options checked by the service only: %s", exc)
    if params.mode != "reconstruct":
        pixels = (params.width or 0) * (params.height or 0)
        if pixels > settings.max_image_pixels:
            raise ApiError(422, f"{params.width}x{params.height} exceeds the pixel limit {settings.max_image_pixels}",
                           field="params.width")
        try:
            validate_generation(params.model_dump(exclude_unset=True) | {"mode": params.mode})
        except InputError as exc:
            raise ApiError.from_input_error(exc, field_prefix="params.") from exc
        except ImportError as exc:  # the engine is missing: the job will fail with the reason; do not block submission
            log.warning("engine not importable, parameters checked by the service only: %s", exc)
    return params


def save_inputs(params: JobParams, image: UploadFile | None, frames: list[UploadFile] | None,
                video: UploadFile | None, staging, settings: Settings) -> dict[str, str]:
    """Check and store the mode's files under the staging folder; returns their paths relative to the job folder."""
    upload_dir = staging / "upload"
    upload_dir.mkdir()
    if params.mode != "reconstruct":
        if frames or video:
            raise ApiError(422, f"{params.mode} mode takes an image, not frames or a video",
                           field="frames" if frames else "video")
        if image is None:
            raise ApiError(422, f"{params.mode} mode needs an image file", field="image")
        path = uploads.save_image(image.file, upload_dir / "image", "image", settings.max_image_pixels)
        return {"image": path.relative_to(staging).as_posix()}
    if image is not None:
        raise ApiError(422, "reconstruct mode takes frames or a video, not an image", field="image")
    if bool(frames) == bool(video):
        raise ApiError(422, "reconstruct mode needs either frames (images or one zip) or a video", field="frames")
    if video is not None:
        path = uploads.save_video(video.file, upload_dir / "video", "video", max_pixels=settings.max_image_pixels)
        return {"source": path.relative_to(staging).as_posix()}
    frames_dir = staging / "frames"
    if len(frames) == 1 and uploads.is_zip(uploads.read_head(frames[0].file)):
        uploads.save_frames_zip(frames[0].file, frames_dir, "frames", max_frames=settings.max_frames,
                                max_pixels=settings.max_image_pixels, max_unpacked=settings.max_unpacked_bytes)
    else:
        uploads.save_frame_files([(f.filename or "", f.file) for f in frames], frames_dir, "frames",
                                 max_frames=settings.max_frames, max_pixels=settings.max_image_pixels)
    return {"source": "frames"}
