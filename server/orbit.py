"""The orbit camera model: the one place where frame k's camera is defined.

Conventions (docs/design.md §3): Blender's world, right-handed, +Z up, metres, object at the origin.
Frame k of N sits at azimuth ``φ_k = φ_0 + s·360°·k/P`` with ``P = N`` (a full turn, the start not
repeated) or ``P = N - 1`` when the last frame closes the loop (repeats frame 0); ``s = +1`` is
counter-clockwise seen from above. The camera is at ``r·(sin φ cos θ, −cos φ cos θ, sin θ)``
looking at the origin with +Z up, so φ = 0 is Blender's front view (camera on −Y) and φ = 90°
puts it on +X. The field of view spans the larger image side (Blender's sensor fit AUTO).

Camera-to-world matrices follow NeRF/nerfstudio and Blender cameras alike: the camera looks down
its −Z axis with +Y up, so a matrix here is also a Blender camera's ``matrix_world``.
Pixel coordinates put (0, 0) at the top-left corner of the image, x right, y down.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

DEFAULT_ELEVATION_DEG = 0.0
DEFAULT_FOV_DEG = 40.0
DEFAULT_RADIUS = 2.0


@dataclass(frozen=True)
class Orbit:
    """A circular orbit of ``num_frames`` cameras around the origin."""

    num_frames: int
    elevation_deg: float = DEFAULT_ELEVATION_DEG
    fov_deg: float = DEFAULT_FOV_DEG
    radius: float = DEFAULT_RADIUS
    direction: int = 1
    start_azimuth_deg: float = 0.0
    closed: bool = False

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise InputError(f"an orbit needs at least 1 frame, got {self.num_frames}", field="num_frames")
        if not -89.0 <= self.elevation_deg <= 89.0:
            raise InputError(f"elevation must lie in [-89, 89] degrees, got {self.elevation_deg}", field="elevation")
        if not 1.0 <= self.fov_deg <= 170.0:
            raise InputError(f"field of view must lie in [1, 170] degrees, got {self.fov_deg}", field="fov")
        if not self.radius > 0:
            raise InputError(f"radius must be positive, got {self.radius}", field="radius")
        if self.direction not in (1, -1):
            raise InputError(f"direction must be +1 (ccw) or -1 (cw), got {self.direction}", field="direction")

    @property
    def period(self) -> int:
        """Frames per full turn."""
        return max(self.num_frames - 1, 1) if self.closed else self.num_frames

    def azimuths_deg(self) -> np.ndarray:
        """``(N,) float64`` azimuth of every frame in degrees."""
        k = np.arange(self.num_frames, dtype=np.float64)
        return self.start_azimuth_deg + self.direction * 360.0 * k / self.period

    def positions(self) -> np.ndarray:
        """``(N, 3) float64`` camera centres."""
        return np.stack([camera_position(a, self.elevation_deg, self.radius) for a in self.azimuths_deg()])

    def camera_to_world(self) -> np.ndarray:
        """``(N, 4, 4) float64`` camera-to-world matrices (camera looks down −Z, +Y up)."""
        return np.stack([look_at(p) for p in self.positions()])

    def focal_px(self, width: int, height: int) -> float:
        return focal_from_fov(self.fov_deg, width, height)

    def intrinsics(self, width: int, height: int) -> np.ndarray:
        """``(3, 3)`` pinhole matrix for a ``width``×``height`` image."""
        f = self.focal_px(width, height)
        return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def camera_position(azimuth_deg: float, elevation_deg: float, radius: float) -> np.ndarray:
    """``(3,)`` position of a camera at the given azimuth/elevation on the orbit sphere."""
    phi, theta = math.radians(azimuth_deg), math.radians(elevation_deg)
    return radius * np.array([math.sin(phi) * math.cos(theta), -math.cos(phi) * math.cos(theta), math.sin(theta)])


def look_at(position: np.ndarray, target: np.ndarray | None = None) -> np.ndarray:
    """``(4, 4)`` camera-to-world matrix of a camera at ``position`` looking at ``target`` with +Z up."""
    position = np.asarray(position, dtype=np.float64)
    target = np.zeros(3) if target is None else np.asarray(target, dtype=np.float64)
    forward = target - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-9:  # looking straight up or down: any right vector will do
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, position
    return c2w


def focal_from_fov(fov_deg: float, width: int, height: int) -> float:
    """Focal length in pixels for a field of view measured across the larger image side."""
    return (max(width, height) / 2.0) / math.tan(math.radians(fov_deg) / 2.0)


def fov_from_focal(focal_px: float, width: int, height: int) -> float:
    return math.degrees(2.0 * math.atan((max(width, height) / 2.0) / focal_px))


def project(points: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points into one camera.

    ``points (n, 3)``, ``c2w (4, 4)``, ``intrinsics (3, 3)`` → pixels ``(n, 2)`` and depths ``(n,)``
    (distance along the viewing axis; positive in front of the camera).
    """
    w2c = np.linalg.inv(c2w)
    cam = np.asarray(points, dtype=np.float64) @ w2c[:3, :3].T + w2c[:3, 3]
    depth = -cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = intrinsics[0, 2] + intrinsics[0, 0] * cam[:, 0] / depth
        v = intrinsics[1, 2] - intrinsics[1, 1] * cam[:, 1] / depth
    return np.stack([u, v], axis=1), depth


def transforms_dict(orbit: Orbit, width: int, height: int, file_paths: list[str]) -> dict:
    """The NeRF-synthetic/nerfstudio ``transforms.json`` content for an orbit, plus our ``orbit`` block."""
    if len(file_paths) != orbit.num_frames:
        raise InputError(f"{len(file_paths)} file paths for an orbit of {orbit.num_frames} frames", field="frames")
    f = orbit.focal_px(width, height)
    return {
        "camera_angle_x": 2.0 * math.atan(width / (2.0 * f)),
        "fl_x": f,
        "fl_y": f,
        "cx": width / 2.0,
        "cy": height / 2.0,
        "w": width,
        "h": height,
        "orbit": asdict(orbit),
        "frames": [
            {"file_path": path, "transform_matrix": m.tolist()}
            for path, m in zip(file_paths, orbit.camera_to_world(), strict=True)
        ],
    }


def write_transforms(path: str | Path, orbit: Orbit, width: int, height: int, file_paths: list[str]) -> None:
    Path(path).write_text(json.dumps(transforms_dict(orbit, width, height, file_paths), indent=2))


def read_transforms(path: str | Path) -> tuple[Orbit | None, dict]:
    """Read ``transforms.json``: the orbit when the file carries our ``orbit`` block, and the raw dict."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}", field="transforms") from exc
    orbit = Orbit(**data["orbit"]) if isinstance(data.get("orbit"), dict) else None
    return orbit, data
