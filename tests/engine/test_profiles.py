"""Profiles and speed switches (server/engine/speed.py): each switch really changes the work done, ``faithful`` is
the published inference bit for bit, the manifest records what ran, and a switch that cannot run falls back."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from droplet3d.engine import DropletEngine, GenerationParams, write_orbit_folder
from droplet3d.engine.speed import dpm_solver
from droplet3d.errors import InputError
from engine_helpers import SIZE, read_frames
from reference_loop import reference_frames

PROMPT = "a small orange box"


@pytest.fixture(scope="module")
def engine(ckpt_3d):
    """Its own engine: these tests install the cache hooks, which stay for the engine's life."""
    engine = DropletEngine.load(str(ckpt_3d), device="cpu")
    yield engine
    engine.close()


def generate(engine, picture, out, **switches):
    params = GenerationParams(prompt=PROMPT, seed=5, **{"steps": 4, **SIZE, **switches})
    return write_orbit_folder(engine.generate(picture, params), out)


class Calls:
    """Counts, with the test's own hooks: attention calls per block and the batch of every transformer forward."""

    def __init__(self, transformer) -> None:
        self.attention = [0] * len(transformer.transformer_blocks)
        self.batches: list[int] = []
        self.handles = [transformer.register_forward_pre_hook(
            lambda m, a, kw: self.batches.append(kw["hidden_states"].shape[0]), with_kwargs=True)]
        for k, block in enumerate(transformer.transformer_blocks):
            self.handles.append(block.attn1.register_forward_pre_hook(lambda m, a, k=k: self._count(k)))

    def _count(self, k: int) -> None:
        self.attention[k] += 1

    def __enter__(self) -> Calls:
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


def published_pixels(engine, picture, steps: int, seed: int) -> np.ndarray:
    frames = reference_frames(engine.pipe, picture, PROMPT, SIZE["width"], SIZE["height"], SIZE["num_frames"], steps,
                              6.0, seed=seed)
    return (frames * 255).astype(np.uint8)


def test_faithful_is_the_published_loop_bit_for_bit_even_after_cached_jobs(engine, picture, tmp_path):
    expected = published_pixels(engine, picture, steps=4, seed=5)
    before = generate(engine, picture, tmp_path / "before", profile="faithful")
    generate(engine, picture, tmp_path / "cached", cache_threshold=0.5, solver="dpm", cfg_truncation=0.5)
    after = generate(engine, picture, tmp_path / "after")  # no profile named: the engine's, faithful
    assert np.array_equal(read_frames(before.frames), expected)
    assert np.array_equal(read_frames(after.frames), expected)
    assert after.manifest["speed"] == {
        "profile": "faithful", "steps": 4, "solver": "ddim", "cache_threshold": 0.0, "cfg_truncation": 0.0,
        "scheduler": "DDIMScheduler", "forwards": 4, "cached_forwards": 0, "uncond_passes": 4}
    assert after.manifest["warnings"] == []


def test_first_block_cache_skips_the_blocks_after_the_first(engine, picture, tmp_path):
    with Calls(engine.pipe.transformer) as off:
        generate(engine, picture, tmp_path / "off", steps=6)
    with Calls(engine.pipe.transformer) as on:
        result = generate(engine, picture, tmp_path / "on", steps=6, cache_threshold=0.5)
    assert off.attention == [6, 6]
    assert on.attention[0] == 6 and 1 <= on.attention[1] < 6  # the first step always computes every block
    speed = result.manifest["speed"]
    assert (speed["cache_threshold"], speed["forwards"], speed["cached_forwards"]) == (0.5, 6, 6 - on.attention[1])
    assert not np.array_equal(read_frames(result.frames), published_pixels(engine, picture, steps=6, seed=5))


def test_dpm_solver_runs_its_own_step_count_on_the_checkpoint_schedule(engine, picture, tmp_path):
    with Calls(engine.pipe.transformer) as calls:
        result = generate(engine, picture, tmp_path / "dpm", steps=7, solver="dpm")
    assert len(calls.batches) == 7
    assert result.manifest["speed"]["scheduler"] == "DPMSolverMultistepScheduler"
    assert type(engine.pipe.scheduler).__name__ == "DDIMScheduler"  # restored after the job
    config = dpm_solver(engine.pipe.scheduler.config).config
    assert (config.prediction_type, config.timestep_spacing, config.rescale_betas_zero_snr) == (
        "v_prediction", "trailing", True)
    assert (config.algorithm_type, config.solver_order, config.beta_schedule) == ("dpmsolver++", 2, "scaled_linear")
    ddim = generate(engine, picture, tmp_path / "ddim", steps=7)
    assert not np.array_equal(read_frames(result.frames), read_frames(ddim.frames))


