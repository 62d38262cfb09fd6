"""The orbit camera model: the one place where frame k's camera is defined.

Conventions (docs/design.md §3): Blender's world, right-handed, +Z up, metres, object at the origin.
Frame k of N sits at azimuth ``φ_k = φ_0 + s·360°·k/P`` with ``P = N`` (a full turn, the start not
repeated) or ``P = N - 1`` when the last frame closes the loop (repeats frame 0); ``s = +1`` is
counter-clockwise seen from above. The camera is at ``r·(sin φ cos θ, −cos φ cos θ, sin θ)``
looking at the origin with +Z up, so φ = 0 is Blender's front view (camera on −Y) and φ = 90°
puts it on +X. The field of view spans the larger image side (Blender's sensor fit AUTO).

Camera-to-world matrices follow NeRF/nerfstudio and Blender cameras alike: the camera looks down
its −Z axis with +Y up, so a matrix here is also a Blender camera's ``matrix_world``.
Pixel coordinates put (0, 0) at the top-left corner of the image, x right, y down (pixel ``(i, j)``'s
centre is at ``(j + 0.5, i + 0.5)``); "index" coordinates put pixel centres on integers instead.

:class:`Orbit` is the uniform turntable (shared parameters); :class:`Cameras` holds every frame's own
pose, which is what reconstruction, ``transforms.json`` and the add-on use. A generated orbit is not a
perfect turntable, so its cameras are estimated per frame (``droplet3d.recon.cameras``) starting from the
uniform one. Zoom is a change of the camera's distance (a dolly): all frames share one field of view.
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
        return self.cameras().c2w

    def cameras(self) -> Cameras:
        """The uniform orbit's per-frame cameras."""
        return Cameras.on_sphere(self.azimuths_deg(), self.elevation_deg, self.radius, self.fov_deg)

    def focal_px(self, width: int, height: int) -> float:
        return focal_from_fov(self.fov_deg, width, height)

    def intrinsics(self, width: int, height: int) -> np.ndarray:
        """``(3, 3)`` pinhole matrix for a ``width``×``height`` image."""
        return intrinsics_matrix(self.fov_deg, width, height)


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


def intrinsics_matrix(fov_deg: float, width: int, height: int) -> np.ndarray:
    """``(3, 3)`` pinhole matrix for a ``width``×``height`` image, principal point at the centre."""
    f = focal_from_fov(fov_deg, width, height)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def projection_matrices(c2w: np.ndarray, intrinsics: np.ndarray, index: bool = False) -> np.ndarray:
    """``(..., 3, 4)`` matrices taking homogeneous world points to ``(u·d, v·d, d)``, ``d`` the depth along the
    viewing axis (positive in front). ``c2w (..., 4, 4)``; ``index``: pixel centres on integers."""
    k = np.array(intrinsics, np.float64)
    if index:
        k[:2, 2] -= 0.5
    return k @ np.diag([1.0, -1.0, -1.0]) @ np.linalg.inv(c2w)[..., :3, :]  # the camera looks down −Z, +Y up


