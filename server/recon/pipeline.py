"""``reconstruct`` and ``calibrate``: the recon room's doorway.

Stages (each reported through ``progress("reconstructing", step, total, elapsed)``):
1 load frames → 2 masks → 3 orbit (given or calibrated) → 4 visual hull → 5 photo-consistency carving
→ 6 surface → 7 texture → 8 write. Everything is written into a staging folder beside ``out_dir``
and moved in at the end, so a failure or a cancel leaves ``out_dir`` as it was.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .. import __version__
from ..errors import Cancelled, InputError, ReconstructionError
from ..files import FRAME0_ALPHA, make_staging, write_json_atomic
from ..orbit import DEFAULT_ELEVATION_DEG, DEFAULT_FOV_DEG, DEFAULT_RADIUS, Cameras, Orbit, write_transforms
from .cameras import estimate_cameras
from .carving import carve_concavities
from .export import textured_mesh, write_mesh
from .frames import IMAGE_SUFFIXES, Frames, load_frames, with_frame0_alpha
from .hull import (
    CONSISTENT,
    GRAZING_VOTE,
    carve_hull,
    forgiving_field,
    slipped_views,
    unexplained_fraction,
    voting_field,
)
from .limits import MAX_RESOLUTION, MIN_RESOLUTION
from .mask_repair import repair_masks
from .masks import MATTING, frame_masks
from .matting import DEFAULT_MODEL
from .silhouettes import SilhouetteField
from .surface import extract_surface
from .texture import bake_texture, build_atlas, vertex_colours

log = logging.getLogger(__name__)

STAGE = "reconstructing"
FORMATS = ("glb", "obj", "ply")
Progress = Callable[[str, int, int, float], None]


@dataclass(frozen=True)
class ReconOptions:
    """Orbit parameters (None → estimated from the silhouettes) and mesh options."""

    elevation_deg: float | None = None
    fov_deg: float | None = None
    radius: float | None = None
    direction: int | str | None = None  # +1/"ccw" or −1/"cw"
    start_azimuth_deg: float | None = None
    closed: bool | None = None
    frame0_camera: bool = False  # the given elevation/fov/radius/start azimuth are frame 0's camera (a capture)
    calibrate: bool = False  # estimate elevation/fov/direction/closed even when given
    per_frame: bool = True  # each frame's own pose from feature tracks (False: the uniform orbit)
    resolution: int = 128  # grid cells along the object's longest side
    carve: bool = True  # photo-consistency carving of concavities
    repair: bool = True  # fill what the other views contradict in masks that contradict each other (mask_repair.py)
    face_budget: int = 10000
    texture_size: int = 1024
    formats: tuple[str, ...] = ("glb",)
    matting: str = "auto"  # auto (learned when its model can run, else colour with a warning) | learned | colour
    matting_model: str = DEFAULT_MODEL
    frame0_alpha: Path | None = None  # an exact cut-out of frame 0 (8-bit, the frames' size): its mask

    def __post_init__(self) -> None:
        if isinstance(self.direction, str):
            if self.direction.lower() not in ("ccw", "cw"):
                raise InputError(f"direction must be ccw or cw, got {self.direction!r}", field="direction")
            object.__setattr__(self, "direction", 1 if self.direction.lower() == "ccw" else -1)
        if not MIN_RESOLUTION <= self.resolution <= MAX_RESOLUTION:
            raise InputError(f"resolution must lie in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], got {self.resolution}",
                             field="resolution")
        if self.face_budget < 100:
            raise InputError(f"face budget must be at least 100, got {self.face_budget}", field="face_budget")
        if self.texture_size not in (256, 512, 1024, 2048, 4096):
            raise InputError(f"texture size must be a power of two in [256, 4096], got {self.texture_size}",
                             field="texture_size")
        # Given orbit parameters go through the orbit model's own checks (same fields, same messages).
        Orbit(num_frames=1, elevation_deg=_or(self.elevation_deg, 0.0), fov_deg=_or(self.fov_deg, 40.0),
              radius=_or(self.radius, DEFAULT_RADIUS), direction=_or(self.direction, 1))
        if self.matting not in MATTING:
            raise InputError(f"matting must be one of {', '.join(MATTING)}, got {self.matting!r}", field="matting")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or "glb" not in self.formats:
            raise InputError(f"formats must include glb and come from {FORMATS}, got {self.formats}", field="formats")


def _or(value, default):
    return default if value is None else value


@dataclass
class ReconResult:
    orbit: Orbit
    cameras: Cameras
    mesh_path: Path | None
    transforms_path: Path
    manifest: dict = field(default_factory=dict)
    warnings: list[dict] = field(default_factory=list)  # {code, field, message}: e.g. a prior used for a camera


class _Run:
    """Bookkeeping for one call: progress, cancel checks, timings."""

    def __init__(self, total: int, progress: Progress | None, should_cancel: Callable[[], bool] | None) -> None:
        self.total, self.progress, self.should_cancel = total, progress, should_cancel
        self.start = self.last = time.perf_counter()
        self.step = 0
        self.timings: dict[str, float] = {}

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.last, 4)
        self.last = now
        self.step += 1
        if self.progress is not None:
            self.progress(STAGE, self.step, self.total, now - self.start)
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled("reconstruction cancelled")


def reconstruct(source: str | Path, out_dir: str | Path, options: ReconOptions | None = None,
                progress: Progress | None = None, should_cancel: Callable[[], bool] | None = None) -> ReconResult:
    """Frames or a video → ``mesh.glb``, ``transforms.json``, ``masks/`` and ``manifest.json`` in ``out_dir``."""
    options = options or ReconOptions()
    source, out_dir = Path(source), Path(out_dir)
    run = _Run(8, progress, should_cancel)
    frames, masks, orbit, cameras, calibration, (mask_info, mask_warnings) = _frames_masks_orbit(source, options, run)
    warnings = [*mask_warnings, *calibration["warnings"]]

    turn = slice(0, orbit.period)  # a closing frame repeats frame 0: one turn is enough
    estimated = options.calibrate or bool(calibration["estimated"])
    turn_cameras = cameras.subset(np.arange(orbit.period))
    masks, field_ = _hull_field(masks, turn, turn_cameras, estimated, options.repair, mask_info, warnings)
    volume = carve_hull(field_, options.resolution)
    run.done("hull")
    carved = 0
    if options.carve:
        # The views the hull kept: a slipped view's mask would mark its lost part as background here too.
        views = field_.views
        volume, carved = carve_concavities(volume, field_, frames.rgb[turn][views], masks[turn][views], field_.cameras)
    run.done("carving")
    mesh = extract_surface(volume, options.face_budget)
    if not mesh.is_watertight:
        warnings.append({"code": "mesh_open", "field": "face_budget",
                         "message": f"the mesh is not closed: no closed surface of this object fits "
                                    f"{options.face_budget} faces (raise the face budget for a closed one)"})
    run.done("surface")
    vertices, faces, uv = build_atlas(mesh)
    texture = bake_texture(vertices, faces, uv, frames.rgb[turn], turn_cameras, options.texture_size)
    textured = textured_mesh(vertices, faces, uv, texture, vertex_colours(texture, uv))
    run.done("texture")

    def write(staging: Path) -> None:
        for fmt in options.formats:
            write_mesh(textured, staging / f"mesh.{fmt}")

    section = {
        "calibration": calibration,
        "masks": mask_info,
        "warnings": warnings,
        "mesh": {"vertices": len(mesh.vertices), "faces": len(mesh.faces),
                 "watertight": bool(mesh.is_watertight), "winding_consistent": bool(mesh.is_winding_consistent),
                 "volume_m3": float(mesh.volume) if mesh.is_volume else None,
                 "bounds_m": mesh.bounds.round(5).tolist(), "carved_voxels": int(carved),
                 "texture_size": options.texture_size, "formats": list(options.formats)},
    }
    manifest = _commit(out_dir, frames, masks, orbit, cameras, options, run, section, write)
    return ReconResult(orbit, cameras, out_dir / "mesh.glb", out_dir / "transforms.json", manifest, warnings)


def calibrate(source: str | Path, out_dir: str | Path, options: ReconOptions | None = None,
              progress: Progress | None = None) -> Orbit:
    """The cheap part only: masks and the orbit; writes ``transforms.json`` and ``masks/`` into ``out_dir``."""
    options = options or ReconOptions()
    return _calibrate(source, out_dir, options, progress)[0]


def _calibrate(source: Path, out_dir: Path, options: ReconOptions, progress: Progress | None,
               ) -> tuple[Orbit, list[dict]]:
    run = _Run(4, progress, None)
    frames, masks, orbit, cameras, calibration, (mask_info, mask_warnings) = _frames_masks_orbit(
        Path(source), options, run)
    section = {"calibration": calibration, "masks": mask_info}
    _commit(Path(out_dir), frames, masks, orbit, cameras, options, run, section, None)
    return orbit, [*mask_warnings, *calibration["warnings"]]


def write_nominal_transforms(job_dir: str | Path, options: ReconOptions | None = None) -> Orbit:
    """``transforms.json`` for ``job_dir/frames`` on the orbit as given (defaults for the rest).

    For a generated orbit whose cameras could not be measured (noise, no object found): the frames still get
    cameras, so every orbit job folder can be imported. Reads only the first frame's size.
    """
    options = options or ReconOptions()
    job_dir = Path(job_dir)
    names = sorted(p.name for p in (job_dir / "frames").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise InputError(f"{job_dir / 'frames'} holds no frames", field="frames")
    with Image.open(job_dir / "frames" / names[0]) as first:
        width, height = first.size
    orbit = Orbit(num_frames=len(names), elevation_deg=_or(options.elevation_deg, DEFAULT_ELEVATION_DEG),
                  fov_deg=_or(options.fov_deg, DEFAULT_FOV_DEG), radius=_or(options.radius, DEFAULT_RADIUS),
                  direction=_or(options.direction, 1), start_azimuth_deg=_or(options.start_azimuth_deg, 0.0),
                  closed=bool(options.closed))
    write_transforms(job_dir / "transforms.json", orbit, width, height, [f"frames/{n}" for n in names])
    return orbit


def orbit_cameras(job_dir: str | Path, options: ReconOptions | None = None, *, mesh: bool,
                  progress: Progress | None = None, should_cancel: Callable[[], bool] | None = None,
                  ) -> tuple[Orbit, list[dict]]:
    """Cameras for a generated orbit in ``job_dir/frames`` (and ``mesh.glb`` with ``mesh=True``); the orbit job's
    one recon call, for the CLI and the service alike.

    The generation is never lost to its reconstruction: when the frames give no cameras or no mesh,
    ``transforms.json`` holds the nominal orbit (hints given, else defaults), ``manifest.json`` records the failure,
    and the returned warning ``{code, message}`` says what failed. On success the warnings say what went less well
    (cameras on priors or unsure, masks from colour alone, an open mesh). A cancel still raises.
    """
    job_dir = Path(job_dir)
    options = options or ReconOptions()
    if options.frame0_alpha is None and (job_dir / FRAME0_ALPHA).is_file():  # the input was a cut-out
        options = replace(options, frame0_alpha=job_dir / FRAME0_ALPHA)
    try:
        if mesh:
            result = reconstruct(job_dir / "frames", job_dir, options, progress, should_cancel)
            return result.orbit, _job_warnings(result.warnings)
        if progress is not None:
            progress(STAGE, 0, 0, 0.0)
        orbit, warnings = _calibrate(job_dir / "frames", job_dir, options, progress)
        return orbit, _job_warnings(warnings)
    except Cancelled:
        raise
    except Exception as exc:  # a bug in a late stage must not cost the generation either
        if not isinstance(exc, ReconstructionError):
            log.exception("reconstruction of %s failed unexpectedly", job_dir)
        code = exc.code if isinstance(exc, ReconstructionError) else "reconstruction_error"
        orbit = write_nominal_transforms(job_dir, options)
        what = "mesh" if mesh else "camera calibration"
        message = (f"{what} failed ({code}: {exc}); the frames and video are kept and transforms.json holds the "
                   "nominal orbit (given hints, else the default elevation, fov and direction)")
        failure = {"status": "failed", "code": code, "message": str(exc), "nominal_orbit": True}
        write_json_atomic(job_dir / "manifest.json", _manifest_with(job_dir, failure))
        return orbit, [{"code": "reconstruction_failed" if mesh else "nominal_cameras", "message": message}]


def _hull_field(masks: np.ndarray, turn: slice, cameras: Cameras, estimated: bool, repair: bool, mask_info: dict,
                warnings: list[dict]) -> tuple[np.ndarray, SilhouetteField]:
    """The masks and the hull's field. Consistent masks get the forgiving field. Where a few views' masks alone
    cut parts away (a matte that slipped there) and the others agree without them, it is built without them, with
    a warning. Masks that contradict each other (parts of the object matching the background) are repaired
    (unless ``repair`` is off) and get the voting field, with a warning. Records the decisions in ``mask_info``."""
    hull = forgiving_field(masks[turn], cameras, estimated)
    unexplained = _unexplained(hull, masks[turn])
    slipped, agreed = _without_slips(hull, masks[turn], cameras, estimated)
    slips: dict = {"slipped_views": []}
    if agreed is not None:
        hull, after = agreed
        slips = {"slipped_views": slipped.tolist(), "unexplained_without_slipped": round(after, 4)}
        warnings.append({"code": "masks_slipped", "field": "matting",
                         "message": f"the masks of frames {', '.join(map(str, slipped.tolist()))} alone cut away "
                                    f"parts of the object that the other views show (a matte that lost a part "
                                    f"there): the hull was built without them"})
    elif unexplained > CONSISTENT:
        if repair:
            masks = masks.copy()
            masks[turn], mask_info["repaired"] = repair_masks(masks[turn], cameras, estimated)
        hull = voting_field(masks[turn], cameras, estimated)
        warnings.append({"code": "masks_inconsistent", "field": "matting",
                         "message": f"the masks contradict each other ({unexplained:.0%} of a view's foreground "
                                    f"unexplained by the others; parts of the object likely match the background): "
                                    f"a point was kept unless more than {hull.forgive} of {len(cameras)} views see "
                                    f"it outside (near the surface: {GRAZING_VOTE:.0%} of the views that see it "
                                    f"edge-on), so concavities few views see into may be filled; learned matting "
                                    f"(`droplet3d fetch-models`) gives consistent masks"})
    mask_info["hull"] = {"unexplained": round(unexplained, 4), "forgiven_views": hull.forgive, "views": len(cameras),
                         **slips}
    return masks, hull


def _unexplained(field: SilhouetteField, masks: np.ndarray) -> float:
    try:
        return unexplained_fraction(field, masks)
    except ReconstructionError:  # the hull is empty: nothing of any view is explained
        return 1.0


def _without_slips(hull: SilhouetteField, masks: np.ndarray, cameras: Cameras, estimated: bool
                   ) -> tuple[np.ndarray, tuple[SilhouetteField, float] | None]:
    """The views that slipped, and the field without them with its unexplained fraction when the other views'
    masks agree (else None)."""
    try:
        slipped = slipped_views(hull, masks)
    except ReconstructionError:  # even forgiving two more views leaves nothing
        return np.zeros(0, np.int64), None
    if len(slipped) == 0:
        return slipped, None
    field = forgiving_field(masks, cameras, estimated, views=np.setdiff1d(np.arange(len(cameras)), slipped))
    after = _unexplained(field, masks)
    return slipped, ((field, after) if after <= CONSISTENT else None)


def _job_warnings(warnings: list[dict]) -> list[dict]:
    """The reconstruction's warnings as a job reports them: ``{code, message}``."""
    return [{"code": w["code"], "message": w["message"]} for w in warnings]