def test_cfg_truncation_drops_the_unconditional_pass_for_the_last_steps(engine, picture, tmp_path):
    with Calls(engine.pipe.transformer) as calls:
        result = generate(engine, picture, tmp_path / "trunc", steps=5, cfg_truncation=0.4)
    assert calls.batches == [2, 2, 2, 1, 1]
    assert result.manifest["speed"]["uncond_passes"] == 3
    with Calls(engine.pipe.transformer) as calls:
        generate(engine, picture, tmp_path / "guidance-off", steps=3, guidance_scale=1.0, cfg_truncation=0.4)
    assert calls.batches == [1, 1, 1]  # without CFG there is nothing to truncate


def test_fast_profile_is_recorded_and_fp8_falls_back_off_gpu(ckpt_3d, picture, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="droplet3d.engine.speed"):
        engine = DropletEngine.load(str(ckpt_3d), device="cpu", profile="fast", compile="eager")
    try:
        assert "fp8 quantization off: FP8 matmuls need an NVIDIA GPU" in caplog.text
        result = write_orbit_folder(engine.generate(picture, GenerationParams(prompt=PROMPT, seed=5, **SIZE)), tmp_path)
    finally:
        engine.close()
        torch._dynamo.reset()
    manifest = result.manifest
    assert manifest["engine"] == {"compile": "eager", "attention_backend": None, "quantize": None, "vae_tiling": False}
    speed = manifest["speed"]
    assert (speed["profile"], speed["solver"], speed["steps"], speed["cache_threshold"], speed["cfg_truncation"]) == (
        "fast", "dpm", 25, 0.05, 0.2)
    assert (speed["forwards"], speed["uncond_passes"]) == (25, 20)
    assert any(w.startswith("fp8 quantization off") for w in manifest["warnings"])
    assert manifest["params"]["profile"] == "fast" and manifest["params"]["steps"] == 25


def test_int8_weight_only_linears_run_on_the_cpu(ckpt_3d, engine, picture, tmp_path):
    int8 = DropletEngine.load(str(ckpt_3d), device="cpu", quantize="int8")
    try:
        linear = int8.pipe.transformer.transformer_blocks[0].attn1.to_q
        assert type(linear.weight).__name__ != "Parameter" and "Int8" in type(linear.weight).__name__
        assert type(int8.pipe.transformer.proj_out.weight).__name__ == "Parameter"  # outside the blocks: untouched
        quantized = generate(int8, picture, tmp_path / "int8")
    finally:
        int8.close()
    assert quantized.manifest["engine"]["quantize"] == "int8"
    assert any("profile faithful ran the published schedule on a model loaded for speed (int8)" in w
               for w in quantized.manifest["warnings"])
    exact = read_frames(generate(engine, picture, tmp_path / "bf").frames).astype(int)
    assert 0 < np.abs(read_frames(quantized.frames).astype(int) - exact).max() <= 64


def test_compiled_blocks_run_with_the_cache_and_warm_up_compiles_before_the_first_job(ckpt_3d, engine, picture,
                                                                                     tmp_path):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    compiled = DropletEngine.load(str(ckpt_3d), device="cpu", profile="fast", compile="eager")
    try:
        compiled.warm_up(SIZE["width"], SIZE["height"], SIZE["num_frames"])
        blocks = compiled.pipe.transformer.transformer_blocks
        assert blocks[0]._compiled_call_impl is None and blocks[1]._compiled_call_impl is not None
        graphs = counters["stats"]["unique_graphs"]
        result = generate(compiled, picture, tmp_path / "compiled", steps=6, cache_threshold=0.5)
        assert counters["stats"]["unique_graphs"] == graphs  # the job compiled nothing new
    finally:
        compiled.close()
        torch._dynamo.reset()
    eager = generate(engine, picture, tmp_path / "eager", profile="fast", steps=6, cache_threshold=0.5)
    assert result.manifest["speed"]["cached_forwards"] == eager.manifest["speed"]["cached_forwards"] > 0
    a, b = read_frames(result.frames).astype(int), read_frames(eager.frames).astype(int)
    assert np.abs(a - b).max() <= 2


@pytest.mark.parametrize(("switches", "field"), [
    ({"profile": "turbo"}, "profile"),
    ({"solver": "euler"}, "solver"),
    ({"cache_threshold": -0.1}, "cache_threshold"),
    ({"cache_threshold": float("nan")}, "cache_threshold"),
    ({"cfg_truncation": 1.0}, "cfg_truncation"),
    ({"cfg_truncation": True}, "cfg_truncation"),
    ({"profile": "fast", "steps": 0}, "steps"),
])
def test_bad_speed_switches_name_their_field(switches, field):
    with pytest.raises(InputError) as err:
        GenerationParams(prompt="a cup", **switches).validate("droplet3d")
    assert err.value.field == field


