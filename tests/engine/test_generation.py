"""End-to-end generation on tiny checkpoints: determinism, each branch of docs/design.md §7, outputs, cancel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from droplet3d.engine import GenerationParams, write_orbit_folder
from droplet3d.errors import Cancelled, DropletError, InputError
from droplet3d.files import is_staging
from engine_helpers import SIZE, read_frames
from reference_loop import reference_frames

STEPS = 3


def generate(engine, picture, out, **overrides):
    params = GenerationParams(prompt="a small orange box", **{"steps": STEPS, **SIZE, **overrides})
    return write_orbit_folder(engine.generate(picture, params), out)


def pipeline_frames(engine, picture, seed=42, fps=None, **size):
    size = {**SIZE, **size}
    gen = torch.Generator("cpu").manual_seed(seed)
    return engine.pipe(picture, "a small orange box", height=size["height"], width=size["width"],
                       num_frames=size["num_frames"], num_inference_steps=STEPS, guidance_scale=6.0,
                       generator=gen, fps=fps)


def test_same_seed_gives_identical_frames(engine_3d, picture, tmp_path):
    a = generate(engine_3d, picture, tmp_path / "a", seed=7)
    b = generate(engine_3d, picture, tmp_path / "b", seed=7)
    assert np.array_equal(read_frames(a.frames), read_frames(b.frames))


def test_different_seeds_give_different_frames(engine_3d, picture, tmp_path):
    a = generate(engine_3d, picture, tmp_path / "a", seed=1)
    b = generate(engine_3d, picture, tmp_path / "b", seed=2)
    assert not np.array_equal(read_frames(a.frames), read_frames(b.frames))


@pytest.mark.parametrize("engine_name", ["engine_3d", "engine_rotary", "engine_noise"])
def test_pipeline_matches_reference_loop(engine_name, picture, request, layout):
    engine = request.getfixturevalue(engine_name)
    ours = pipeline_frames(engine, picture, seed=3)
    ref = reference_frames(engine.pipe, picture, "a small orange box", SIZE["width"], SIZE["height"],
                           SIZE["num_frames"], STEPS, 6.0, seed=3)
    assert ours.shape == (9, 32, 32, 3)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_dropletvideo_matches_reference_loop_and_fps_changes_motion(engine_video, picture):
    fast = pipeline_frames(engine_video, picture, seed=3, fps=16)
    ref = reference_frames(engine_video.pipe, picture, "a small orange box", SIZE["width"], SIZE["height"],
                           SIZE["num_frames"], STEPS, 6.0, seed=3, fps=16)
    np.testing.assert_allclose(fast, ref, atol=1e-5)
    slow = pipeline_frames(engine_video, picture, seed=3, fps=4)
    assert np.abs(fast - slow).max() > 1e-4


def test_reference_noise_flag_changes_conditioning(engine_3d, engine_noise, picture):
    plain = pipeline_frames(engine_3d, picture, seed=5)
    noisy = pipeline_frames(engine_noise, picture, seed=5)
    assert np.abs(plain - noisy).max() > 1e-4
    # and it stays seeded
    np.testing.assert_array_equal(noisy, pipeline_frames(engine_noise, picture, seed=5))


def test_text_longer_than_the_226_row_offset_is_used(engine_3d):
    assert engine_3d.pipe.text_len > 226
    assert not engine_3d.pipe.transformer.config.use_rotary_positional_embeddings


def test_rotary_checkpoint_has_no_additive_table(engine_rotary):
    tr = engine_rotary.pipe.transformer
    assert tr.config.use_rotary_positional_embeddings
    assert tr.table_latent_frames is None
    assert not hasattr(tr.patch_embed, "pos_embedding")


@pytest.mark.parametrize(("requested", "rounded", "written"), [(10, 9, 9), (12, 9, 9), (1, 1, 1), (5, 5, 8)])
def test_frame_count_is_rounded_down_to_4k_plus_1(engine_rotary, picture, tmp_path, requested, rounded, written):
    result = generate(engine_rotary, picture, tmp_path, num_frames=requested, steps=1)
    assert result.manifest["params"]["num_frames"] == rounded
    assert result.manifest["requested"]["num_frames"] == requested
    # The CogVideoX VAE decodes an even latent count (5 frames → 2 latents) to 4 frames per latent, as in the
    # reference: what it decodes is what is written (85 frames → 22 latents → 88 frames).
    assert len(result.frames) == result.manifest["num_frames"] == written


def test_outputs_and_manifest(engine_3d, picture, tmp_path, layout):
    result = generate(engine_3d, picture, tmp_path, seed=None, negative_prompt="ugly")
    names = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert names == [f"{k:04d}.png" for k in range(9)]
    assert (tmp_path / "orbit.mp4").stat().st_size > 0
    assert (tmp_path / "orbit.mp4").read_bytes()[4:8] == b"ftyp"
    assert (tmp_path / "input.png").is_file() and not (tmp_path / "aligned.png").exists()
    assert not [p for p in tmp_path.iterdir() if is_staging(p)]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest == result.manifest
    assert manifest["kind"] == "droplet3d"
    assert manifest["params"]["prompt"] == "a small orange box"
    assert manifest["params"]["negative_prompt"] == "ugly"
    assert isinstance(manifest["seed"], int) and manifest["seed"] == manifest["params"]["seed"]
    assert manifest["requested"]["seed"] is None
    assert manifest["checkpoint"]["config_hash"] == engine_3d.info.config_hash
    assert manifest["checkpoint"]["text_len"] == (240 if layout == "diffusers" else 450)
    assert manifest["video_fps"] == 8
    assert {"torch", "diffusers", "transformers"} <= set(manifest["libraries"])
    assert set(manifest["timings"]) == {"encoding", "denoising", "decoding", "writing"}
    with_seed = generate(engine_3d, picture, tmp_path / "again", seed=manifest["seed"], negative_prompt="ugly")
    assert np.array_equal(read_frames(result.frames), read_frames(with_seed.frames))


def test_dropletvideo_writes_video_at_requested_fps(engine_video, picture, tmp_path):
    result = generate(engine_video, picture, tmp_path, fps=12)
    assert result.manifest["kind"] == "dropletvideo"
    assert result.manifest["video_fps"] == 12
    import imageio_ffmpeg

    meta = next(imageio_ffmpeg.read_frames(str(result.video)))
    assert meta["fps"] == 12 and meta["size"] == (32, 32)


def test_progress_reports_stages_in_order(engine_3d, picture, tmp_path):
    events = []
    params = GenerationParams(prompt="box", steps=STEPS, **SIZE)
    write_orbit_folder(engine_3d.generate(picture, params, progress=lambda *e: events.append(e)), tmp_path,
                       progress=lambda *e: events.append(e))
    stages = [e[0] for e in events]
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == [
        "encoding", "denoising", "decoding", "writing"]
    steps = [(e[1], e[2]) for e in events if e[0] == "denoising"]
    assert steps == [(k, STEPS) for k in range(STEPS + 1)]
    assert all(e[3] >= 0 for e in events)


def test_cancel_mid_loop_stops_cleanly_and_engine_stays_usable(engine_3d, picture, tmp_path):
    seen = []

    def progress(stage, step, total, elapsed):
        seen.append((stage, step))

    params = GenerationParams(prompt="box", steps=6, **SIZE)
    with pytest.raises(Cancelled):
        engine_3d.generate(picture, params, progress=progress, should_cancel=lambda: ("denoising", 2) in seen)
    assert max(step for stage, step in seen if stage == "denoising") == 2
    assert "decoding" not in {stage for stage, _ in seen}
    result = generate(engine_3d, picture, tmp_path / "job")  # the lock is free and the interrupt flag reset
    assert len(result.frames) == 9


def test_cancel_before_any_model_work(engine_3d, picture, tmp_path):
    stages = []
    with pytest.raises(Cancelled):
        engine_3d.generate(picture, GenerationParams(prompt="box", **SIZE), should_cancel=lambda: True,
                           progress=lambda *e: stages.append(e[0]))
    assert stages == ["encoding"]  # stopped at the first stage boundary, before the text encoder ran


def test_a_second_generation_during_one_is_refused_as_busy(engine_3d, picture, tmp_path):
    params = GenerationParams(prompt="box", steps=2, **SIZE)
    refusals = []

    def progress(stage, step, total, elapsed):
        if stage == "denoising" and step == 1 and not refusals:
            with pytest.raises(DropletError) as err:
                engine_3d.generate(picture, params)
            refusals.append(err.value.code)

    frames = engine_3d.generate(picture, params, progress=progress).frames
    assert refusals == ["busy"] and frames.shape == (9, 32, 32, 3) and frames.dtype == np.uint8
    assert engine_3d.generate(picture, params).frames.shape == frames.shape


def test_frames_beyond_the_positional_table_are_rejected(engine_3d, picture, tmp_path):
    # the tiny table is 9 latent frames (33 pixel frames); the reference cannot add a shorter table
    with pytest.raises(InputError) as err:
        generate(engine_3d, picture, tmp_path, num_frames=37)
    assert err.value.field == "num_frames" and "33" in str(err.value)


def test_view_align_without_assets_is_rejected(engine_3d, picture, tmp_path):
    with pytest.raises(InputError) as err:
        generate(engine_3d, picture, tmp_path, view_align=True)
    assert err.value.field == "view_align"
    assert not (tmp_path / "input.png").exists()


def test_describe_is_json_able(engine_3d):
    info = engine_3d.describe()
    json.dumps(info)
    assert info["kind"] == "droplet3d" and info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["offload"] == "none" and not info["has_view_align"] and "transformer" in info["loaded"]


def test_view_align_runs_first_and_generation_starts_from_the_aligned_image(ckpt_align, tmp_path, picture):
    from droplet3d.engine import DropletEngine
    from PIL import Image

    engine = DropletEngine.load(str(ckpt_align), device="cpu")
    try:
        assert engine.has_view_align
        events = []
        params = GenerationParams(prompt="a small orange box", steps=STEPS, seed=3, view_align=True, **SIZE)
        result = write_orbit_folder(engine.generate(picture, params, progress=lambda *e: events.append(e[0])),
                                    tmp_path / "job")
        loaded = engine.describe()["loaded"]
        aligned = Image.open(tmp_path / "job" / "aligned.png").convert("RGB")
        from_aligned = pipeline_frames(engine, aligned, seed=3)
        from_input = pipeline_frames(engine, picture, seed=3)
        # The engine's T5-sharing path: FLUX's text_encoder_2 is the very module the Droplet pipeline encodes with.
        assert engine.aligner.pipe.text_encoder_2 is engine.pipe.text_encoder
    finally:
        engine.close()
    assert events[0] == "aligning" and "encoding" in events
    assert aligned.size == (32, 32) and "aligned.png" in result.manifest["files"]
    written = read_frames(result.frames)
    assert np.array_equal(written, (from_aligned * 255).astype(np.uint8))
    assert not np.array_equal(written, (from_input * 255).astype(np.uint8))
    # The tiny FLUX folder holds byte copies of Droplet's T5: the weights are equal, so they must be shared.
    assert result.manifest["view_align"]["shares_text_encoder"] is True
    assert "view_aligner" in loaded  # kept for the next request


def test_view_align_keeps_flux_own_t5_when_the_weights_differ(ckpt_align, tmp_path):
    import shutil

    from droplet3d.engine import DropletEngine
    from safetensors.torch import load_file, save_file

    ckpt = Path(shutil.copytree(ckpt_align, tmp_path / "ckpt"))
    shard = sorted((ckpt / "FLUX.1-Kontext-dev" / "text_encoder_2").glob("model-*.safetensors"))[0]
    tensors = load_file(shard)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, str(shard), metadata={"format": "pt"})
    engine = DropletEngine.load(str(ckpt), device="cpu")
    try:
        aligner = engine.view_aligner()
        assert aligner.shares_text_encoder is False and f"tensor {name} differs" in aligner.share_reason
        assert aligner.pipe.text_encoder_2 is not engine.pipe.text_encoder
    finally:
        engine.close()
