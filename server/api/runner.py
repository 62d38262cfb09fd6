"""What one job does, per mode, in its folder (which is the engine's and the reconstruction's out_dir).

- orbit: Droplet3D generation, then ``reconstruct`` (mesh) or ``calibrate`` (cameras only), so that
  every orbit job has a ``transforms.json``;
- video: DropletVideo generation;
- reconstruct: the uploaded frames (``frames/``) or video (``upload/video.*``) → mesh.
Then ``frames.zip`` is packed when there are frames.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import Cancelled, DropletError, InputError
from .artifacts import write_frames_zip
from .engines import EXPECTED_KIND, EngineRegistry

Progress = Callable[[str, int, int, float], None]
GENERATION_KEYS = ("prompt", "negative_prompt", "width", "height", "num_frames", "steps", "guidance_scale", "fps",
                   "view_align", "background", "profile")


def generation_params(params: dict[str, Any]):
    """The engine's GenerationParams from the job's params; unset values keep the engine's defaults."""
    from ..engine import GenerationParams

    kwargs = {key: params[key] for key in GENERATION_KEYS if params.get(key) is not None}
    kwargs["seed"] = params.get("seed")  # None means random, and is meaningful
    return GenerationParams(**kwargs)


def validate_generation(params: dict[str, Any]) -> None:
    """The engine's own checks, run at submission so that a bad combination is a 4xx, not a failed job."""
    generation_params(params).validate(EXPECTED_KIND[params["mode"]])


RECON_FIELDS = {"elevation_deg": "orbit.elevation", "fov_deg": "orbit.fov", "radius": "orbit.radius",
                "direction": "orbit.direction", "start_azimuth_deg": "orbit.start_azimuth", "closed": "orbit.closed",
                "resolution": "mesh.resolution", "face_budget": "mesh.face_budget", "texture_size": "mesh.texture_size",
                "matting": "mesh.matting"}


def validate_recon(params: dict[str, Any]) -> None:
    """The reconstruction's own option checks, at submission; fields are renamed to the request's."""
    try:
        recon_options(params)
    except InputError as exc:
        exc.field = RECON_FIELDS.get(exc.field, exc.field)
        raise


def recon_options(params: dict[str, Any]):
    from ..recon import ReconOptions

    hints = params.get("orbit") or {}
    mesh = params.get("mesh") or {}
    names = {"elevation": "elevation_deg", "fov": "fov_deg", "radius": "radius", "start_azimuth": "start_azimuth_deg",
             "closed": "closed", "frame0": "frame0_camera", "calibrate": "calibrate"}
    kwargs = {target: hints[key] for key, target in names.items() if hints.get(key) is not None}
    if hints.get("direction") is not None:
        kwargs["direction"] = 1 if hints["direction"] == "ccw" else -1
    kwargs.update({key: value for key, value in mesh.items() if value is not None})
    return ReconOptions(**kwargs)


def run_job(mode: str, params: dict[str, Any], inputs: dict[str, str], job_dir: Path, engines: EngineRegistry,
            progress: Progress, should_cancel: Callable[[], bool]) -> list[dict[str, str]]:
    """Run the job into ``job_dir``; returns ``{code, message}`` warnings for the caller (the job still succeeded)."""
    warnings: list[dict[str, str]] = []
    if mode == "reconstruct":
        from ..recon import reconstruct

        source = job_dir / inputs["source"]
        result = reconstruct(source, job_dir, recon_options(params), progress=progress, should_cancel=should_cancel)
        warnings += [{"code": w["code"], "message": w["message"]} for w in result.warnings]
    else:
        from ..engine import write_orbit_folder

        progress("loading", 0, 0, 0.0)
        engine = engines.get(mode)
        if should_cancel():
            raise Cancelled("cancelled before generation started")
        generation = engine.generate(job_dir / inputs["image"], generation_params(params), progress=progress,
                                     should_cancel=should_cancel)
        write_orbit_folder(generation, job_dir, progress=progress)
        # e.g. a speed switch this machine could not run
        warnings.extend({"code": "speed_switch", "message": message} for message in generation.warnings)
        if mode == "orbit":
            from ..recon import orbit_cameras

            if not (job_dir / "frames").is_dir():
                raise DropletError("the generation wrote no frames/ folder", code="no_frames")
            _, recon_warnings = orbit_cameras(job_dir, recon_options(params), mesh=bool(params.get("reconstruct")),
                                              progress=progress, should_cancel=should_cancel)
            warnings += recon_warnings
    if should_cancel():
        raise Cancelled("cancelled")
    progress("writing", 0, 0, 0.0)
    write_frames_zip(job_dir)
    return warnings