@pytest.mark.parametrize(("options", "field"), [({"quantize": "int4"}, "quantize"), ({"profile": "max"}, "profile")])
def test_bad_load_switches_are_input_errors_before_loading(tmp_path, options, field):
    with pytest.raises(InputError) as err:
        DropletEngine.load(str(tmp_path / "not-even-a-checkpoint"), device="cpu", **options)
    assert err.value.field == field


def test_profiles_resolve_their_step_counts():
    fast = GenerationParams(prompt="a cup", profile="fast").validate("droplet3d")
    assert (fast.steps, fast.solver, fast.cache_threshold, fast.cfg_truncation) == (25, "dpm", 0.05, 0.2)
    mixed = GenerationParams(prompt="a cup", profile="fast", steps=12, cache_threshold=0).validate("droplet3d")
    assert (mixed.steps, mixed.solver, mixed.cache_threshold) == (12, "dpm", 0.0)
    assert GenerationParams(prompt="a cup").validate("droplet3d").steps == 50


def test_generate_command_takes_a_profile_and_each_switch(ckpt_3d, tmp_path, capsys):
    import json

    from droplet3d.cli import main
    from PIL import Image

    image = tmp_path / "in.png"
    Image.new("RGB", (32, 32), (200, 60, 30)).save(image)
    common = ["generate", "--ckpt", str(ckpt_3d), "--image", str(image), "--prompt", "a block", "--width", "32",
              "--height", "32", "--num-frames", "5", "--device", "cpu"]
    assert main([*common, "--profile", "fast", "--no-compile", "--steps", "3", "--cfg-truncation", "0.34",
                 "--vae-tiling", "--out", str(tmp_path / "job")]) == 0
    manifest = json.loads((tmp_path / "job" / "manifest.json").read_text())
    assert manifest["engine"] == {"compile": False, "attention_backend": None, "quantize": None, "vae_tiling": True}
    speed = manifest["speed"]
    assert (speed["profile"], speed["solver"], speed["steps"], speed["cache_threshold"], speed["uncond_passes"]) == (
        "fast", "dpm", 3, 0.05, 2)
    assert any(w.startswith("fp8 quantization off") for w in manifest["warnings"])
    assert main([*common, "--cache-threshold", "2", "--out", str(tmp_path / "bad")]) == 2
    assert "cache_threshold must be a number in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_serve_profile_reaches_the_engines_and_their_description(ckpt_3d, tmp_path):
    import argparse

    from droplet3d.api.cli import add_commands, settings_from_args
    from droplet3d.api.engines import EngineRegistry

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["serve", "--ckpt", str(ckpt_3d), "--jobs-dir", str(tmp_path / "jobs"), "--device",
                              "cpu", "--profile", "fast", "--no-compile", "--vae-tiling"])
    settings = settings_from_args(args)
    assert (settings.profile, settings.compile, settings.quantize, settings.vae_tiling) == ("fast", False, None, True)
    registry = EngineRegistry(settings.orbit_ckpt, settings.video_ckpt, settings.device, settings.offload,
                              compile=settings.compile, profile=settings.profile, quantize="int8",
                              vae_tiling=settings.vae_tiling)
    engine = registry.get("orbit")
    try:
        described = engine.describe()
        assert (described["profile"], described["quantize"], described["compile"]) == ("fast", "int8", False)
        assert described["vae_tiling"] and engine.pipe.vae.use_tiling
    finally:
        registry.close()


def test_int8_reaches_the_view_aligner_with_its_lora_fused(tiny_root, picture, tmp_path):
    from droplet3d.engine import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tiny_root / "align_int8", with_align=True)
    engine = DropletEngine.load(str(ckpt), device="cpu", quantize="int8")
    try:
        result = generate(engine, picture, tmp_path, steps=2, view_align=True)
        flux = engine.aligner.pipe.transformer
        kinds = {type(m.weight).__name__ for name, m in flux.named_modules()
                 if isinstance(m, torch.nn.Linear) and name.startswith(("transformer_blocks.", "single_"))}
    finally:
        engine.close()
    assert kinds and all("Int8" in kind for kind in kinds)
    assert not any("lora" in name for name, _ in flux.named_parameters())  # fused, then unloaded
    assert (tmp_path / "aligned.png").is_file() and result.manifest["engine"]["quantize"] == "int8"


def test_cfg_truncation_keeps_dropletvideo_fps_on_the_positive_half(engine_video, picture, tmp_path):
    fps_batches: list[int] = []
    handle = engine_video.pipe.transformer.fps_embedding.register_forward_pre_hook(
        lambda module, args: fps_batches.append(args[0].shape[0]))
    try:
        result = generate(engine_video, picture, tmp_path, steps=4, fps=8, cfg_truncation=0.5)
    finally:
        handle.remove()
    assert fps_batches == [2, 2, 1, 1]
    assert result.manifest["speed"]["uncond_passes"] == 2 and result.manifest["params"]["fps"] == 8
