"""``droplet3d`` subcommands of the recon room: ``reconstruct``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "reconstruct", help="orbit frames or video → calibrated cameras, masks and a textured mesh",
        description="Reconstruct a textured mesh (mesh.glb) with transforms.json, masks/ and manifest.json from a "
                    "folder of orbit frames or an orbit video. Orbit parameters not given are estimated from the "
                    "silhouettes.")
    p.add_argument("source", type=Path, metavar="FRAMES_DIR|VIDEO")
    p.add_argument("--out", type=Path, required=True, help="output folder (created; a job folder is updated in place)")
    p.add_argument("--elevation", type=float, help="camera elevation in degrees")
    p.add_argument("--fov", type=float, help="field of view across the larger image side, degrees")
    p.add_argument("--radius", type=float, help="orbit radius in metres (sets the mesh's scale; default 2)")
    p.add_argument("--direction", choices=("ccw", "cw"), help="direction of travel seen from above")
    p.add_argument("--start-azimuth", type=float, help="azimuth of frame 0 in degrees (default 0: front view)")
    p.add_argument("--frame0-camera", action="store_true",
                   help="the given elevation, fov and radius are frame 0's own camera (the capture the orbit was "
                        "generated from), not the orbit's mean: the other frames' jitter and zoom are measured from it")
    loop = p.add_mutually_exclusive_group()
    loop.add_argument("--closed", dest="closed", action="store_true", default=None,
                      help="the last frame repeats the first")
    loop.add_argument("--open", dest="closed", action="store_false", help="the last frame does not repeat the first")
    p.add_argument("--calibrate", action="store_true", help="estimate elevation/fov/direction/loop even when given")
    p.add_argument("--uniform-cameras", dest="per_frame", action="store_false",
                   help="keep the uniform orbit (a perfect turntable) instead of estimating every frame's pose")
    p.add_argument("--resolution", type=int, default=128, help="grid cells along the object's longest side")
    p.add_argument("--face-budget", type=int, default=10000, help="target face count after decimation")
    p.add_argument("--texture-size", type=int, default=1024, help="texture width and height in pixels")
    p.add_argument("--no-carve", dest="carve", action="store_false", help="skip photo-consistency carving")
    p.add_argument("--no-repair", dest="repair", action="store_false",
                   help="keep every enclosed mask hole (default: close those the other views contradict)")
    p.add_argument("--matting", choices=("auto", "learned", "colour"), default="auto",
                   help="masks from the learned matting model (auto: when it can run, else from the background colour "
                        "with a warning)")
    p.add_argument("--matting-model", default=None, help="rembg model name (default birefnet-general-lite)")
    p.add_argument("--format", dest="formats", action="append", choices=("glb", "obj", "ply"),
                   help="extra mesh formats besides glb (repeatable)")
    p.set_defaults(func=run_reconstruct)

    f = commands.add_parser(
        "fetch-models", help="download the learned matting weights (for an offline machine)",
        description="Download the learned matting model's weights into rembg's cache ($REMBG_HOME, default ~/.rembg) "
                    "so that reconstruction can use them without network access; with --ckpt also a hub checkpoint.")
    f.add_argument("--matting-model", default=None, help="rembg model name (default birefnet-general-lite)")
    f.add_argument("--ckpt", help="also fetch this hub checkpoint (e.g. DropletX/Droplet3D-5B) into the hub cache")
    f.set_defaults(func=run_fetch_models)


def run_reconstruct(args: argparse.Namespace) -> int:
    from .pipeline import ReconOptions, reconstruct

    formats = ("glb", *(f for f in dict.fromkeys(args.formats or ()) if f != "glb"))
    options = ReconOptions(
        elevation_deg=args.elevation, fov_deg=args.fov, radius=args.radius, direction=args.direction,
        start_azimuth_deg=args.start_azimuth, closed=args.closed, frame0_camera=args.frame0_camera,
        calibrate=args.calibrate, per_frame=args.per_frame,
        resolution=args.resolution, carve=args.carve, repair=args.repair, face_budget=args.face_budget,
        texture_size=args.texture_size, formats=formats, matting=args.matting,
        **({"matting_model": args.matting_model} if args.matting_model else {}))

    def progress(stage: str, step: int, total: int, elapsed: float) -> None:
        print(f"\r{stage} {step}/{total} {elapsed:6.1f}s", end="" if step < total else "\n", file=sys.stderr)

    result = reconstruct(args.source, args.out, options, progress=progress)
    o = result.orbit
    print(f"orbit: {o.num_frames} frames, elevation {o.elevation_deg:.2f}°, fov {o.fov_deg:.2f}°, "
          f"{'ccw' if o.direction > 0 else 'cw'}, {'closed' if o.closed else 'open'} loop, radius {o.radius:g} m")
    for warning in result.warnings:
        print(f"warning: {warning['message']}", file=sys.stderr)
    section = result.manifest.get("reconstruction", result.manifest)
    print(f"wrote {result.mesh_path}: {section['mesh']['faces']} faces, "
          f"{section['timings_s']['total']:.1f} s")
    return 0


def run_fetch_models(args: argparse.Namespace) -> int:
    from .matting import DEFAULT_MODEL, MODELS, fetch_weights

    model = args.matting_model or DEFAULT_MODEL
    path = fetch_weights(model)
    print(f"matting: {model} ({MODELS[model]}) at {path}")
    if args.ckpt:
        from ..engine.checkpoint import resolve_checkpoint

        folder, _ = resolve_checkpoint(args.ckpt)
        print(f"checkpoint: {args.ckpt} at {folder}")
    return 0
