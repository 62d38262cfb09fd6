"""Reconstruction benchmark: Blender renders true meshes into orbits; we reconstruct and score them.

For every object: an N-frame orbit rendered with Cycles (plain background, some with alpha), then
``droplet3d reconstruct`` twice, with the true orbit and with everything but the scale gauges
(radius, start azimuth) estimated. Each reconstruction runs in its own process so that its peak
RAM is its own. Printed per run: Chamfer distance and F-score at 1/2/5 % of the true mesh's
largest extent (50k samples each), volume IoU, PSNR of the textured mesh rendered unlit at held-out
azimuths (inside the union of the two silhouettes), calibration error, wall time, peak RAM.

    .venv/bin/python scripts/bench_reconstruct.py [--size 512 --num-frames 85 --objects suzanne cup ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from droplet3d.orbit import Orbit
from droplet3d.recon.export import BLENDER_TO_GLTF
from droplet3d.recon.metrics import psnr, surface_scores, volume_iou
from render_orbit import REPO, render

# Chosen so that elevation, field of view, direction, loop closure and alpha all vary.
SCENES = {
    "suzanne": dict(elevation_deg=20.0, fov_deg=40.0, direction=1, closed=False, alpha=False),
    "torus": dict(elevation_deg=30.0, fov_deg=35.0, direction=-1, closed=False, alpha=True),
    "cup": dict(elevation_deg=45.0, fov_deg=40.0, direction=1, closed=False, alpha=False),
    "textured": dict(elevation_deg=15.0, fov_deg=50.0, direction=1, closed=True, alpha=True),
}
RADIUS = 2.5
BACKGROUND = (0.8, 0.8, 0.8)
HELD_OUT = 4
TIME = "/usr/bin/time"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--num-frames", type=int, default=85)
    parser.add_argument("--samples", type=int, default=4, help="Cycles samples per pixel")
    parser.add_argument("--objects", nargs="+", default=list(SCENES), choices=list(SCENES))
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()

    rows = []
    for name in args.objects:
        scene = SCENES[name]
        orbit = Orbit(num_frames=args.num_frames, elevation_deg=scene["elevation_deg"], fov_deg=scene["fov_deg"],
                      radius=RADIUS, direction=scene["direction"], closed=scene["closed"])
        t0 = time.perf_counter()
        frames = render(name, orbit, size=args.size, samples=args.samples, transparent=scene["alpha"],
                        background=BACKGROUND)
        print(f"{name}: rendered in {time.perf_counter() - t0:.0f} s (cached after the first run)", file=sys.stderr)
        truth = trimesh.load(frames / "truth.ply", force="mesh")
        held = _held_out_orbit(orbit)
        truth_views = render(name, held, size=args.size, samples=args.samples, transparent=True,
                             background=BACKGROUND)
        for mode in ("given", "calibrated"):
            rows.append(_run(name, mode, frames, orbit, truth, held, truth_views, args))
            print(_format_row(rows[-1]), file=sys.stderr)
    print(_table(rows, args))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def _held_out_orbit(orbit: Orbit) -> Orbit:
    """Cameras half-way between training frames, spread around the turn."""
    step = 360.0 / orbit.period
    return Orbit(num_frames=HELD_OUT, elevation_deg=orbit.elevation_deg, fov_deg=orbit.fov_deg, radius=orbit.radius,
                 direction=orbit.direction, start_azimuth_deg=step / 2 + 10.0)


def _run(name: str, mode: str, frames: Path, orbit: Orbit, truth, held: Orbit, truth_views: Path, args) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"bench-{name}-{mode}-"))
    cmd = [str(REPO / ".venv/bin/droplet3d"), "reconstruct", str(frames / "frames"), "--out", str(out / "job"),
           "--radius", str(orbit.radius)]
    if mode == "given":
        cmd += ["--elevation", str(orbit.elevation_deg), "--fov", str(orbit.fov_deg),
                "--direction", "ccw" if orbit.direction > 0 else "cw", "--closed" if orbit.closed else "--open"]
    # GNU time reports the child's own peak RSS (a forked child's ru_maxrss would include this process's).
    start = time.perf_counter()
    proc = subprocess.run([TIME, "-f", "PEAK_KB %M", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not (out / "job" / "mesh.glb").exists():
        raise RuntimeError(f"{name}/{mode}: reconstruction failed:\n{proc.stdout}\n{proc.stderr}")
    peak_kb = int(proc.stderr.rsplit("PEAK_KB", 1)[1].split()[0])
    manifest = json.loads((out / "job" / "manifest.json").read_text())
    mesh = trimesh.load(out / "job" / "mesh.glb", force="mesh")
    mesh.apply_transform(np.linalg.inv(BLENDER_TO_GLTF))  # back to Blender's world
    est = manifest["orbit"]
    row = {
        "object": name, "mode": mode, "frames": orbit.num_frames, "size": args.size,
        **surface_scores(mesh, truth), "iou": volume_iou(mesh, truth),
        "psnr": _psnr(out / "job" / "mesh.glb", held, truth_views, args),
        "elevation_err": abs(est["elevation_deg"] - orbit.elevation_deg),
        "fov_err": abs(est["fov_deg"] - orbit.fov_deg),
        "direction_ok": est["direction"] == orbit.direction, "closed_ok": est["closed"] == orbit.closed,
        "recon_s": manifest["timings_s"]["total"], "process_s": wall,
        "calibration_s": manifest["calibration"]["seconds"],
        "peak_rss_mb": peak_kb / 1024.0, "faces": manifest["mesh"]["faces"],
        "watertight": manifest["mesh"]["watertight"],
    }
    return row


def _psnr(glb: Path, held: Orbit, truth_views: Path, args) -> float:
    """PSNR of the unlit textured mesh against the true renders, over the union of both silhouettes."""
    ours = render(glb, held, size=args.size, samples=args.samples, transparent=True, background=BACKGROUND)
    values = []
    for k in range(held.num_frames):
        a = np.asarray(Image.open(ours / "frames" / f"{k:04d}.png"), np.float64)
        b = np.asarray(Image.open(truth_views / "frames" / f"{k:04d}.png"), np.float64)
        union = (a[..., 3] > 127) | (b[..., 3] > 127)
        bg = np.array(BACKGROUND) * 255.0
        a_rgb = a[..., :3] * a[..., 3:] / 255.0 + bg * (1 - a[..., 3:] / 255.0)
        b_rgb = b[..., :3] * b[..., 3:] / 255.0 + bg * (1 - b[..., 3:] / 255.0)
        values.append(psnr(a_rgb.round().astype(np.uint8), b_rgb.round().astype(np.uint8), union))
    return float(np.mean(values))


def _format_row(r: dict) -> str:
    return (f"| {r['object']} | {r['mode']} | {r['chamfer']:.4f} | {r['f@0.01']:.3f} | {r['f@0.02']:.3f} | "
            f"{r['f@0.05']:.3f} | {r['iou']:.3f} | {r['psnr']:.1f} | {r['elevation_err']:.2f} / {r['fov_err']:.2f} | "
            f"{'ok' if r['direction_ok'] else 'WRONG'} / {'ok' if r['closed_ok'] else 'WRONG'} | "
            f"{r['recon_s']:.1f} ({r['calibration_s']:.1f}) | {r['peak_rss_mb']:.0f} |")


def _table(rows: list[dict], args) -> str:
    head = ("| object | orbit | Chamfer | F@0.01 | F@0.02 | F@0.05 | vol IoU | PSNR dB | err elev / fov (°) | "
            "dir / loop | time s (calib) | peak RAM MB |\n|" + "---|" * 12)
    return "\n".join([f"{args.num_frames} frames at {args.size}², Cycles {args.samples} spp", head,
                      *(_format_row(r) for r in rows)])


if __name__ == "__main__":
    sys.exit(main())
