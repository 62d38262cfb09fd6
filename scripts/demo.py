"""`make demo`: a tiny random checkpoint, then `droplet3d generate` end to end on the CPU.

The tiny checkpoint has random weights, so the frames are noise: this shows the plumbing (loading, progress,
outputs), not the model. The closing message says how to run the real Droplet3D.
"""

from __future__ import annotations

import argparse
import sys
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "demo-out")
    args = parser.parse_args(argv)
    from droplet3d.cli import main as droplet3d

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "tiny-droplet3d"
    if not (ckpt / "transformer" / "config.json").is_file():
        droplet3d(["make-tiny-checkpoint", str(ckpt)])
    image = demo_image(out / "input-example.png")
    rc = droplet3d([
        "generate", "--ckpt", str(ckpt), "--image", str(image), "--device", "cpu",
        "--prompt", "A small orange lantern with a white window, seen from the front, then the camera circles it.",
        "--width", "64", "--height", "64", "--num-frames", "17", "--steps", "4", "--out", str(out / "job"),
    ])
    if rc:
        return rc
    print(f"""
Demo finished: {out / "job"} holds frames/, orbit.mp4, input.png and manifest.json.

The checkpoint used here has RANDOM weights, so the frames are noise: this demo checks that everything runs.
To generate a real orbit on a CUDA GPU (measured peaks at 512x512x85 on an H100: about 34 GB resident with the
default --offload none, 16 GB with --offload model, 5 GB with --offload sequential; --view-align adds FLUX):

    .venv/bin/droplet3d generate --ckpt DropletX/Droplet3D-5B --image your_front_view.png \\
        --prompt "dense description of the views, front to back ..." --view-align --out out/my-orbit

The first run downloads the checkpoint from the Hugging Face hub (tens of GB).""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
