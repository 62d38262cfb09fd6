"""Service settings: everything `droplet3d serve` can be told, with safe defaults."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..recon.limits import MAX_RESOLUTION, MIN_FRAMES, MIN_RESOLUTION

DEFAULT_ORBIT_CKPT = "DropletX/Droplet3D-5B"
DEFAULT_VIDEO_CKPT = "DropletX/DropletVideo-5B"
LOOPBACK_NAMES = ("localhost",)


def default_jobs_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "droplet3d" / "jobs"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost`` (the only hosts served without a token)."""
    host = host.strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Settings:
    """Service configuration. Limits are enforced at the HTTP boundary, before any model work."""

    jobs_dir: Path = field(default_factory=default_jobs_dir)
    # Checkpoints: a local folder or a hub id, fetched by the engine on the first job that needs it.
    orbit_ckpt: str = DEFAULT_ORBIT_CKPT
    video_ckpt: str = DEFAULT_VIDEO_CKPT
    device: str | None = None
    offload: str = "none"
    # Engine speed options (DropletEngine.load). profile: the load switches' defaults and jobs' default profile;
    # compile/quantize None take the profile's. The default profile, faithful, has none on.
    profile: str = "faithful"
    compile: bool | None = None
    quantize: str | None = None
    vae_tiling: bool = False
    attention_backend: str | None = None
    preload: bool = False  # load the orbit model when the server starts instead of on the first job
    # The checkpoint doctor's verdict per role ("orbit", "video"), filled by `droplet3d serve` at start-up.
    checkpoint_verdicts: dict[str, dict] = field(default_factory=dict)
    # Scale out: one model process per entry of ``devices`` (--gpus, --workers), each with its name; or, with a
    # broker URL, no model process at all: jobs go to `droplet3d worker` processes through Redis.
    workers: tuple[tuple[str, str | None], ...] = (("local", None),)  # (name, device) pairs
    cpu_threads: int | None = None  # torch threads per model process (CPU workers share the cores)
    broker: str | None = None
    heartbeat_seconds: float = 10.0  # broker: a worker silent this long has lost its job
    token: str | None = None
    allow_origins: tuple[str, ...] = ()  # CORS is off unless origins are named
    # Queue and retention.
    max_queue: int = 64
    keep_jobs: int = 200  # finished jobs kept; the oldest go first
    max_age_hours: float | None = None
    max_disk_gb: float | None = None
    # Input limits.
    max_upload_mb: float = 256.0
    max_image_pixels: int = 16_777_216  # 4096²
    max_frames: int = 512  # frames in an uploaded frame set
    max_unpacked_mb: float = 1024.0  # total bytes of the frames an uploaded zip may unpack to
    max_prompt_chars: int = 4000

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_unpacked_bytes(self) -> int:
        return int(self.max_unpacked_mb * 1024 * 1024)

    @property
    def max_disk_bytes(self) -> int | None:
        return None if self.max_disk_gb is None else int(self.max_disk_gb * 1024**3)

    def limits(self) -> dict:
        """The limits a client needs to know, as reported by ``/v1/health``."""
        return {
            "max_queue": self.max_queue,
            "max_upload_bytes": self.max_upload_bytes,
            "max_image_pixels": self.max_image_pixels,
            "min_frames": MIN_FRAMES,
            "max_frames": self.max_frames,
            "mesh_resolution": [MIN_RESOLUTION, MAX_RESOLUTION],
            "max_prompt_chars": self.max_prompt_chars,
            "keep_jobs": self.keep_jobs,
            "max_age_hours": self.max_age_hours,
            "max_disk_gb": self.max_disk_gb,
        }
