"""Reconstruction benchmark: Blender renders true meshes into orbits; we reconstruct and score them.

Three suites of orbits per object:

- ``clean``: a perfect turntable (plain background, some with alpha), reconstructed with the true orbit
  ("true orbit": every parameter given, uniform cameras) and from the frames alone ("frames");
- ``generated``: the same object on an orbit that looks generated (``render_orbit.Perturbation``: angular speed
  drifting up to ±12°, per-frame azimuth/elevation jitter, ±1.5 % zoom, ±4 % flicker, pixel noise; cw and ccw),
  reconstructed with the nominal orbit's elevation, fov and direction as hints ("hints"), from the frames
  alone ("frames"), and with the true frame-0 camera's elevation, fov, distance and azimuth as hints ("capture":
  what the add-on sends when it rendered the input itself, then importing the mesh unscaled);
- ``slip``: the perfect turntable with exact alpha (what a good learned matte gives), except that in 3 frames the
  alpha lost a disc of radius 15 % of the object's extent (``render_orbit.slip_mattes``: a matte that slipped there),
  reconstructed with the true orbit and from the frames alone.

Objects are split as in ``render_orbit``: TUNE objects (the reconstruction's thresholds were chosen on them) and
HELD_OUT objects (never tuned on); the means are printed for each group and the targets are read on the held-out
one. Every reconstruction runs in its own process so that its peak RAM is its own. Printed per run: Chamfer
distance and F-score at 1/2/5 % of the true mesh's largest extent (50k samples each), F@0.02 "placed" (the mesh
scaled about the orbit centre to the true one's largest extent, as the add-on places it at the source object's size:
a generated orbit carries no absolute scale, so a field-of-view error that only scales the mesh does not reach the
artist), F@0.02 "up to scale" (the mesh scaled about the orbit centre by whichever factor scores best, and that
factor: the shape alone, since a generated orbit's size is a gauge that its radius and fov trade off), per-frame
azimuth error
(mean and max, degrees, against the true per-frame poses), elevation and fov error, wall time, peak RAM;
``--psnr`` adds the PSNR of the textured mesh rendered unlit at held-out azimuths.

The masks are the colour model's unless ``--matting-model NAME`` asks for a learned one (its weights must already be
in rembg's cache; frames with an exact alpha keep it).

    .venv/bin/python scripts/bench_reconstruct.py [--suite clean|generated|all] [--size 512 --num-frames 85]
                                                  [--objects panda vase ...] [--matting-model u2netp] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from droplet3d.orbit import Cameras, Orbit
from droplet3d.recon.export import BLENDER_TO_GLTF
from droplet3d.recon.metrics import psnr, scale_aligned_f, surface_scores
from render_orbit import BACKGROUNDS, GREY, HELD_OUT_OBJECTS, REPO, TUNE_OBJECTS, Perturbation, render, slip_mattes

# Chosen so that elevation, field of view, direction, loop closure and alpha all vary.
SCENES = {
    "suzanne": dict(elevation_deg=20.0, fov_deg=40.0, direction=1, closed=False, alpha=False),
    "torus": dict(elevation_deg=30.0, fov_deg=35.0, direction=-1, closed=False, alpha=True),
    "cup": dict(elevation_deg=45.0, fov_deg=40.0, direction=1, closed=False, alpha=False),
    "textured": dict(elevation_deg=15.0, fov_deg=50.0, direction=1, closed=True, alpha=True),
    "panda": dict(elevation_deg=10.0, fov_deg=40.0, direction=-1, closed=False, alpha=False),
    "pale": dict(elevation_deg=20.0, fov_deg=45.0, direction=1, closed=False, alpha=False),
    "vase": dict(elevation_deg=15.0, fov_deg=40.0, direction=1, closed=False, alpha=False),
    "vase_textured": dict(elevation_deg=25.0, fov_deg=35.0, direction=-1, closed=False, alpha=False),
    "frame": dict(elevation_deg=30.0, fov_deg=40.0, direction=1, closed=False, alpha=False),
    "snowy": dict(elevation_deg=25.0, fov_deg=40.0, direction=-1, closed=False, alpha=False),
    "ring": dict(elevation_deg=20.0, fov_deg=40.0, direction=1, closed=False, alpha=False),
    "penguin": dict(elevation_deg=15.0, fov_deg=45.0, direction=1, closed=False, alpha=False),
    "bottle": dict(elevation_deg=20.0, fov_deg=35.0, direction=-1, closed=False, alpha=False),
    "duck": dict(elevation_deg=20.0, fov_deg=40.0, direction=-1, closed=False, alpha=False),
}
TUNE = [name for name in TUNE_OBJECTS if name in SCENES]
HELD_OUT = [name for name in HELD_OUT_OBJECTS if name in SCENES]
MODES = {"clean": ("true orbit", "frames"), "generated": ("hints", "frames", "capture"),
         "slip": ("true orbit", "frames")}
SLIPPED_VIEWS = 3
RADIUS = 2.5
PSNR_VIEWS = 4
TIME = "/usr/bin/time"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=("clean", "generated", "slip", "all"), default="all")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--num-frames", type=int, default=85)
    parser.add_argument("--samples", type=int, default=4, help="Cycles samples per pixel")
    parser.add_argument("--objects", nargs="+", default=TUNE + HELD_OUT, choices=TUNE + HELD_OUT)
    parser.add_argument("--modes", nargs="+", choices=("true orbit", "hints", "frames", "capture"),
                        help="only these reconstruction modes (default: both of each suite)")
    parser.add_argument("--ablate", nargs="+", default=[], metavar="FLAG",
                        help="also run each reconstruction with `--FLAG` (e.g. no-repair), side by side")
    parser.add_argument("--matting-model", metavar="NAME",
                        help="masks from this learned matting model (its weights must be in rembg's cache) "
                             "instead of the colour model; frames with an exact alpha keep it")
    parser.add_argument("--psnr", action="store_true", help="also render the textured mesh (slow)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--keep-jobs", action="store_true", help="keep each run's job folder (path in the JSON rows)")
    args = parser.parse_args()

    suites = ("clean", "generated", "slip") if args.suite == "all" else (args.suite,)
    rows = []
    for suite in suites:
        for name in args.objects:
            scene = SCENES[name]
            orbit = Orbit(num_frames=args.num_frames, elevation_deg=scene["elevation_deg"], fov_deg=scene["fov_deg"],
                          radius=RADIUS, direction=scene["direction"], closed=scene["closed"])
            perturbation = Perturbation(seed=zlib.crc32(name.encode()) % 1000) if suite == "generated" else None
            t0 = time.perf_counter()
            frames = render(name, orbit, size=args.size, samples=args.samples,
                            transparent=suite == "slip" or (scene["alpha"] and suite == "clean"),
                            perturbation=perturbation)
            if suite == "slip":
                frames = slip_mattes(frames, SLIPPED_VIEWS, seed=zlib.crc32(name.encode()) % 1000)
            print(f"{suite}/{name}: rendered in {time.perf_counter() - t0:.0f} s (cached after the first run)",
                  file=sys.stderr)
            truth = _true_cameras(frames, orbit)
            for mode in MODES[suite]:
                if args.modes and mode not in args.modes:
                    continue
                for extra in ((), *(("--" + flag,) for flag in args.ablate)):
                    rows.append(_run(suite, name, mode, frames, orbit, truth, args, extra))
                    print(_format_row(rows[-1]), file=sys.stderr)
    print(_table(rows, args))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def _true_cameras(frames: Path, orbit: Orbit) -> Cameras:
    """The cameras the frames were rendered from: ``truth.json`` for a generated-like orbit, else the orbit's."""
    truth = frames / "truth.json"
    if truth.is_file():
        data = json.loads(truth.read_text())
        return Cameras(np.array(data["cameras"]), float(np.mean(data["fov_deg"])))
    return orbit.cameras()


