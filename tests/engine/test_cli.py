"""The engine's ``droplet3d`` subcommands, end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from droplet3d.cli import main
from engine_helpers import REPO
from PIL import Image


def test_engine_cli_module_does_not_import_torch():
    code = "import sys, droplet3d.cli as c; c.build_parser(); assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


def test_generate_end_to_end(ckpt_3d, tmp_path, capsys):
    image = tmp_path / "in.png"
    Image.fromarray(np.full((40, 30, 4), (200, 50, 50, 255), dtype=np.uint8)).save(image)
    out = tmp_path / "job"
    rc = main(["generate", "--ckpt", str(ckpt_3d), "--image", str(image), "--prompt", "a red block",
               "--width", "32", "--height", "32", "--num-frames", "10", "--steps", "2", "--seed", "5",
               "--device", "cpu", "--out", str(out)])
    assert rc == 0
    captured = capsys.readouterr()
    assert "9 frames, seed 5" in captured.out
    assert "denoising" in captured.err  # the per-stage progress bars
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"]["num_frames"] == 9 and manifest["params"]["steps"] == 2
    assert len(list((out / "frames").glob("*.png"))) == 9 and (out / "orbit.mp4").is_file()
    # Random weights draw noise that cannot be calibrated: the folder still gets the nominal orbit's cameras.
    assert "nominal orbit" in captured.err
    transforms = json.loads((out / "transforms.json").read_text())
    assert [f["file_path"] for f in transforms["frames"]] == [f"frames/{k:04d}.png" for k in range(9)]
    assert transforms["w"] == 32 and transforms["orbit"]["elevation_deg"] == 0.0


def test_generate_reports_bad_input_without_traceback(ckpt_3d, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    rc = main(["generate", "--ckpt", str(ckpt_3d), "--image", str(bad), "--prompt", "x", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "not an image" in capsys.readouterr().err
    rc = main(["generate", "--ckpt", str(tmp_path / "missing"), "--image", str(bad), "--prompt", "x",
               "--out", str(tmp_path / "o")])
    assert rc == 2


@pytest.mark.parametrize("layout", ["diffusers", "authors"])
def test_make_tiny_checkpoint_command(tmp_path, capsys, layout):
    rc = main(["make-tiny-checkpoint", str(tmp_path / "v"), "--kind", "dropletvideo", "--rotary", "--layout", layout])
    assert rc == 0
    cfg = json.loads((tmp_path / "v" / "transformer" / "config.json").read_text())
    assert cfg["use_rotary_positional_embeddings"]
    assert cfg["_class_name"] == ("CogVideoXTransformer3DModel" if layout == "diffusers" else
                                  "DropletVideoTransformer3DModel")
    assert cfg.get("use_fps_embedding", False) is (layout == "diffusers")
    assert f"checkpoint written to {tmp_path / 'v'} ({layout} layout)" in capsys.readouterr().out