def project(points: np.ndarray, projection: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``(M, 2)`` and depths ``(M,)`` of world ``points (M, 3)`` under one ``(3, 4)`` projection.

    Computed in the projection's dtype (float32 for speed on large point sets); points behind the camera get
    a clamped depth for the division and keep their true (negative) depth.
    """
    p = np.asarray(projection)
    pts = np.asarray(points, dtype=p.dtype)
    # Column-wise products: numpy's matmul is slow for (M, 3) @ (3, 3).
    q = pts[:, 0:1] * p[:, 0] + pts[:, 1:2] * p[:, 1] + pts[:, 2:3] * p[:, 2] + p[:, 3]
    depth = q[:, 2]
    safe = np.where(np.abs(depth) > 1e-9, depth, 1e-9).astype(p.dtype)
    return q[:, :2] / safe[:, None], depth


def spread_views(count: int, total: int) -> np.ndarray:
    """Indices of at most ``count`` frames spread evenly over ``total`` frames (the first and last included)."""
    return np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(int))


@dataclass(frozen=True, eq=False)
class Cameras:
    """Every frame's own camera: ``c2w (N, 4, 4)`` camera-to-world matrices and one shared field of view."""

    c2w: np.ndarray
    fov_deg: float

    @classmethod
    def on_sphere(cls, azimuth_deg: np.ndarray, elevation_deg: np.ndarray, distance: np.ndarray,
                  fov_deg: float) -> Cameras:
        """Cameras at per-frame azimuth, elevation and distance (arrays or scalars), each looking at the origin."""
        a, e, d = np.broadcast_arrays(np.radians(np.atleast_1d(azimuth_deg)), np.radians(elevation_deg), distance)
        sa, ca, se, ce = np.sin(a), np.cos(a), np.sin(e), np.cos(e)
        # look_at's axes in closed form: right = (cos φ, sin φ, 0), up = (−sin φ sin θ, cos φ sin θ, cos θ), and
        # the camera's +Z points away from the origin.
        c2w = np.zeros((len(a), 4, 4))
        c2w[:, :3, 0] = np.stack([ca, sa, np.zeros_like(a)], 1)
        c2w[:, :3, 1] = np.stack([-sa * se, ca * se, ce], 1)
        c2w[:, :3, 2] = np.stack([sa * ce, -ca * ce, se], 1)
        c2w[:, :3, 3] = d[:, None] * c2w[:, :3, 2]
        c2w[:, 3, 3] = 1.0
        return cls(c2w, float(fov_deg))

    def __len__(self) -> int:
        return len(self.c2w)

    def subset(self, views: np.ndarray) -> Cameras:
        return Cameras(self.c2w[np.asarray(views)], self.fov_deg)

    def centres(self) -> np.ndarray:
        """``(N, 3)`` camera positions."""
        return self.c2w[:, :3, 3]

    def spherical(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Azimuth (degrees, unwrapped along the frames), elevation (degrees) and distance of every camera."""
        c = self.centres()
        distance = np.linalg.norm(c, axis=1)
        azimuth = np.degrees(np.unwrap(np.arctan2(c[:, 0], -c[:, 1])))
        elevation = np.degrees(np.arcsin(np.clip(c[:, 2] / np.maximum(distance, 1e-12), -1.0, 1.0)))
        return azimuth, elevation, distance

    @property
    def radius(self) -> float:
        """Mean distance of the cameras from the orbit centre."""
        return float(np.linalg.norm(self.centres(), axis=1).mean())

    @property
    def elevation_deg(self) -> float:
        """Mean elevation of the cameras."""
        return float(self.spherical()[1].mean())

    def focal_px(self, width: int, height: int) -> float:
        return focal_from_fov(self.fov_deg, width, height)

    def intrinsics(self, width: int, height: int) -> np.ndarray:
        return intrinsics_matrix(self.fov_deg, width, height)

    def projections(self, width: int, height: int, index: bool = False) -> np.ndarray:
        """``(N, 3, 4)`` projection matrices of every frame (see :func:`projection_matrices`)."""
        return projection_matrices(self.c2w, self.intrinsics(width, height), index)


def transforms_dict(orbit: Orbit, width: int, height: int, file_paths: list[str],
                    cameras: Cameras | None = None, extra: dict | None = None) -> dict:
    """The NeRF-synthetic/nerfstudio ``transforms.json`` content, plus our ``orbit`` block (the shared parameters).

    Each frame gets its own matrix from ``cameras`` (default: the uniform orbit's); ``extra`` adds top-level keys
    (the calibration's confidence).
    """
    cameras = orbit.cameras() if cameras is None else cameras
    if not len(file_paths) == orbit.num_frames == len(cameras):
        raise InputError(f"{len(file_paths)} file paths and {len(cameras)} cameras for an orbit of "
                         f"{orbit.num_frames} frames", field="frames")
    f = cameras.focal_px(width, height)
    return {
        "camera_angle_x": 2.0 * math.atan(width / (2.0 * f)),
        "fl_x": f,
        "fl_y": f,
        "cx": width / 2.0,
        "cy": height / 2.0,
        "w": width,
        "h": height,
        "orbit": asdict(orbit),
        **(extra or {}),
        "frames": [
            {"file_path": path, "transform_matrix": m.tolist()}
            for path, m in zip(file_paths, cameras.c2w, strict=True)
        ],
    }


def write_transforms(path: str | Path, orbit: Orbit, width: int, height: int, file_paths: list[str],
                     cameras: Cameras | None = None, extra: dict | None = None) -> None:
    Path(path).write_text(json.dumps(transforms_dict(orbit, width, height, file_paths, cameras, extra), indent=2))


def read_transforms(path: str | Path) -> tuple[Orbit | None, dict]:
    """Read ``transforms.json``: the orbit when the file carries our ``orbit`` block, and the raw dict."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}", field="transforms") from exc
    orbit = Orbit(**data["orbit"]) if isinstance(data.get("orbit"), dict) else None
    return orbit, data
