"""`make demo`: both halves of the product on this machine's CPU, without weights, in a few minutes.

1. Generation: a tiny random checkpoint, then `droplet3d generate` end to end. Its weights are random, so the
   frames are noise: this shows the plumbing (loading, progress, outputs, nominal cameras), not the model.
2. Reconstruction: Blender renders a small textured object along an orbit (scripts/render_orbit.py), and
   `droplet3d reconstruct` turns those frames into a textured mesh.glb, estimating the orbit from the frames.
3. Blender: both job folders are imported through the add-on's importer (scripts/blender_import.py) into
   demo.blend: the orbit rigs with their cameras and image planes, and the reconstructed mesh.
The closing message says where each result is and how to run the real Droplet3D.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def demo_image(path: Path) -> Path:
    """A front view of a simple object on black, like the published example input."""
    yy, xx = np.mgrid[0:128, 0:128]
    img = np.zeros((128, 128, 3), dtype=np.uint8)
    body = (np.abs(xx - 64) < 28) & (yy > 40) & (yy < 112)
    top = (xx - 64) ** 2 + (yy - 40) ** 2 < 28**2
    img[body | top] = (200, 120, 60)
    img[(np.abs(xx - 64) < 6) & (yy > 60) & (yy < 100)] = (240, 230, 210)
    Image.fromarray(img).save(path)
    return path


def generate_noise_orbit(out: Path) -> Path:
    from droplet3d.cli import main as droplet3d

    ckpt = out / "tiny-droplet3d"
    if not (ckpt / "transformer" / "config.json").is_file():
        droplet3d(["make-tiny-checkpoint", str(ckpt)])
    image = demo_image(out / "input-example.png")
    job = out / "job"
    rc = droplet3d([
        "generate", "--ckpt", str(ckpt), "--image", str(image), "--device", "cpu",
        "--prompt", "A small orange lantern with a white window, seen from the front, then the camera circles it.",
        "--width", "64", "--height", "64", "--num-frames", "17", "--steps", "4", "--out", str(job),
    ])
    if rc:
        raise SystemExit(rc)
    return job


def reconstruct_rendered_object(out: Path) -> Path:
    """A textured box rendered by Blender along a known orbit, reconstructed from its frames alone."""
    from droplet3d.cli import main as droplet3d
    from droplet3d.orbit import Orbit
    from render_orbit import render

    orbit = Orbit(num_frames=24, elevation_deg=20.0, fov_deg=40.0, radius=2.5)
    frames = render("textured", orbit, size=128, samples=4, cache=out / "renders") / "frames"
    job = out / "mesh-job"
    rc = droplet3d(["reconstruct", str(frames), "--out", str(job), "--resolution", "96", "--face-budget", "5000",
                    "--texture-size", "512"])
    if rc:
        raise SystemExit(rc)
    return job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "demo-out")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print("== 1/3 generation: a noise orbit from a tiny random checkpoint", flush=True)
    orbit_job = generate_noise_orbit(out)
    print("== 2/3 reconstruction: Blender renders a textured box along an orbit; droplet3d reconstructs it",
          flush=True)
    mesh_job = reconstruct_rendered_object(out)
    print("== 3/3 Blender: both jobs imported through the add-on's importer", flush=True)
    blend = out / "demo.blend"
    subprocess.run([str(REPO / ".venv-blender" / "bin" / "python"), str(REPO / "scripts" / "blender_import.py"),
                    str(orbit_job), str(mesh_job), "--save", str(blend)], check=True, timeout=600)
    print(f"""
Demo finished in {time.perf_counter() - start:.0f} s. Results:
  generated orbit (noise):   {orbit_job}  frames/, orbit.mp4, input.png, transforms.json, manifest.json
  rendered orbit (Blender):  {mesh_job / "frames"}
  reconstructed mesh:        {mesh_job / "mesh.glb"}  (cameras in transforms.json, masks in masks/)
  Blender scene:             {blend}  (both orbit rigs, their cameras and image planes, and the mesh)

The checkpoint used in step 1 has RANDOM weights, so its frames are noise: this demo checks that everything runs.
To generate a real orbit on a CUDA GPU (measured peaks at 512x512x85 on an H100: about 34 GB resident with the
default --offload none, 16 GB with --offload model, 5 GB with --offload sequential; --view-align adds FLUX):

    .venv/bin/droplet3d generate --ckpt DropletX/Droplet3D-5B --image your_front_view.png \\
        --prompt "dense description of the views, front to back ..." --view-align --reconstruct --out out/my-orbit

The first run downloads the checkpoint from the Hugging Face hub (tens of GB).""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
