"""Request and response models of the HTTP contract (v1). They double as the OpenAPI schema at ``/docs``.

Requests are strict: unknown fields are rejected, numbers are not parsed from strings, NaN and
infinities are refused, and fields that a mode does not use must be left out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ..recon.limits import MAX_RESOLUTION, MIN_RESOLUTION

Mode = Literal["orbit", "video", "reconstruct"]
Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

Size = Annotated[int, Field(ge=16, le=2048, multiple_of=16, description="pixels; a multiple of 16")]
# Fields only generation uses, and only orbit mode uses.
GENERATION_FIELDS = ("prompt", "negative_prompt", "seed", "steps", "guidance_scale", "width", "height", "num_frames",
                     "profile", "background")
ORBIT_ONLY_FIELDS = ("view_align", "reconstruct")


class MeshOptions(BaseModel):
    """Passed to the reconstruction; left out → its defaults."""

    model_config = _STRICT
    resolution: int | None = Field(None, ge=MIN_RESOLUTION, le=MAX_RESOLUTION,
                                   description="grid cells along the object's longest side")
    face_budget: int | None = Field(None, ge=100, le=2_000_000, description="faces of the output mesh")
    texture_size: Literal[256, 512, 1024, 2048, 4096] | None = Field(None, description="texture atlas side in pixels")
    matting: Literal["auto", "learned", "colour"] | None = Field(
        None, description="masks from the learned matting model (auto: when it can run, else colour with a warning)")


class OrbitHints(BaseModel):
    """What is known about the orbit; anything left out is estimated from the silhouettes."""

    model_config = _STRICT
    elevation: float | None = Field(None, ge=-89, le=89, description="degrees")
    fov: float | None = Field(None, ge=1, le=170, description="degrees across the larger image side")
    radius: float | None = Field(None, gt=0, le=1000)
    direction: Literal["ccw", "cw"] | None = None
    start_azimuth: float | None = Field(None, ge=-360, le=360, description="degrees")
    closed: bool | None = Field(None, description="the last frame repeats the first")
    frame0: bool = Field(False, description="elevation, fov, radius and start azimuth are frame 0's own camera (the "
                         "capture the orbit was generated from), not the orbit's mean")
    calibrate: bool = Field(False, description="estimate the orbit even where hints are given")


class JobParams(BaseModel):
    """The ``params`` part of ``POST /v1/jobs`` (a JSON object)."""

    model_config = _STRICT
    mode: Mode = "orbit"
    prompt: str | None = Field(None, min_length=1, description="required for orbit and video")
    negative_prompt: str | None = None
    seed: int | None = Field(42, ge=0, le=2**63 - 1, description="null → a random seed, recorded in the manifest")
    steps: int | None = Field(None, ge=1, le=500, description="null → the profile's (faithful 50, fast 25)")
    profile: Literal["faithful", "fast"] | None = Field(
        None, description="faithful: the published inference; fast: fewer solver steps, step caching and CFG "
        "truncation (plus compile and FP8 where the server loaded its model with them); null → the server's default")
    guidance_scale: float | None = Field(None, ge=0, le=50)
    width: Size | None = None
    height: Size | None = None
    num_frames: int | None = Field(None, ge=1, le=257)
    fps: int | None = Field(None, ge=1, le=120, description="video mode only")
    view_align: bool = Field(False, description="orbit mode only: align the input to the canonical view first")
    background: str | None = Field(None, pattern=r"^#[0-9a-fA-F]{6}$",
                                   description="#rrggbb the input's transparent pixels are composited on (null: "
                                   "black); a cut-out input also gives frame 0 its exact mask")
    reconstruct: bool = Field(False, description="orbit mode only: reconstruct a textured mesh")
    mesh: MeshOptions | None = None
    orbit: OrbitHints | None = None
    owner: str | None = Field(None, min_length=1, max_length=200,
                              description="who submits (the add-on sends user@host); GET /v1/jobs?owner= filters by it")

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _not_blank_nor_too_long(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if not value.strip():
            raise ValueError("must not be blank")
        limit = (info.context or {}).get("max_prompt_chars")
        if limit is not None and len(value) > limit:
            raise ValueError(f"is {len(value)} characters long; the limit is {limit}")
        return value

    def mode_problem(self) -> tuple[str, str] | None:
        """``(field, message)`` for the first field that does not fit the mode, or None."""
        given = {name for name in self.model_fields_set if getattr(self, name) is not None}
        given -= {name for name in ORBIT_ONLY_FIELDS if getattr(self, name) is False}
        unused = {"reconstruct": {*GENERATION_FIELDS, "fps", *ORBIT_ONLY_FIELDS},
                  "video": {*ORBIT_ONLY_FIELDS, "mesh", "orbit"}, "orbit": {"fps"}}[self.mode]
        for name in sorted(given & unused):
            return name, f"{name} cannot be used in {self.mode} mode"
        if self.mode in ("orbit", "video") and self.prompt is None:
            return "prompt", f"prompt is required in {self.mode} mode"
        if self.mode == "orbit" and self.mesh is not None and not self.reconstruct:
            return "mesh", "mesh options need reconstruct: true"
        return None


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. invalid_params, not_found")
    message: str
    field: str | None = Field(None, description="the request field at fault, when there is one")


class ErrorBody(BaseModel):
    error: ErrorDetail


class Artifact(BaseModel):
    name: str = Field(description="e.g. orbit.mp4, frames/0000.png, frames.zip")
    size: int
    sha256: str
    url: str


class JobLinks(BaseModel):
    status: str
    events: str
    artifacts: str


class JobCreated(BaseModel):
    id: str
    status: Status
    links: JobLinks


class JobError(BaseModel):
    code: str
    message: str
    field: str | None = None


class JobWarning(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. reconstruction_failed, nominal_cameras")
    message: str


class JobStatus(BaseModel):
    id: str
    mode: Mode
    status: Status
    stage: str = Field(description="queued, loading, aligning, encoding, denoising, decoding, reconstructing, writing, "
                       "or done")
    progress: float = Field(ge=0, le=1)
    step: int | None = None
    total: int | None = None
    eta_seconds: float | None = None
    queue_position: int | None = Field(None, description="1 = runs next; null unless queued")
    error: JobError | None = None
    created_at: float = Field(description="seconds since the epoch")
    started_at: float | None = None
    finished_at: float | None = None
    params: dict[str, Any]
    artifacts: list[Artifact]
    warnings: list[JobWarning] = Field(default_factory=list,
                                       description="what went less well in a job that succeeded")
    worker: str | None = Field(None, description="the worker that runs or ran the job")


class JobList(BaseModel):
    jobs: list[JobStatus]


class ModelInfo(BaseModel):
    role: Literal["orbit", "video"]
    ckpt: str
    present: bool = Field(description="a local folder that exists, or a hub id already in the local cache")
    loaded: bool
    loading: bool
    error: str | None = Field(None, description="why the last load failed")
    details: dict[str, Any] | None = Field(None, description="the engine's describe() once loaded")
    verdict: dict[str, Any] | None = Field(None, description="droplet3d doctor at start-up: checked, ok, problems, "
                                           "note")


class WorkerInfo(BaseModel):
    name: str = Field(description="the worker's name: its device index in one server, --name on a broker")
    device: str | None
    gpu: dict[str, Any] | None = Field(None, description="name and memory in bytes of its CUDA device")
    cpu_threads: int | None = Field(None, description="CPU threads its libraries use, as of its last job (null until "
                                    "torch loads)")
    models: list[ModelInfo]
    pid: int | None = Field(description="the model process that runs jobs; null while none is running")
    alive: bool
    restarts: int = Field(description="model processes started again after one died")
    job: str | None = Field(None, description="id of the job it runs now")


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    device: str | None = Field(description="the first worker's device (every worker's is under workers)")
    gpu: dict[str, Any] | None = Field(None, description="the first worker's CUDA device: name and memory in bytes")
    models: list[ModelInfo] = Field(description="the first worker's models")
    workers: list[WorkerInfo] = Field(description="every model process of this server, or every live worker on "
                                      "the broker")
    broker: bool = Field(False, description="jobs run on workers behind a Redis broker")
    queue_length: int
    running: list[str] = Field(default_factory=list, description="ids of the running jobs")
    auth: bool = Field(description="a bearer token is required on every route but health")
    limits: dict[str, Any]
