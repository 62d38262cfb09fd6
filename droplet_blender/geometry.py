"""Orbit geometry for the importer, read from a job's ``transforms.json``. Pure Python, no ``bpy``.

``transforms.json`` (docs/design.md §3) follows nerfstudio: ``transform_matrix`` is camera-to-world with
the camera looking down −Z and +Y up — exactly a Blender camera's ``matrix_world`` — in the orbit's
normalised frame (object at the origin). ``fl_x`` is in pixels and the field of view spans the
larger image side (Blender's sensor fit AUTO). Matrices here are row-major ``4×4`` nested lists.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

Matrix = list[list[float]]


class JobFolderError(ValueError):
    """A job folder that cannot be imported; the message names the file and what is wrong."""


@dataclass(frozen=True)
class OrbitCameras:
    """The cameras of one orbit job."""

    width: int
    height: int
    fov: float  # radians, across the larger side
    matrices: list[Matrix]  # camera-to-world per frame
    file_paths: list[str]  # relative to the job folder
    orbit: dict = field(default_factory=dict)  # our extra block: elevation_deg, fov_deg, radius, ...

    @property
    def num_frames(self) -> int:
        return len(self.matrices)


def read_orbit(folder: Path) -> OrbitCameras:
    """Parse ``folder/transforms.json``; raises :class:`JobFolderError` with a clear reason."""
    path = Path(folder) / "transforms.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise JobFolderError(f"{path} is missing: the job has no camera poses to import.") from None
    except (OSError, ValueError) as exc:
        raise JobFolderError(f"Cannot read {path}: {exc}") from None
    try:
        w, h = int(data["w"]), int(data["h"])
        fl = float(data.get("fl_x") or (w / 2) / math.tan(float(data["camera_angle_x"]) / 2))
        frames = data["frames"]
        matrices = [[[float(v) for v in row] for row in f["transform_matrix"]] for f in frames]
        paths = [str(f["file_path"]) for f in frames]
    except (KeyError, TypeError, ValueError) as exc:
        raise JobFolderError(f"{path} is not a valid transforms.json ({exc!r} missing or malformed).") from None
    if not frames or any(len(m) != 4 or any(len(r) != 4 for r in m) for m in matrices):
        raise JobFolderError(f"{path} has no frames or a transform_matrix that is not 4×4.")
    orbit = data.get("orbit") if isinstance(data.get("orbit"), dict) else {}
    return OrbitCameras(w, h, fov_from_focal(fl, w, h), matrices, paths, orbit)


def fov_from_focal(focal_px: float, width: int, height: int) -> float:
    """Field of view (radians) across the larger image side."""
    return 2.0 * math.atan((max(width, height) / 2.0) / focal_px)


def fov_across_larger(angle: float, sensor_fit: str, width: int, height: int) -> float:
    """A Blender camera's field of view (radians) across the larger image side; ``angle`` is across the side its
    ``sensor_fit`` names (AUTO: the larger one)."""
    larger, smaller = max(width, height), min(width, height)
    fitted_is_larger = sensor_fit == "AUTO" or (sensor_fit == "HORIZONTAL") == (width >= height)
    if fitted_is_larger or larger == smaller:
        return angle
    return 2.0 * math.atan(math.tan(angle / 2.0) * larger / smaller)


# A capture camera this far off aiming at the objects' centre, or rolled this much, is no orbit camera.
CAPTURE_TOLERANCE_DEG = 2.0


def capture_orbit(c2w: Matrix, centre: tuple[float, float, float], fov: float) -> dict | None:
    """The orbit hints a capture camera gives (the generated orbit starts from its view): ``{elevation, fov,
    radius, start_azimuth}`` in degrees and world units about ``centre``, as the service's ``orbit`` params; None
    when the camera does not look at ``centre`` with its horizon level, as every orbit camera does."""
    offset = [t - c for t, c in zip(translation(c2w), centre, strict=True)]
    distance = math.sqrt(sum(v * v for v in offset))
    if distance <= 0.0:
        return None
    forward = [-v for v in axis(c2w, 2)]
    aim = -sum(f * v for f, v in zip(forward, offset, strict=True)) / distance
    roll = axis(c2w, 0)[2]  # the right axis's rise: zero for a level horizon
    tolerance = math.sin(math.radians(CAPTURE_TOLERANCE_DEG))
    if aim < math.cos(math.radians(CAPTURE_TOLERANCE_DEG)) or abs(roll) > tolerance:
        return None
    x, y, z = offset
    return {"elevation": math.degrees(math.asin(max(-1.0, min(1.0, z / distance)))), "fov": math.degrees(fov),
            "radius": distance, "start_azimuth": math.degrees(math.atan2(x, -y))}


def translation(m: Matrix) -> tuple[float, float, float]:
    return m[0][3], m[1][3], m[2][3]


def axis(m: Matrix, i: int) -> tuple[float, float, float]:
    return m[0][i], m[1][i], m[2][i]


def view_depth(c2w: Matrix, point: tuple[float, float, float]) -> float:
    """Distance of ``point`` along the camera's viewing direction (−Z)."""
    d = [p - t for p, t in zip(point, translation(c2w), strict=True)]
    z = axis(c2w, 2)
    return -sum(a * b for a, b in zip(d, z, strict=True))


def plane_size(fov: float, width: int, height: int, depth: float) -> tuple[float, float]:
    """Width and height of the plane at ``depth`` that exactly fills the view (fov across the larger side)."""
    larger = 2.0 * depth * math.tan(fov / 2.0)
    if width >= height:
        return larger, larger * height / width
    return larger * width / height, larger


def plane_matrix(c2w: Matrix, depth: float) -> Matrix:
    """Local-to-world matrix of an image plane facing the camera ``depth`` in front of it (same rotation)."""
    z = axis(c2w, 2)
    t = translation(c2w)
    m = [row[:] for row in c2w]
    for i in range(3):
        m[i][3] = t[i] - depth * z[i]
    return m


def visibility_keys(index: int, count: int, frame_start: int) -> list[tuple[int, bool]]:
    """Constant keys so plane ``index`` of ``count`` shows on its own frame only (scene frame ``frame_start+index``)."""
    frame = frame_start + index
    keys = [(frame - 1, False)] if index > 0 else []  # constant interpolation holds it hidden before
    keys.append((frame, True))
    if index < count - 1:
        keys.append((frame + 1, False))
    return keys


def bounds(points: list[tuple[float, float, float]]) -> tuple[tuple[float, float, float], float]:
    """Centre of the axis-aligned box around ``points`` and its largest side."""
    lo = [min(p[i] for p in points) for i in range(3)]
    hi = [max(p[i] for p in points) for i in range(3)]
    return tuple((a + b) / 2.0 for a, b in zip(lo, hi, strict=True)), max(b - a for a, b in zip(lo, hi, strict=True))
