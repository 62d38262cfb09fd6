"""Checkpoint layout, validation errors and the reference's tolerant transformer loading."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from droplet3d.engine import DropletEngine, make_tiny_checkpoint
from droplet3d.engine.checkpoint import inspect_checkpoint
from droplet3d.errors import CheckpointError

LAYOUT = [
    "model_index.json", "configuration.json", "LICENSE", "scheduler/scheduler_config.json",
    "text_encoder/config.json", "text_encoder/model-00001-of-00002.safetensors",
    "text_encoder/model-00002-of-00002.safetensors", "text_encoder/model.safetensors.index.json",
    "tokenizer/spiece.model", "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json",
    "tokenizer/added_tokens.json", "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
]


def test_tiny_checkpoint_has_the_published_layout(ckpt_3d):
    files = sorted(str(p.relative_to(ckpt_3d)) for p in ckpt_3d.rglob("*") if p.is_file())
    assert files == sorted(LAYOUT)
    sched = json.loads((ckpt_3d / "scheduler" / "scheduler_config.json").read_text())
    assert sched["prediction_type"] == "v_prediction" and sched["rescale_betas_zero_snr"]
    assert sched["timestep_spacing"] == "trailing" and sched["beta_schedule"] == "scaled_linear"
    assert (sched["beta_start"], sched["beta_end"]) == (0.00085, 0.012)
    index = json.loads((ckpt_3d / "text_encoder" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}


def test_tiny_tokenizer_is_a_real_sentencepiece_t5_tokenizer(ckpt_3d):
    import sentencepiece as spm
    from transformers import T5Tokenizer

    sp = spm.SentencePieceProcessor(model_file=str(ckpt_3d / "tokenizer" / "spiece.model"))
    assert sp.pad_id() == 0 and sp.eos_id() == 1 and sp.unk_id() == 2
    tok = T5Tokenizer.from_pretrained(ckpt_3d / "tokenizer")
    ids = tok("a red chair", padding="max_length", max_length=10).input_ids
    assert len(ids) == 10 and 1 in ids and ids[-1] == 0


def test_kind_and_flags_are_detected(ckpt_3d, ckpt_video, ckpt_noise, tmp_path, layout):
    assert inspect_checkpoint(ckpt_3d).kind == "droplet3d"
    assert inspect_checkpoint(ckpt_video).kind == "dropletvideo"
    # The authors' configs carry no text length: the model's default applies.
    assert inspect_checkpoint(ckpt_video).text_len == (240 if layout == "diffusers" else 400)
    assert inspect_checkpoint(ckpt_noise).transformer_config["add_noise_in_inpaint_model"] is True
    # DropletVideo is recognised from its fps_embedding weights even when the config has no flag
    copy = shutil.copytree(ckpt_video, tmp_path / "video")
    cfg = json.loads((copy / "transformer" / "config.json").read_text())
    cfg.pop("use_fps_embedding", None), cfg.pop("text_seq_length", None)
    (copy / "transformer" / "config.json").write_text(json.dumps(cfg))
    info = inspect_checkpoint(copy)
    assert info.kind == "dropletvideo" and info.text_len == 400
    assert info.config_hash != inspect_checkpoint(ckpt_video).config_hash


def test_make_tiny_checkpoint_options(tmp_path, layout):
    ckpt = make_tiny_checkpoint(tmp_path / "c", rotary=True, add_noise=True, layout=layout)
    cfg = json.loads((ckpt / "transformer" / "config.json").read_text())
    assert cfg["use_rotary_positional_embeddings"] and cfg["add_noise_in_inpaint_model"]
    assert cfg["in_channels"] == 33 and not cfg.get("use_fps_embedding")
    assert inspect_checkpoint(ckpt).kind == "droplet3d"


def test_16_channel_transformer_is_widened_with_zeros(tmp_path, caplog, layout):
    ckpt = make_tiny_checkpoint(tmp_path / "narrow", weights_in_channels=16, layout=layout)
    with caplog.at_level(logging.WARNING):
        engine = DropletEngine.load(str(ckpt), device="cpu")
    assert "widened with zeros" in caplog.text
    weight = engine.pipe.transformer.patch_embed.proj.weight
    assert weight.shape[1] == 33
    assert torch.count_nonzero(weight[:, 16:]) == 0 and torch.count_nonzero(weight[:, :16]) > 0
    engine.close()


def _broken(src, dst, edit):
    shutil.copytree(src, dst)
    edit(dst)
    return dst


@pytest.mark.parametrize(
    ("edit", "names"),
    [
        (lambda d: (d / "transformer" / "config.json").unlink(), "transformer/config.json: missing"),
        (lambda d: (d / "transformer" / "config.json").write_text("{not json"), "transformer/config.json: not valid"),
        (lambda d: (d / "text_encoder" / "model-00002-of-00002.safetensors").unlink(),
         "text_encoder/model-00002-of-00002.safetensors: missing"),
        (lambda d: (d / "transformer" / "diffusion_pytorch_model.safetensors").unlink(),
         "transformer/diffusion_pytorch_model.safetensors: missing"),
        (lambda d: (d / "tokenizer" / "spiece.model").unlink(), "tokenizer/spiece.model: missing"),
        (lambda d: (d / "vae" / "config.json").unlink(), "vae/config.json: missing"),
    ],
)
def test_malformed_folders_give_one_line_errors_naming_the_file(ckpt_3d, tmp_path, edit, names):
    bad = _broken(ckpt_3d, tmp_path / "bad", edit)
    with pytest.raises(CheckpointError) as err:
        DropletEngine.load(str(bad), device="cpu")
    assert names in str(err.value) and "\n" not in str(err.value)


def test_wrong_shapes_give_one_line_error_with_expected_shape(ckpt_3d, tmp_path):
    from safetensors.torch import load_file, save_file

    def shrink(d):
        path = d / "transformer" / "diffusion_pytorch_model.safetensors"
        state = load_file(str(path))
        state["proj_out.weight"] = state["proj_out.weight"][:5].contiguous()
        save_file(state, str(path))

    bad = _broken(ckpt_3d, tmp_path / "bad", shrink)
    with pytest.raises(CheckpointError) as err:
        DropletEngine.load(str(bad), device="cpu")
    msg = str(err.value)
    assert "transformer/diffusion_pytorch_model.safetensors" in msg and "proj_out.weight" in msg
    assert "expected (64, 32)" in msg and "\n" not in msg


def test_missing_folder_and_file_instead_of_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        DropletEngine.load(str(tmp_path / "nope"), device="cpu")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="expected a checkpoint folder"):
        DropletEngine.load(str(tmp_path / "file"), device="cpu")


def test_offload_needs_a_gpu(ckpt_3d):
    from droplet3d.errors import InputError

    with pytest.raises(InputError) as err:
        DropletEngine.load(str(ckpt_3d), device="cpu", offload="model")
    assert err.value.field == "offload"
    with pytest.raises(InputError):
        DropletEngine.load(str(ckpt_3d), device="cpu", offload="bogus")


# --- the authors' vocabulary ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "prefix"), [("droplet3d", "Droplet3D"), ("dropletvideo", "DropletVideo")])
def test_authors_layout_writes_the_authors_class_and_block_names(tmp_path, kind, prefix):
    ckpt = make_tiny_checkpoint(tmp_path / kind, kind=kind, layout="authors")
    vae = json.loads((ckpt / "vae" / "config.json").read_text())
    assert vae["_class_name"] == f"AutoencoderKL{prefix}"
    assert vae["down_block_types"] == [f"{prefix}DownBlock3D"] * 4
    assert vae["up_block_types"] == [f"{prefix}UpBlock3D"] * 4
    tr = json.loads((ckpt / "transformer" / "config.json").read_text())
    assert tr["_class_name"] == f"{prefix}Transformer3DModel"
    assert "add_noise_in_inpaint_model" in tr  # the authors' own key, unknown to diffusers' CogVideoX
    assert "use_fps_embedding" not in tr and "text_seq_length" not in tr  # ours, not theirs
    assert json.loads((ckpt / "model_index.json").read_text())["vae"][1] == f"AutoencoderKL{prefix}"
    info = inspect_checkpoint(ckpt)
    assert info.kind == kind  # DropletVideo found from its fps_embedding weights alone


def test_diffusers_alone_cannot_read_the_authors_vae_but_the_engine_does(ckpt_3d, layout):
    from diffusers import AutoencoderKLCogVideoX
    from droplet3d.engine.checkpoint import load_components

    if layout == "authors":
        with pytest.raises(ValueError, match="down_block_type"):
            AutoencoderKLCogVideoX.from_pretrained(ckpt_3d / "vae")
    vae = load_components(inspect_checkpoint(ckpt_3d), torch.float32)["vae"]
    plain = AutoencoderKLCogVideoX.from_pretrained(ckpt_3d / "vae", down_block_types=["CogVideoXDownBlock3D"] * 4,
                                                   up_block_types=["CogVideoXUpBlock3D"] * 4)
    assert [type(b).__name__ for b in vae.encoder.down_blocks] == ["CogVideoXDownBlock3D"] * 4
    for (name, a), (_, b) in zip(vae.state_dict().items(), plain.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_a_block_name_neither_vocabulary_knows_names_the_file(ckpt_3d, tmp_path):
    def rename(d):
        cfg = json.loads((d / "vae" / "config.json").read_text())
        cfg["up_block_types"][2] = "FancyUpBlock3D"
        (d / "vae" / "config.json").write_text(json.dumps(cfg))

    bad = _broken(ckpt_3d, tmp_path / "bad", rename)
    with pytest.raises(CheckpointError) as err:
        DropletEngine.load(str(bad), device="cpu")
    msg = str(err.value)
    assert "vae/config.json" in msg and "'FancyUpBlock3D'" in msg and "Droplet3DUpBlock3D" in msg


def test_unknown_config_keys_are_accepted_with_a_note(ckpt_3d, tmp_path, caplog):
    def extra(d):
        for sub in ("vae", "transformer"):
            cfg = json.loads((d / sub / "config.json").read_text())
            cfg["authors_private_switch"] = 3
            (d / sub / "config.json").write_text(json.dumps(cfg))

    odd = _broken(ckpt_3d, tmp_path / "odd", extra)
    with caplog.at_level(logging.INFO, logger="droplet3d.engine.vocabulary"):
        engine = DropletEngine.load(str(odd), device="cpu")
    engine.close()
    notes = [r.getMessage() for r in caplog.records if "authors_private_switch" in r.getMessage()]
    assert any("vae/config.json" in n and "AutoencoderKLCogVideoX" in n for n in notes)
    assert any("transformer/config.json" in n and "DropletTransformer3DModel" in n for n in notes)


def test_tokenizer_without_special_tokens_map_and_added_tokens_reads_the_same(ckpt_3d, tmp_path):
    from droplet3d.engine.checkpoint import load_components

    bare = _broken(ckpt_3d, tmp_path / "bare", lambda d: [
        (d / "tokenizer" / name).unlink() for name in ("special_tokens_map.json", "added_tokens.json")])
    text = "a red chair <extra_id_0> rotates"
    ids = [load_components(inspect_checkpoint(c), torch.float32)["tokenizer"](text).input_ids for c in (ckpt_3d, bare)]
    assert ids[0] == ids[1] and 1 in ids[0]


def test_text_encoder_as_one_file_loads_the_same_weights(ckpt_3d, tmp_path):
    from droplet3d.engine.checkpoint import load_components
    from safetensors.torch import load_file, save_file

    def merge(d):
        folder = d / "text_encoder"
        state = {}
        for shard in sorted(folder.glob("model-*.safetensors")):
            state.update(load_file(shard))
            shard.unlink()
        (folder / "model.safetensors.index.json").unlink()
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})

    single = _broken(ckpt_3d, tmp_path / "single", merge)
    a, b = (load_components(inspect_checkpoint(c), torch.float32)["text_encoder"] for c in (ckpt_3d, single))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
