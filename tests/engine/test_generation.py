"""End-to-end generation on tiny checkpoints: determinism, each branch of docs/design.md §7, outputs, cancel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from droplet3d.engine import GenerationParams, run_generation
from droplet3d.errors import Cancelled, InputError
from droplet3d.files import is_staging
from engine_helpers import SIZE, read_frames
from reference_loop import reference_frames

STEPS = 3


def generate(engine, picture, out, **overrides):
    params = GenerationParams(prompt="a small orange box", **{"steps": STEPS, **SIZE, **overrides})
    return run_generation(engine, picture, params, out)


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
def test_pipeline_matches_reference_loop(engine_name, picture, request):
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


def test_outputs_and_manifest(engine_3d, picture, tmp_path):
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
    assert manifest["checkpoint"]["text_len"] == 240
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
    run_generation(engine_3d, picture, params, tmp_path, progress=lambda *e: events.append(e))
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
        run_generation(engine_3d, picture, params, tmp_path / "job", progress=progress,
                       should_cancel=lambda: ("denoising", 2) in seen)
    assert max(step for stage, step in seen if stage == "denoising") == 2
    assert "decoding" not in {stage for stage, _ in seen}
    job = tmp_path / "job"
    assert not (job / "manifest.json").exists() and not (job / "frames").exists() and not (job / "orbit.mp4").exists()
    assert not [p for p in job.iterdir() if is_staging(p)]
    result = generate(engine_3d, picture, job)
    assert len(result.frames) == 9


def test_cancel_before_any_model_work(engine_3d, picture, tmp_path):
    with pytest.raises(Cancelled):
        run_generation(engine_3d, picture, GenerationParams(prompt="box", **SIZE), tmp_path, should_cancel=lambda: True)
    assert not (tmp_path / "manifest.json").exists()


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


def test_view_align_runs_first_and_writes_aligned_image(tmp_path, picture):
    from droplet3d.engine import DropletEngine, make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", with_align=True)
    engine = DropletEngine.load(str(ckpt), device="cpu")
    assert engine.has_view_align
    events = []
    params = GenerationParams(prompt="box", steps=2, view_align=True, **SIZE)
    result = run_generation(engine, picture, params, tmp_path / "job", progress=lambda *e: events.append(e[0]))
    loaded = engine.describe()["loaded"]
    engine.close()
    assert events[0] == "aligning" and "encoding" in events
    aligned = tmp_path / "job" / "aligned.png"
    from PIL import Image

    assert Image.open(aligned).size == (32, 32)
    assert "aligned.png" in result.manifest["files"]
    assert isinstance(result.manifest["view_align"]["shares_text_encoder"], bool)
    assert "view_aligner" in loaded  # kept for the next request