def _frames_masks_orbit(source: Path, options: ReconOptions, run: _Run):
    frames = load_frames(source)
    if options.frame0_alpha is not None:
        frames = with_frame0_alpha(frames, options.frame0_alpha)
    run.done("load")
    masks, mask_info, warnings = frame_masks(frames, options.matting, options.matting_model)
    run.done("masks")
    base = Orbit(num_frames=frames.count, radius=_or(options.radius, DEFAULT_RADIUS),
                 start_azimuth_deg=_or(options.start_azimuth_deg, 0.0))
    given = {"elevation": options.elevation_deg, "fov": options.fov_deg, "direction": options.direction,
             "closed": options.closed}
    if options.calibrate:
        given = dict.fromkeys(given)
    t0 = time.perf_counter()
    estimate = estimate_cameras(frames.rgb, masks, base, **given, per_frame=options.per_frame,
                                frame0=options.frame0_camera and not options.calibrate)
    for warning in estimate.warnings:
        log.warning("%s", warning["message"])
    calibration = {"estimated": sorted(k for k, v in given.items() if v is None), **estimate.report,
                   "confidence": estimate.confidence, "warnings": estimate.warnings,
                   "seconds": round(time.perf_counter() - t0, 3)}
    run.done("orbit")
    return frames, masks, estimate.orbit, estimate.cameras, calibration, (mask_info, warnings)