def _run(suite: str, name: str, mode: str, frames: Path, orbit: Orbit, truth: Cameras, args,
         extra: tuple[str, ...] = ()) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"bench-{name}-{suite}-"))
    try:
        return _run_in(out, suite, name, mode, frames, orbit, truth, args, extra)
    finally:
        if not args.keep_jobs:  # tens of MB each: a full run would leave gigabytes behind
            shutil.rmtree(out, ignore_errors=True)


def _run_in(out: Path, suite: str, name: str, mode: str, frames: Path, orbit: Orbit, truth: Cameras, args,
            extra: tuple[str, ...]) -> dict:
    cmd = [str(REPO / ".venv/bin/droplet3d"), "reconstruct", str(frames / "frames"), "--out", str(out / "job"), *extra]
    # The colour model unless a learned one is asked for (auto would first try to fetch the default weights).
    matting = ["learned", "--matting-model", args.matting_model] if args.matting_model else ["colour"]
    cmd += ["--matting", *matting]
    if mode == "capture":  # the add-on's hints: the camera frame 0 was rendered from (the direction is measured)
        azimuth, elevation, distance = (v[0] for v in truth.subset(np.arange(1)).spherical())
        fov = json.loads((frames / "truth.json").read_text())["fov_deg"][0] if suite == "generated" else orbit.fov_deg
        cmd += ["--elevation", str(elevation), "--fov", str(fov), "--radius", str(distance),
                "--start-azimuth", str(azimuth), "--frame0-camera"]
    else:
        cmd += ["--radius", str(orbit.radius)]
    if mode in ("true orbit", "hints"):
        cmd += ["--elevation", str(orbit.elevation_deg), "--fov", str(orbit.fov_deg),
                "--direction", "ccw" if orbit.direction > 0 else "cw"]
    if mode == "true orbit":
        cmd += ["--closed" if orbit.closed else "--open", "--uniform-cameras"]
    # GNU time reports the child's own peak RSS (a forked child's ru_maxrss would include this process's).
    start = time.perf_counter()
    proc = subprocess.run([TIME, "-f", "PEAK_KB %M", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - start
    row = {"suite": suite, "object": name, "group": "held-out" if name in HELD_OUT else "tune",
           "mode": " ".join((mode, *extra)),
           "frames": orbit.num_frames, "size": args.size, "process_s": wall,
           **({"job": str(out / "job")} if args.keep_jobs else {})}
    if proc.returncode != 0 or not (out / "job" / "mesh.glb").exists():
        lines = [x for x in proc.stderr.splitlines() if x.strip() and not x.startswith(("PEAK_KB", "Command exited"))]
        last = lines[-1] if lines else "no output"
        error = last[last.find("error:"):] if "error:" in last else last  # past the progress line's carriage returns
        return {**row, "error": error}
    peak_kb = int(proc.stderr.rsplit("PEAK_KB", 1)[1].split()[0])
    manifest = json.loads((out / "job" / "manifest.json").read_text())
    transforms = json.loads((out / "job" / "transforms.json").read_text())
    mesh = trimesh.load(out / "job" / "mesh.glb", force="mesh")
    mesh.apply_transform(np.linalg.inv(BLENDER_TO_GLTF))  # back to Blender's world
    estimated = Cameras(np.array([f["transform_matrix"] for f in transforms["frames"]]), manifest["orbit"]["fov_deg"])
    azimuth_error = np.abs((estimated.spherical()[0] - truth.spherical()[0] + 180.0) % 360.0 - 180.0)
    true_mesh = trimesh.load(frames / "truth.ply", force="mesh")
    # As the add-on places it: scaled about the orbit centre to the source object's size (its largest extent).
    placed = mesh.copy().apply_scale(float(true_mesh.extents.max() / mesh.extents.max()))
    row.update({
        **surface_scores(mesh, true_mesh),
        "placed_f@0.02": surface_scores(placed, true_mesh, thresholds=(0.02,))["f@0.02"],
        **dict(zip(("aligned_f@0.02", "aligned_scale"), scale_aligned_f(mesh, true_mesh), strict=True)),
        "azimuth_err_mean": float(azimuth_error.mean()), "azimuth_err_max": float(azimuth_error.max()),
        "elevation_err": abs(estimated.elevation_deg - truth.elevation_deg),
        "fov_err": abs(manifest["orbit"]["fov_deg"] - truth.fov_deg),
        "direction_ok": manifest["orbit"]["direction"] == orbit.direction,
        "warnings": [w["field"] for w in manifest["calibration"].get("warnings", [])],
        # How the hull treated the masks: masks_slipped (views left out) or masks_inconsistent (repair and vote).
        "mask_warnings": [w["code"] for w in manifest["warnings"]
                          if w["code"] in ("masks_slipped", "masks_inconsistent")],
        "recon_s": manifest["timings_s"]["total"], "calibration_s": manifest["calibration"]["seconds"],
        "peak_rss_mb": peak_kb / 1024.0, "faces": manifest["mesh"]["faces"],
    })
    if args.psnr:
        row["psnr"] = _psnr(name, out / "job" / "mesh.glb", orbit, args)
    return row


def _psnr(name: str, glb: Path, orbit: Orbit, args) -> float:
    """PSNR of the unlit textured mesh against the true renders at held-out azimuths, inside both silhouettes."""
    step = 360.0 / orbit.period
    held = Orbit(num_frames=PSNR_VIEWS, elevation_deg=orbit.elevation_deg, fov_deg=orbit.fov_deg,
                 radius=orbit.radius, direction=orbit.direction, start_azimuth_deg=step / 2 + 10.0)
    background = BACKGROUNDS.get(name, GREY)
    truth = render(name, held, size=args.size, samples=args.samples, transparent=True, background=background)
    ours = render(glb, held, size=args.size, samples=args.samples, transparent=True, background=background)
    values = []
    for k in range(held.num_frames):
        a = np.asarray(Image.open(ours / "frames" / f"{k:04d}.png"), np.float64)
        b = np.asarray(Image.open(truth / "frames" / f"{k:04d}.png"), np.float64)
        union = (a[..., 3] > 127) | (b[..., 3] > 127)
        bg = np.array(background) * 255.0
        a_rgb = a[..., :3] * a[..., 3:] / 255.0 + bg * (1 - a[..., 3:] / 255.0)
        b_rgb = b[..., :3] * b[..., 3:] / 255.0 + bg * (1 - b[..., 3:] / 255.0)
        values.append(psnr(a_rgb.round().astype(np.uint8), b_rgb.round().astype(np.uint8), union))
    return float(np.mean(values))


def _format_row(r: dict) -> str:
    head = f"| {r['suite']} | {r['object']} ({r['group']}) | {r['mode']} |"
    if "error" in r:
        return f"{head} failed: {r['error']} |" + " |" * 10
    psnr_cell = f" {r['psnr']:.1f} |" if "psnr" in r else ""
    return (f"{head} {r['chamfer']:.4f} | {r['f@0.01']:.3f} | {r['f@0.02']:.3f} | {r['f@0.05']:.3f} | "
            f"{r['placed_f@0.02']:.3f} | {r['aligned_f@0.02']:.3f} (×{r['aligned_scale']:.3f}) | "
            f"{r['azimuth_err_mean']:.2f} / {r['azimuth_err_max']:.2f} | {r['elevation_err']:.2f} / "
            f"{r['fov_err']:.2f} | {'ok' if r['direction_ok'] else 'WRONG'} | {r['recon_s']:.1f} "
            f"({r['calibration_s']:.1f}) | {r['peak_rss_mb']:.0f} | "
            f"{', '.join(r['warnings'] + r.get('mask_warnings', [])) or '—'} |{psnr_cell}")


def _means(rows: list[dict]) -> list[str]:
    """Mean rows per suite, mode and group (failed runs count as F = 0, and are counted)."""
    out = []
    keys = sorted({(r["suite"], r["mode"], r["group"]) for r in rows})
    for suite, mode, group in keys:
        chosen = [r for r in rows if (r["suite"], r["mode"], r["group"]) == (suite, mode, group)]
        ok = [r for r in chosen if "error" not in r]
        failed = len(chosen) - len(ok)

        def mean(key: str, rows_=ok) -> float:
            return float(np.mean([r[key] for r in rows_])) if rows_ else float("nan")

        f = {t: float(np.mean([r.get(t, 0.0) for r in chosen]))
             for t in ("f@0.01", "f@0.02", "f@0.05", "placed_f@0.02", "aligned_f@0.02")}
        out.append(f"| **{suite}** | **mean {group}** ({len(chosen)}{f', {failed} failed' if failed else ''}) | "
                   f"{mode} | {mean('chamfer'):.4f} | {f['f@0.01']:.3f} | {f['f@0.02']:.3f} | {f['f@0.05']:.3f} | "
                   f"{f['placed_f@0.02']:.3f} | {f['aligned_f@0.02']:.3f} | "
                   f"{mean('azimuth_err_mean'):.2f} / {max([r['azimuth_err_max'] for r in ok], default=0):.2f} | "
                   f"{mean('elevation_err'):.2f} / {mean('fov_err'):.2f} | — | {mean('recon_s'):.1f} | "
                   f"{max([r['peak_rss_mb'] for r in ok], default=0):.0f} | |")
    return out


def _table(rows: list[dict], args) -> str:
    head = ("| suite | object | orbit | Chamfer | F@0.01 | F@0.02 | F@0.05 | F@0.02 placed | F@0.02 up to scale | "
            "azimuth err mean / max (°) | "
            "err elev / fov (°) | dir | time s (calib) | peak RAM MB | warnings |" + (" PSNR dB |" if args.psnr else "")
            + "\n|" + "---|" * (15 + bool(args.psnr)))
    return "\n".join([f"{args.num_frames} frames at {args.size}², Cycles {args.samples} spp", head,
                      *(_format_row(r) for r in rows), *_means(rows)])


if __name__ == "__main__":
    sys.exit(main())
