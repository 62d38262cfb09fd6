"""View alignment on a tiny random FLUX.1 Kontext checkpoint: real diffusers pipeline, real LoRA, real T5 files."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from droplet3d.engine import make_tiny_checkpoint
from droplet3d.engine.align import FLUX_DIR, LORA_FILE, ViewAligner, compare_text_encoders
from droplet3d.errors import Cancelled, CheckpointError, InputError
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import T5Config, T5EncoderModel

STEPS = 1  # each edit still runs Kontext at its ~1024² working area: VAE encode + decode dominate


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    # One layout: the layouts differ only in Droplet's transformer and VAE configs, which the aligner never reads.
    return make_tiny_checkpoint(tmp_path_factory.mktemp("align") / "with_align", with_align=True)


@pytest.fixture
def ckpt_copy(tiny_ckpt, tmp_path) -> Path:
    """A private copy for tests that damage or change files."""
    return Path(shutil.copytree(tiny_ckpt, tmp_path / "ckpt"))


@pytest.fixture(scope="session")
def droplet_t5(tiny_ckpt) -> T5EncoderModel:
    return T5EncoderModel.from_pretrained(tiny_ckpt / "text_encoder").eval()


@pytest.fixture(scope="session")
def aligner(tiny_ckpt, droplet_t5) -> ViewAligner:
    return ViewAligner.load(tiny_ckpt, "cpu", torch.float32, droplet_text_encoder=droplet_t5)


@pytest.fixture(scope="session")
def source_image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))


@pytest.fixture(scope="session")
def aligned(aligner, source_image) -> np.ndarray:
    """The default edit of ``source_image`` at 64×64, computed once."""
    return pixels(aligner.align(source_image, 64, 64, steps=STEPS))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


def flux_t5(ckpt: Path) -> Path:
    return ckpt / FLUX_DIR / "text_encoder_2"


# --- the edit itself --------------------------------------------------------------------------------------------


def test_aligned_image_has_requested_size_and_mode(aligner, source_image):
    out = aligner.align(source_image.convert("L"), 64, 48, steps=STEPS)
    assert out.size == (64, 48)
    assert out.mode == "RGB"


def test_same_seed_gives_same_image(aligner, source_image, aligned):
    assert np.array_equal(pixels(aligner.align(source_image, 64, 64, steps=STEPS)), aligned)


def test_lora_changes_aligned_image(aligner, source_image, aligned):
    aligner.pipe.disable_lora()
    try:
        without_lora = pixels(aligner.align(source_image, 64, 64, steps=STEPS))
    finally:
        aligner.pipe.enable_lora()
    # Edits are bit-reproducible (test above), so any difference is the LoRA's.
    assert np.abs(aligned - without_lora).mean() > 0.5


def test_lora_file_targets_the_flux_transformer(tiny_ckpt):
    keys = load_file(tiny_ckpt / LORA_FILE).keys()
    assert keys and all(k.startswith("transformer.") and ".lora_" in k for k in keys)
    assert any(".lora_B." in k for k in keys)
    assert all(load_file(tiny_ckpt / LORA_FILE)[k].abs().sum() > 0 for k in keys if ".lora_B." in k)


def test_progress_reports_every_step_and_can_stop_the_edit(aligner, source_image):
    seen = []
    aligner.align(source_image, 32, 32, steps=2, progress=lambda step, total: seen.append((step, total)))
    assert seen == [(1, 2), (2, 2)]

    def cancel(step, total):
        raise Cancelled("stopped by the test")

    with pytest.raises(Cancelled):
        aligner.align(source_image, 64, 64, steps=STEPS, progress=cancel)


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"width": 0}, "width"), ({"height": -16}, "height"), ({"steps": 0}, "steps")]
)
def test_bad_size_or_steps_is_rejected_before_any_work(aligner, source_image, kwargs, field):
    calls = []
    with pytest.raises(InputError) as info:
        aligner.align(source_image, **{"width": 64, "height": 64, **kwargs}, progress=lambda *a: calls.append(a))
    assert info.value.field == field and not calls


def test_tiny_clip_tokenizer_uses_its_merges(aligner):
    tokenizer = aligner.pipe.tokenizer
    ids = tokenizer("Orthogonal view, zebra!", add_special_tokens=False).input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[:3] == ["orthogonal</w>", "view</w>", ",</w>"]
    assert tokenizer.unk_token_id not in ids


# --- sharing Droplet's T5 ---------------------------------------------------------------------------------------


def test_equal_t5_weights_are_shared(aligner, droplet_t5, caplog, tiny_ckpt):
    assert aligner.shares_text_encoder
    assert aligner.pipe.text_encoder_2 is droplet_t5
    assert "tensors equal" in aligner.share_reason
    with caplog.at_level(logging.INFO, logger="droplet3d.engine.align"):
        ViewAligner.load(tiny_ckpt, "cpu", torch.float32, droplet_text_encoder=droplet_t5)
    assert any("sharing Droplet's T5" in r.getMessage() for r in caplog.records)


def test_shared_and_separate_encoders_give_the_same_edit(tiny_ckpt, source_image, aligned):
    separate = ViewAligner.load(tiny_ckpt, "cpu", torch.float32)
    assert not separate.shares_text_encoder
    assert separate.share_reason == "no Droplet text encoder given"
    assert np.array_equal(pixels(separate.align(source_image, 64, 64, steps=STEPS)), aligned)


def test_one_perturbed_tensor_is_not_shared(ckpt_copy, droplet_t5, caplog):
    shard = sorted(flux_t5(ckpt_copy).glob("model-*.safetensors"))[-1]
    tensors = load_file(shard)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1e-3
    save_file(tensors, str(shard), metadata={"format": "pt"})

    with caplog.at_level(logging.INFO, logger="droplet3d.engine.align"):
        aligner = ViewAligner.load(ckpt_copy, "cpu", torch.float32, droplet_text_encoder=droplet_t5)
    assert not aligner.shares_text_encoder
    assert f"tensor {name} differs" in aligner.share_reason
    assert any("loading FLUX's own T5" in r.getMessage() for r in caplog.records)
    own = aligner.pipe.text_encoder_2
    assert isinstance(own, T5EncoderModel) and own is not droplet_t5
    assert not torch.equal(own.state_dict()[name], droplet_t5.state_dict()[name])


def test_different_config_is_decided_without_reading_tensors(ckpt_copy, droplet_t5):
    old = T5Config.from_pretrained(flux_t5(ckpt_copy))
    shutil.rmtree(flux_t5(ckpt_copy))
    wider = T5Config(**{**old.to_dict(), "d_model": old.d_model + 16})
    T5EncoderModel(wider).save_pretrained(flux_t5(ckpt_copy))

    aligner = ViewAligner.load(ckpt_copy, "cpu", torch.float32, droplet_text_encoder=droplet_t5)
    assert not aligner.shares_text_encoder
    assert aligner.share_reason.startswith("configs differ (d_model: 32 vs 48")
    assert aligner.share_reason.endswith("no tensor read")
    assert aligner.pipe.text_encoder_2 is not droplet_t5
    assert aligner.pipe.text_encoder_2.config.d_model == 48


def test_different_shapes_are_decided_from_headers_only(ckpt_copy):
    shard = sorted(flux_t5(ckpt_copy).glob("model-*.safetensors"))[0]
    tensors = load_file(shard)
    name = sorted(tensors)[0]
    tensors[name] = torch.cat([tensors[name], tensors[name]])
    save_file(tensors, str(shard), metadata={"format": "pt"})
    decision = compare_text_encoders(ckpt_copy / "text_encoder", flux_t5(ckpt_copy), torch.float32)
    assert not decision.shared
    assert decision.reason.startswith(f"shape of {name} differs") and decision.reason.endswith("no tensor read")


def test_resharded_equal_weights_are_still_shared(ckpt_copy, droplet_t5):
    """Different shard sizes alone prove nothing: the values decide."""
    shutil.rmtree(flux_t5(ckpt_copy))
    droplet_t5.save_pretrained(flux_t5(ckpt_copy))  # one model.safetensors instead of two shards
    decision = compare_text_encoders(ckpt_copy / "text_encoder", flux_t5(ckpt_copy), torch.float32)
    assert decision.shared
    assert decision.reason.startswith("shard sizes differ")


def test_identical_shard_files_are_shared_without_reading(ckpt_copy):
    for shard in flux_t5(ckpt_copy).glob("model-*.safetensors"):
        shard.unlink()
        shard.symlink_to(ckpt_copy / "text_encoder" / shard.name)
    decision = compare_text_encoders(ckpt_copy / "text_encoder", flux_t5(ckpt_copy), torch.float32)
    assert decision.shared and decision.reason.endswith("no tensor read")


def test_hub_cache_blob_hashes_are_used_without_reading(ckpt_copy, tmp_path):
    """A Hugging Face cache names each file blob by its sha256; equal names mean equal bytes."""
    for folder, blobs in ((ckpt_copy / "text_encoder", tmp_path / "a" / "blobs"),
                          (flux_t5(ckpt_copy), tmp_path / "b" / "blobs")):
        blobs.mkdir(parents=True)
        for shard in folder.glob("model-*.safetensors"):
            blob = blobs / hashlib.sha256(shard.read_bytes()).hexdigest()
            os.replace(shard, blob)
            shard.symlink_to(blob)
    decision = compare_text_encoders(ckpt_copy / "text_encoder", flux_t5(ckpt_copy), torch.float32)
    assert decision.shared and decision.reason.endswith("no tensor read")


def test_offload_profile_keeps_a_separate_encoder(tiny_ckpt, droplet_t5, source_image):
    aligner = ViewAligner.load(tiny_ckpt, "cpu", torch.float32, droplet_text_encoder=droplet_t5, offload="model")
    assert not aligner.shares_text_encoder and "offload" in aligner.share_reason
    assert aligner.pipe.text_encoder_2 is not droplet_t5
    assert aligner.align(source_image, 32, 32, steps=1).size == (32, 32)


# --- broken checkpoints -----------------------------------------------------------------------------------------


def test_missing_flux_folder_names_it(ckpt_copy):
    shutil.rmtree(ckpt_copy / FLUX_DIR)
    with pytest.raises(CheckpointError, match=FLUX_DIR) as info:
        ViewAligner.load(ckpt_copy, "cpu", torch.float32)
    assert "\n" not in str(info.value)


def test_missing_lora_file_names_it(ckpt_copy):
    (ckpt_copy / LORA_FILE).unlink()
    with pytest.raises(CheckpointError, match=LORA_FILE) as info:
        ViewAligner.load(ckpt_copy, "cpu", torch.float32)
    assert "\n" not in str(info.value)


def test_corrupt_lora_file_names_it(ckpt_copy):
    (ckpt_copy / LORA_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=LORA_FILE) as info:
        ViewAligner.load(ckpt_copy, "cpu", torch.float32)
    assert "\n" not in str(info.value)


def test_missing_flux_component_names_it(ckpt_copy):
    shutil.rmtree(ckpt_copy / FLUX_DIR / "transformer")
    with pytest.raises(CheckpointError, match=r"FLUX\.1-Kontext-dev/transformer is missing"):
        ViewAligner.load(ckpt_copy, "cpu", torch.float32)


def test_missing_t5_shard_names_it(ckpt_copy, droplet_t5):
    shard = sorted(flux_t5(ckpt_copy).glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointError, match=shard.name):
        ViewAligner.load(ckpt_copy, "cpu", torch.float32, droplet_text_encoder=droplet_t5)
