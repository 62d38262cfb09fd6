"""Write a synthetic finished job folder, as the sidecar would, for the importer tests and the benchmark.

Runs under the server's venv (``droplet3d.orbit`` for the poses, PIL, trimesh); Blender's tests import
only its constants:

    .venv/bin/python tests/blender/make_job_fixture.py OUT --num-frames 12 --size 64 [--mode orbit|video]

Frames are RGBA: a disc whose colour encodes the frame index, on a transparent background.
``mesh.glb`` is an off-centre box (centre (0.2, 0, 0.1), sides 0.6 × 0.4 × 0.3 in Blender's Z-up
orbit frame) written in glTF's Y-up convention, so a test can tell that it lands where it should.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MESH_CENTRE = (0.2, 0.0, 0.1)
MESH_SIZE = (0.6, 0.4, 0.3)
ORBIT = dict(elevation_deg=20.0, fov_deg=45.0, radius=2.5, start_azimuth_deg=0.0)


def frame_image(k: int, n: int, width: int, height: int):
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    r = min(width, height) * 0.35
    colour = (int(255 * k / max(n - 1, 1)), 80, 255 - int(255 * k / max(n - 1, 1)), 255)
    ImageDraw.Draw(img).ellipse((width / 2 - r, height / 2 - r, width / 2 + r, height / 2 + r), fill=colour)
    return img


def write_job(out: Path, frames: int, width: int, height: int, mode: str, job_id: str, sphere: int = 0) -> None:
    import numpy as np
    import trimesh
    from droplet3d.orbit import Orbit, write_transforms

    (out / "frames").mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(frames):
        frame_image(k, frames, width, height).save(out / "frames" / f"{k:04d}.png")
        paths.append(f"frames/{k:04d}.png")
    manifest = {"params": {"mode": mode, "prompt": "fixture", "fps": 8 if mode == "video" else None}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    if mode == "orbit":
        write_transforms(out / "transforms.json", Orbit(num_frames=frames, **ORBIT), width, height, paths)
        box = trimesh.creation.box(extents=MESH_SIZE)
        if sphere:  # a heavier mesh for the benchmark: 20·4^n faces
            box = trimesh.creation.icosphere(subdivisions=sphere, radius=0.5)
        box.apply_translation(MESH_CENTRE)
        z_up_to_y_up = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=float)
        box.apply_transform(z_up_to_y_up)
        box.export(out / "mesh.glb")
    record = {"key": job_id, "job_id": job_id, "mode": mode, "status": "succeeded", "folder": str(out)}
    (out / "droplet_job.json").write_text(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--num-frames", type=int, default=12)
    parser.add_argument("--size", type=int, nargs="+", default=[64])
    parser.add_argument("--mode", choices=("orbit", "video"), default="orbit")
    parser.add_argument("--id", default="fixture")
    parser.add_argument("--sphere", type=int, default=0, help="an icosphere of 20·4^N faces instead of the box")
    args = parser.parse_args()
    width, height = (args.size * 2)[:2]
    write_job(args.out, args.num_frames, width, height, args.mode, args.id, args.sphere)


if __name__ == "__main__":
    main()
