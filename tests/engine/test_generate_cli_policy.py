"""``droplet3d generate`` as a user runs it: a failed mesh keeps the orbit, and one meaning per flag."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from droplet3d.cli import main
from PIL import Image

DROPLET3D = Path(sys.executable).parent / "droplet3d"


def red_block(path: Path) -> Path:
    Image.fromarray(np.full((40, 30, 3), (200, 50, 50), dtype=np.uint8)).save(path)
    return path


def test_generate_reconstruct_of_noise_keeps_the_orbit_prints_the_warning_and_exits_0(ckpt_3d, tmp_path):
    out = tmp_path / "job"
    result = subprocess.run(
        [str(DROPLET3D), "generate", "--ckpt", str(ckpt_3d), "--image", str(red_block(tmp_path / "in.png")),
         "--prompt", "a red block", "--width", "32", "--height", "32", "--num-frames", "9", "--steps", "1",
         "--device", "cpu", "--reconstruct", "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "warning: reconstruction_failed: mesh failed" in result.stderr
    assert "9 frames" in result.stdout and "mesh:" not in result.stdout
    assert len(list((out / "frames").glob("*.png"))) == 9 and (out / "orbit.mp4").is_file()
    assert not (out / "mesh.glb").exists()
    assert len(json.loads((out / "transforms.json").read_text())["frames"]) == 9  # the nominal orbit
    assert json.loads((out / "manifest.json").read_text())["reconstruction"]["status"] == "failed"


def test_generate_frames_n_still_counts_frames_but_warns_that_it_is_deprecated(ckpt_3d, tmp_path, capsys):
    out = tmp_path / "job"
    rc = main(["generate", "--ckpt", str(ckpt_3d), "--image", str(red_block(tmp_path / "in.png")), "--prompt", "x",
               "--width", "32", "--height", "32", "--frames", "5", "--steps", "1", "--device", "cpu",
               "--out", str(out)])
    assert rc == 0
    assert "--frames N is deprecated, use --num-frames N" in capsys.readouterr().err
    assert json.loads((out / "manifest.json").read_text())["params"]["num_frames"] == 5


def test_generate_help_names_num_frames_and_hides_the_alias(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    assert "--num-frames" in text and "--frames" not in text.replace("--num-frames", "")


def test_a_cut_out_input_leaves_frame_0_its_exact_alpha_at_the_frames_size(ckpt_3d, tmp_path):
    rgba = np.zeros((40, 30, 4), np.uint8)  # an opaque red block in the middle of a transparent picture
    rgba[10:30, 5:25] = (200, 50, 50, 255)
    Image.fromarray(rgba).save(tmp_path / "cut.png")
    Image.fromarray(np.full((40, 30, 4), 255, np.uint8)).save(tmp_path / "opaque.png")  # RGBA, nothing cut out
    for name, expected in (("cut", True), ("opaque", False)):
        out = tmp_path / name
        assert main(["generate", "--ckpt", str(ckpt_3d), "--image", str(tmp_path / f"{name}.png"), "--prompt", "x",
                     "--width", "32", "--height", "48", "--num-frames", "5", "--steps", "1", "--device", "cpu",
                     "--out", str(out)]) == 0
        files = json.loads((out / "manifest.json").read_text())["files"]
        assert ("frame0_alpha.png" in files) == expected == (out / "frame0_alpha.png").is_file()
    alpha = np.asarray(Image.open(tmp_path / "cut" / "frame0_alpha.png"))
    assert alpha.shape == (48, 32)  # resized as the input is: stretched to the frames, no crop
    assert alpha[24, 16] == 255 and alpha[2, 2] == 0 and alpha[45, 30] == 0


def test_background_is_what_a_cut_outs_transparent_pixels_become_and_must_be_a_colour(ckpt_3d, tmp_path, capsys):
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 8:24] = (200, 50, 50, 255)
    Image.fromarray(rgba).save(tmp_path / "cut.png")
    common = ["generate", "--ckpt", str(ckpt_3d), "--image", str(tmp_path / "cut.png"), "--prompt", "x", "--width",
              "32", "--height", "32", "--num-frames", "5", "--steps", "1", "--device", "cpu"]
    for background, expected in ((None, (0, 0, 0)), ("#ffffff", (255, 255, 255)), ("#2080ff", (32, 128, 255))):
        out = tmp_path / f"job-{background}"
        assert main([*common, *(["--background", background] if background else []), "--out", str(out)]) == 0
        picture = np.asarray(Image.open(out / "input.png"))
        assert tuple(picture[1, 1]) == expected and tuple(picture[16, 16]) == (200, 50, 50)
        assert json.loads((out / "manifest.json").read_text())["params"]["background"] == background
        assert (out / "frame0_alpha.png").is_file()  # the cut-out's alpha whatever it is composited on
    assert main([*common, "--background", "white", "--out", str(tmp_path / "bad")]) == 2
    assert "background must be a colour #rrggbb" in capsys.readouterr().err
