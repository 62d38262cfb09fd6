"""Job parameters as the service expects them (``params`` JSON of ``POST /v1/jobs``). Pure Python.

Checked here before anything is uploaded so the artist sees a mistake at once, naming the field;
the server checks again and its 4xx text reaches the panel unchanged.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

MODES = ("orbit", "video", "reconstruct")
# The server's reconstruction limits (droplet3d.recon.limits), mirrored: the add-on cannot import the server.
MIN_FRAMES = 8
MIN_RESOLUTION, MAX_RESOLUTION = 32, 512
PROFILES = ("faithful", "fast")
GENERATION_FIELDS = ("prompt", "negative_prompt", "seed", "steps", "guidance_scale", "width", "height", "num_frames",
                     "profile", "background")


class ParamError(ValueError):
    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


@dataclass
class JobParams:
    mode: str = "orbit"
    prompt: str = ""
    negative_prompt: str = ""
    seed: int | None = 42
    steps: int | None = 50  # None → the profile's (faithful 50, fast 25)
    guidance_scale: float = 6.0
    width: int | None = None  # None → the model's default size
    height: int | None = None
    num_frames: int | None = None
    fps: int | None = None  # video mode only
    view_align: bool = False
    reconstruct: bool = True
    orbit: dict | None = None  # hints for the reconstruction (elevation, fov, radius, direction, ...); else estimated
    mesh: dict | None = None  # mesh options (resolution, face_budget); None → the server's defaults
    profile: str | None = None  # "faithful" (the published inference) or "fast"; None → the server's default
    background: str | None = None  # "#rrggbb" the server composites a cut-out on (None: black); the cut-out's
    # alpha then gives frame 0 its exact mask
    owner: str = ""  # who submits (user@host, filled in at submit): the server's job list filters by it

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ParamError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}", "mode")
        if self.mode != "reconstruct" and not self.prompt.strip():
            raise ParamError("Write a prompt describing the object (or pick a Text block).", "prompt")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and (value < 16 or value % 16):
                raise ParamError(f"{name} must be a positive multiple of 16, got {value}", name)
        if self.num_frames is not None and self.num_frames < 1:
            raise ParamError(f"frames must be at least 1, got {self.num_frames}", "num_frames")
        if self.profile is not None and self.profile not in PROFILES:
            raise ParamError(f"quality must be one of {', '.join(PROFILES)}, got {self.profile!r}", "profile")
        if self.steps is not None and self.steps < 1:
            raise ParamError(f"steps must be at least 1, got {self.steps}", "steps")
        if self.guidance_scale < 0:
            raise ParamError(f"guidance must not be negative, got {self.guidance_scale}", "guidance_scale")
        resolution = (self.mesh or {}).get("resolution")
        if resolution is not None and not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
            raise ParamError(f"mesh resolution must lie in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], got {resolution}",
                             "mesh.resolution")
        if self.background is not None and not re.fullmatch(r"#[0-9a-fA-F]{6}", self.background):
            raise ParamError(f"background must be a colour #rrggbb, got {self.background!r}", "background")
        if self.fps is not None and self.mode != "video":
            raise ParamError("FPS control applies to video mode only", "fps")

    def to_json(self) -> dict:
        """The ``params`` object. The server is strict: unset values and fields the mode does not use are left out."""
        self.validate()
        data = {k: v for k, v in asdict(self).items() if v is not None and v != {}}
        for name in ("negative_prompt", "owner"):
            if not data[name]:
                data.pop(name)
        if self.mode == "reconstruct":
            for name in (*GENERATION_FIELDS, "fps", "view_align", "reconstruct"):
                data.pop(name, None)
        elif self.mode == "video":
            for name in ("view_align", "reconstruct", "orbit", "mesh"):
                data.pop(name, None)
        elif not self.reconstruct:
            data.pop("mesh", None)  # mesh options need reconstruct: true
        return data


def with_capture_hints(params: JobParams, source: dict) -> dict:
    """Give the reconstruction the camera the input was rendered from (``source["camera"]``, set by the capture) as
    its orbit hints: the generated orbit starts from that view, so its elevation and field of view are known, and
    its distance puts the mesh at the source's true size, without measuring the mesh. Not where hints were given,
    nor with view alignment (which turns the input to another view first). Returns the source to record: marked
    ``"placement": "camera"`` where the hints were used (the job comes back in world units about the centre)."""
    camera = source.get("camera")
    if params.mode != "orbit" or params.view_align or params.orbit is not None or not camera:
        return source
    params.orbit = {**camera, "frame0": True}  # frame 0's own camera, not the orbit's mean
    return {**source, "placement": "camera"}


def hex_colour(rgb) -> str:
    """``#rrggbb`` of a colour given as three 0–1 display values."""
    return "#" + "".join(f"{round(min(max(c, 0.0), 1.0) * 255):02x}" for c in rgb)


def word_count(text: str) -> int:
    return len(text.split())


def orbit_sentence(direction: str = "ccw", elevation: str = "eye level") -> str:
    """A sentence describing the camera move, appended to a dense object prompt by the helper."""
    turn = "counter-clockwise" if direction == "ccw" else "clockwise"
    return (
        f"The camera orbits a full 360 degrees {turn} around the object at {elevation}, "
        f"keeping it centred against a plain background, revealing its front, sides and back in turn."
    )
