"""Render the reconstruction sheet for the README (docs/recon-sheet.png): per held-out object, input frames of
a generated-like orbit (``render_orbit.Perturbation``, as in the benchmark's generated suite; ``--clean`` for a
perfect turntable), the cameras estimated from the frames alone beside the true ones (top view), and the
textured mesh from two new angles beside the true object from the same angles.

    .venv/bin/python scripts/render_recon_sheet.py [--objects panda pale ...] [--frames 36 --size 192] [--clean]

Blender renders the orbits and both meshes (ours unlit, showing the baked texture; the truth lit as in the
frames); the reconstruction runs here, from the frames alone (only the radius, the scale gauge, is given).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))
from droplet3d.errors import ReconstructionError
from droplet3d.orbit import Orbit
from droplet3d.recon import ReconOptions, reconstruct
from droplet3d.recon.export import BLENDER_TO_GLTF
from droplet3d.recon.metrics import surface_scores
from render_orbit import BACKGROUNDS, GREY, REPO, Perturbation, render

TILE = 180
# The orbit each object is shown on (elevation, fov, direction): varied like the benchmark's.
ORBITS = {"panda": (10.0, 40.0, -1), "pale": (20.0, 40.0, 1), "vase": (25.0, 40.0, 1),
          "vase_textured": (20.0, 45.0, -1), "frame": (30.0, 40.0, 1)}
NEW_VIEWS = (35.0, 215.0)  # azimuths between the orbit's frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", nargs="+", default=list(ORBITS), choices=list(ORBITS))
    parser.add_argument("--frames", type=int, default=36)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--clean", action="store_true", help="perfect turntables instead of generated-like orbits")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "recon-sheet.png")
    args = parser.parse_args()
    rows = []
    for name in args.objects:
        rows.append(_row(name, args))
        print(f"{name}: done", file=sys.stderr)
    head = _header(rows[0].width)
    sheet = Image.new("RGB", (rows[0].width, head.height + sum(r.height for r in rows)), (255, 255, 255))
    sheet.paste(head, (0, 0))
    y = head.height
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height
    sheet.save(args.out)
    print(f"wrote {args.out}")
    return 0


def _row(name: str, args) -> Image.Image:
    elevation, fov, direction = ORBITS[name]
    orbit = Orbit(num_frames=args.frames, elevation_deg=elevation, fov_deg=fov, radius=2.5, direction=direction)
    # Drift, jitter, zoom, flicker and noise drawn with the benchmark's seed for the object.
    perturbation = None if args.clean else Perturbation(seed=zlib.crc32(name.encode()) % 1000)
    frames = render(name, orbit, size=args.size, samples=8, perturbation=perturbation)
    truth = trimesh.load(frames / "truth.ply", force="mesh")
    true_centres = (np.array(json.loads((frames / "truth.json").read_text())["cameras"])[:, :3, 3]
                    if perturbation else orbit.positions())
    views = [Orbit(num_frames=1, elevation_deg=elevation, fov_deg=fov, radius=orbit.radius, start_azimuth_deg=a)
             for a in NEW_VIEWS]
    step = args.frames // 3
    tiles = [_open(frames / "frames" / f"{k:04d}.png") for k in (0, step, 2 * step)]
    # Blender's world colour is linear; the frames show it through the sRGB transform.
    background = tuple(round(255 * (1.055 * c ** (1 / 2.4) - 0.055 if c > 0.0031308 else 12.92 * c))
                       for c in BACKGROUNDS.get(name, GREY))
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = reconstruct(frames / "frames", Path(tmp) / "job", ReconOptions(radius=orbit.radius))
        except ReconstructionError as exc:  # shown as it is: the sheet is for looking, failures included
            caption = f"{name}: no mesh from the frames alone ({exc.code}: {exc})"
            tiles += [Image.new("RGB", (TILE, TILE), (250, 250, 250))] * 3
        else:
            mesh = trimesh.load(result.mesh_path, force="mesh")
            mesh.apply_transform(np.linalg.inv(BLENDER_TO_GLTF))
            est = result.orbit
            caption = (f"{name}{'' if args.clean else ' (generated-like orbit)'}: F@0.02 "
                       f"{surface_scores(mesh, truth)['f@0.02']:.2f} from the frames alone; "
                       f"elevation {est.elevation_deg:.1f}° (true {elevation:.0f}°), fov {est.fov_deg:.1f}° "
                       f"(true {fov:.0f}°), {'ccw' if est.direction > 0 else 'cw'} "
                       f"(true {'ccw' if direction > 0 else 'cw'}), {len(mesh.faces)} faces")
            tiles.append(_cameras(orbit, true_centres, result.cameras.centres()))
            tiles += [_open(render(result.mesh_path, v, size=args.size, transparent=True) / "frames" / "0000.png",
                            background) for v in views]
    tiles += [_open(render(name, v, size=args.size) / "frames" / "0000.png") for v in views]
    row = Image.new("RGB", (TILE * len(tiles), TILE + 22), (255, 255, 255))
    for i, tile in enumerate(tiles):
        row.paste(tile, (i * TILE, 22))
    ImageDraw.Draw(row).text((6, 4), caption, font=_font(), fill=(20, 20, 20))
    return row


def _cameras(orbit: Orbit, true: np.ndarray, estimated: np.ndarray) -> Image.Image:
    """Top view of the true camera centres (grey) and the estimated ones (orange), frame 0 marked."""
    image = Image.new("RGB", (TILE, TILE), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    scale = 0.4 * TILE / orbit.radius
    centre = TILE / 2

    def xy(p):
        return centre + scale * p[0], centre - scale * p[1]

    draw.ellipse((centre - 4, centre - 4, centre + 4, centre + 4), fill=(60, 60, 60))
    for k, (t, e) in enumerate(zip(true, estimated, strict=True)):
        r = 4 if k == 0 else 2
        for p, colour in ((t, (150, 150, 150)), (e, (240, 110, 20))):
            x, y = xy(p)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    draw.text((4, TILE - 16), "cameras from above", font=_font(), fill=(90, 90, 90))
    return image


def _header(width: int) -> Image.Image:
    image = Image.new("RGB", (width, 24), (235, 235, 235))
    labels = ["input frames", "", "", "cameras: true grey, ours orange", "our mesh (texture, unlit)", "",
              "the true object", ""]
    for i, text in enumerate(labels):
        ImageDraw.Draw(image).text((i * TILE + 6, 5), text, font=_font(), fill=(20, 20, 20))
    return image


def _open(path: Path, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """A frame as a tile; a cut-out (RGBA) is laid on ``background``, the colour the object was filmed on."""
    with Image.open(path) as im:
        base = Image.new("RGBA", im.size, (*background, 255))
        return Image.alpha_composite(base, im.convert("RGBA")).convert("RGB").resize((TILE, TILE),
                                                                                      Image.Resampling.LANCZOS)


def _font():
    return ImageFont.load_default(size=12)


if __name__ == "__main__":
    sys.exit(main())
