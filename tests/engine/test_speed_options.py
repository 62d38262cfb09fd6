"""Engine speed options (``compile``, ``attention_backend``): off by default, real when on, recorded, validated."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from droplet3d.cli import main
from droplet3d.engine import DropletEngine, GenerationParams, write_orbit_folder
from droplet3d.errors import InputError
from engine_helpers import SIZE, read_frames
from torch.profiler import ProfilerActivity, profile

STEPS = 2


def generate(engine, picture, out):
    params = GenerationParams(prompt="a small orange box", steps=STEPS, seed=11, **SIZE)
    return write_orbit_folder(engine.generate(picture, params), out)


def sdpa_ops(engine, picture, out) -> tuple[set[str], object]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = generate(engine, picture, out)
    return {e.key for e in prof.key_averages() if "scaled_dot_product" in e.key}, result


def test_math_attention_backend_runs_the_math_kernel_and_matches_default(engine_3d, ckpt_3d, picture, tmp_path):
    default_ops, default = sdpa_ops(engine_3d, picture, tmp_path / "default")
    engine = DropletEngine.load(str(ckpt_3d), device="cpu", attention_backend="math")
    try:
        math_ops, restricted = sdpa_ops(engine, picture, tmp_path / "math")
    finally:
        engine.close()
    assert "aten::_scaled_dot_product_attention_math" in math_ops
    assert "aten::_scaled_dot_product_attention_math" not in default_ops  # PyTorch's own pick is another kernel
    a, b = read_frames(default.frames).astype(int), read_frames(restricted.frames).astype(int)
    assert np.abs(a - b).max() <= 2  # the same function, different fp32 summation order
    off = {"compile": False, "quantize": None, "vae_tiling": False}
    assert restricted.manifest["engine"] == {**off, "attention_backend": "math"}
    assert default.manifest["engine"] == {**off, "attention_backend": None}
    assert torch.backends.cuda.flash_sdp_enabled()  # the restriction ends with the job


@pytest.mark.parametrize(("name", "message"), [("bogus", "must be one of flash, cudnn"), ("cudnn", "needs CUDA")])
def test_bad_attention_backend_is_an_input_error_before_loading(tmp_path, name, message):
    with pytest.raises(InputError, match=message) as info:
        DropletEngine.load(str(tmp_path / "not-even-a-checkpoint"), device="cpu", attention_backend=name)
    assert info.value.field == "attention_backend"


def test_compile_captures_each_block_as_one_graph_and_keeps_frames(engine_3d, ckpt_3d, picture, tmp_path):
    """Regional compilation with torch.compile's "eager" backend: dynamo must trace every repeated block with
    ``fullgraph=True`` (no graph breaks) and run it. Inductor's code generation itself is exercised on the GPU
    benchmark only: it takes minutes on the shared CPUs."""
    torch._dynamo.reset()
    engine = DropletEngine.load(str(ckpt_3d), device="cpu", compile="eager")
    try:
        compiled = generate(engine, picture, tmp_path / "compiled")
        blocks = engine.pipe.transformer.transformer_blocks
        assert all(block._compiled_call_impl is not None for block in blocks)
    finally:
        engine.close()
        torch._dynamo.reset()
    default = generate(engine_3d, picture, tmp_path / "default")
    a, b = read_frames(default.frames).astype(int), read_frames(compiled.frames).astype(int)
    assert np.abs(a - b).max() <= 2
    assert compiled.manifest["engine"]["compile"] == "eager"


def test_generate_command_passes_speed_options(ckpt_3d, tmp_path, capsys):
    from PIL import Image

    image = tmp_path / "in.png"
    Image.new("RGB", (32, 32), (200, 60, 30)).save(image)
    common = ["generate", "--ckpt", str(ckpt_3d), "--image", str(image), "--prompt", "a block", "--width", "32",
              "--height", "32", "--num-frames", "5", "--steps", "1", "--device", "cpu"]
    assert main([*common, "--attention-backend", "math", "--out", str(tmp_path / "job")]) == 0
    manifest = json.loads((tmp_path / "job" / "manifest.json").read_text())
    assert manifest["engine"] == {"compile": False, "attention_backend": "math", "quantize": None, "vae_tiling": False}
    assert main([*common, "--attention-backend", "fast", "--out", str(tmp_path / "bad")]) == 2
    assert "attention_backend must be one of" in capsys.readouterr().err


def test_serve_passes_speed_options_to_the_model_process(ckpt_3d, tmp_path):
    """``serve --compile --attention-backend`` reach the engine that the service's model process (its spawn child)
    loads; running them is the engine tests' business above."""
    import os

    from droplet3d.api.cli import add_commands, settings_from_args
    from droplet3d.api.model_process import ModelProcess

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["serve", "--ckpt", str(ckpt_3d), "--jobs-dir", str(tmp_path / "jobs"), "--device",
                              "cpu", "--attention-backend", "math", "--compile", "--preload"])
    models = ModelProcess(settings_from_args(args))
    models.start()  # returns once the child has loaded the orbit model (--preload) and reported its state
    try:
        health = models.health()
    finally:
        models.close()
    assert health["alive"] and health["pid"] != os.getpid()
    orbit = next(m for m in health["models"] if m["role"] == "orbit")
    assert orbit["loaded"] and orbit["error"] is None
    details = orbit["details"]
    assert details["path"] == str(ckpt_3d.resolve()) and details["device"] == "cpu"
    assert (details["compile"], details["attention_backend"]) == (True, "math")