def _frame_paths(frames: Frames, out_dir: Path) -> tuple[list[str], bool]:
    """Paths for ``transforms.json`` and whether the frames must be put into ``out_dir/frames``."""
    if frames.source_dir is not None and frames.source_dir.resolve() == (out_dir / "frames").resolve():
        return [f"frames/{name}" for name in frames.names], False
    if frames.source_dir is not None:  # copied as they are
        return [f"frames/{k:04d}{Path(name).suffix.lower()}" for k, name in enumerate(frames.names)], True
    return [f"frames/{k:04d}.png" for k in range(frames.count)], True


def _commit(out_dir: Path, frames: Frames, masks: np.ndarray, orbit: Orbit, cameras: Cameras, options: ReconOptions,
            run: _Run, section: dict | None, write: Callable[[Path], None] | None) -> dict:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = make_staging(out_dir.parent)
    try:
        paths, copy_frames = _frame_paths(frames, out_dir)
        if copy_frames:
            (staging / "frames").mkdir()
            for k, path in enumerate(paths):
                if frames.source_dir is not None:
                    shutil.copyfile(frames.source_dir / frames.names[k], staging / path)
                else:  # decoded video frames
                    cv2.imwrite(str(staging / path), cv2.cvtColor(frames.rgb[k], cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_PNG_COMPRESSION, 1])
        (staging / "masks").mkdir()
        for k in range(frames.count):
            cv2.imwrite(str(staging / "masks" / f"{k:04d}.png"), masks[k].astype(np.uint8) * 255,
                        [cv2.IMWRITE_PNG_COMPRESSION, 1])
        width, height = frames.size
        calibration = (section or {}).get("calibration") or {}
        extra = {"calibration": {k: calibration[k] for k in ("confidence", "warnings") if k in calibration}}
        write_transforms(staging / "transforms.json", orbit, width, height, paths, cameras, extra)
        manifest: dict = {}
        if write is not None:
            write(staging)
            run.done("write")
            manifest = _manifest_with(out_dir, _section(frames, orbit, options, run, section))
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        else:
            run.done("write")
        _move_in(staging, out_dir)
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _section(frames: Frames, orbit: Orbit, options: ReconOptions, run: _Run, extra: dict | None) -> dict:
    width, height = frames.size
    return {
        "kind": "reconstruction",
        "version": __version__,
        "frames": {"count": frames.count, "width": width, "height": height, "alpha": frames.alpha is not None},
        "orbit": asdict(orbit),
        "options": {k: list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v
                    for k, v in asdict(options).items()},
        **(extra or {}),
        "timings_s": {**run.timings, "total": round(time.perf_counter() - run.start, 4)},
        "libraries": _versions(),
    }


def _manifest_with(out_dir: Path, section: dict) -> dict:
    """Merge into a job's existing manifest under ``reconstruction``, or stand alone."""
    existing = out_dir / "manifest.json"
    if existing.is_file():
        try:
            data = json.loads(existing.read_text())
        except (OSError, json.JSONDecodeError):
            data = None
        if isinstance(data, dict) and data.get("kind") != "reconstruction":  # not our own earlier run
            return {**data, "reconstruction": section}
    return section


def _move_in(staging: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    for entry in staging.iterdir():
        dest = out_dir / entry.name
        if dest.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".old", dir=out_dir))
            os.replace(dest, old / entry.name)
            os.replace(entry, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(entry, dest)


def _versions() -> dict:
    import skimage
    import trimesh

    return {"python": platform.python_version(), "numpy": np.__version__, "trimesh": trimesh.__version__,
            "scikit-image": skimage.__version__, "opencv": cv2.__version__}
