"""``droplet3d doctor`` on good tiny checkpoints (both layouts) and on each kind of damage, made on disk."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from droplet3d.cli import main
from droplet3d.engine.doctor import Diagnosis, diagnose, estimate_memory
from safetensors.torch import load_file

TE = "text_encoder"
SHARD_2 = "model-00002-of-00002.safetensors"


def doctor(path: Path, capsys, *extra: str) -> tuple[int, str]:
    rc = main(["doctor", str(path), *extra])
    return rc, capsys.readouterr().out


def parameters(*files: Path) -> int:
    return sum(t.numel() for f in files for t in load_file(f).values())


def test_good_droplet3d_checkpoint_is_described(ckpt_3d, capsys, layout):
    rc, out = doctor(ckpt_3d, capsys)
    assert rc == 0 and out.rstrip().endswith("OK")
    text_len = 240 if layout == "diffusers" else 450
    assert f"model      droplet3d (rotary off, text length {text_len}, FPS path no)" in out
    report = diagnose(ckpt_3d)
    assert report.ok and report.problems == []
    comps = report.components
    weights = "diffusion_pytorch_model.safetensors"
    assert comps["transformer"].parameters == parameters(ckpt_3d / "transformer" / weights)
    assert comps["vae"].parameters == parameters(ckpt_3d / "vae" / "diffusion_pytorch_model.safetensors")
    assert comps[TE].parameters == parameters(*sorted((ckpt_3d / TE).glob("model-*.safetensors")))
    assert comps[TE].files == [f"{TE}/model-00001-of-00002.safetensors", f"{TE}/{SHARD_2}"]
    assert comps["transformer"].dtypes == ["F32"]
    assert comps["vae"].bytes_on_disk == (ckpt_3d / "vae" / "diffusion_pytorch_model.safetensors").stat().st_size
    assert report.view_align == {"possible": False,
                                 "reason": "no FLUX.1-Kontext-dev folder and no pytorch_lora_weights.safetensors"}
    assert set(report.memory_bytes) == {"none", "model", "sequential"}
    assert report.memory_bytes["none"] >= report.memory_bytes["model"] >= report.memory_bytes["sequential"] > 0


def test_good_dropletvideo_and_rotary_checkpoints(ckpt_video, ckpt_rotary, capsys):
    video = diagnose(ckpt_video)
    assert video.ok and (video.model, video.fps_path, video.rotary) == ("dropletvideo", True, False)
    rotary = diagnose(ckpt_rotary)
    assert rotary.ok and (rotary.model, rotary.rotary) == ("droplet3d", True)
    rc, out = doctor(ckpt_video, capsys, "--json")
    data = json.loads(out)
    assert rc == 0 and data["ok"] is True and data["model"] == "dropletvideo" and data["problems"] == []
    assert data["components"]["transformer"]["parameters"] == video.components["transformer"].parameters


def test_view_alignment_and_t5_sharing_from_headers_only(ckpt_align, tmp_path):
    report = diagnose(ckpt_align)
    assert report.ok and report.view_align["possible"] is True
    assert report.components["lora"].parameters > 0 and report.components["flux_kontext"].parameters > 0
    # Byte copies of the T5 in separate files: only tensor values could tell, and the doctor reads none.
    assert report.t5_sharing["shared"] is None and "tensor values decide" in report.t5_sharing["reason"]
    linked = Path(shutil.copytree(ckpt_align, tmp_path / "linked"))
    for shard in (linked / "FLUX.1-Kontext-dev" / "text_encoder_2").glob("model-*.safetensors"):
        shard.unlink()
        shard.symlink_to(linked / TE / shard.name)
    shared = diagnose(linked).t5_sharing
    assert shared["shared"] is True and shared["reason"].endswith("no tensor read")


def _damage(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    edit(dst)
    return dst


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _truncate(path: Path, size: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:size])


def _widen_text_dim(d: Path) -> None:
    _edit_json(d / "transformer" / "config.json", lambda c: c.update(text_embed_dim=48))


def _index_names_a_ghost(d: Path) -> None:
    def change(index):
        name = sorted(index["weight_map"])[0]
        index["weight_map"][name] = "model-00003-of-00002.safetensors"

    _edit_json(d / TE / "model.safetensors.index.json", change)


DAMAGE = {
    "missing shard": (lambda d: (d / TE / SHARD_2).unlink(),
                      [f"{TE}/{SHARD_2}: missing; model.safetensors.index.json names it for"]),
    "index names a missing file": (_index_names_a_ghost,
                                   [f"{TE}/model-00003-of-00002.safetensors: missing; model.safetensors.index.json "
                                    "names it for 1 tensors"]),
    "shape contradicts the config": (_widen_text_dim,
                                     ["transformer/diffusion_pytorch_model.safetensors: tensor "
                                      "patch_embed.text_proj.weight has shape (32, 32); transformer/config.json "
                                      "implies (32, 48)"]),
    "truncated header": (lambda d: _truncate(d / "vae" / "diffusion_pytorch_model.safetensors", 100),
                         ["vae/diffusion_pytorch_model.safetensors: truncated safetensors header: it declares"]),
    "truncated data": (lambda d: _truncate(d / "transformer" / "diffusion_pytorch_model.safetensors", 50_000),
                       ["transformer/diffusion_pytorch_model.safetensors: truncated: the header places tensor data"]),
    "missing component": (lambda d: shutil.rmtree(d / "vae"),
                          ["vae/config.json: missing; expected the CogVideoX VAE config",
                           "vae/diffusion_pytorch_model.safetensors: missing; expected the VAE weights"]),
    "half of view alignment": (lambda d: (d / "FLUX.1-Kontext-dev").mkdir(),
                               ["FLUX.1-Kontext-dev/model_index.json is missing",
                                "pytorch_lora_weights.safetensors: missing; FLUX.1-Kontext-dev is here"]),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_each_damage_is_one_line_naming_the_file_and_exits_non_zero(ckpt_3d, tmp_path, capsys, case):
    edit, expected = DAMAGE[case]
    bad = _damage(ckpt_3d, tmp_path / "bad", edit)
    rc, out = doctor(bad, capsys)
    assert rc == 1
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if re.fullmatch(r"\d+ problems?:", line))
    problems = lines[head + 1:]
    assert problems and all(line.startswith(str(bad)) for line in problems), out
    for text in expected:
        assert sum(text in line for line in problems) == 1, f"{text!r} not on one line of:\n{out}"
    rc, out = doctor(bad, capsys, "--json")
    data = json.loads(out)
    assert rc == 1 and data["ok"] is False and data["problems"] == problems


def test_a_narrow_patch_embedding_is_a_note_not_a_problem(tmp_path, layout):
    from droplet3d.engine import make_tiny_checkpoint

    report = diagnose(make_tiny_checkpoint(tmp_path / "narrow", weights_in_channels=16, layout=layout))
    assert report.ok
    assert any("patch_embed.proj.weight has 16 input channels" in note for note in report.notes)


def test_not_a_folder(tmp_path, capsys):
    rc, out = doctor(tmp_path / "nope", capsys)
    assert rc == 1 and f"{tmp_path / 'nope'}: no such folder; expected a checkpoint folder" in out


def test_memory_estimate_reproduces_the_measured_h100_profiles():
    """At full Droplet3D size the estimate gives back docs/benchmarks.md's figures (33.1 / 15.3 / 4.1 GB)."""
    import torch
    from droplet3d.engine.doctor import Component
    from droplet3d.engine.transformer import DropletTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    tr_cfg = {"num_attention_heads": 48, "attention_head_dim": 64, "in_channels": 33, "out_channels": 16,
              "time_embed_dim": 512, "text_embed_dim": 4096, "num_layers": 42, "sample_width": 90,
              "sample_height": 60, "sample_frames": 49, "patch_size": 2, "max_text_seq_length": 226}
    with torch.device("meta"):
        tr = DropletTransformer3DModel(**tr_cfg)
        t5 = T5EncoderModel(T5Config(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                                     feed_forward_proj="gated-gelu", vocab_size=32128))
    headers = {k: ("BF16", list(v.shape)) for k, v in tr.state_dict().items()}
    report = Diagnosis(path="full", model="droplet3d", text_len=450, components={
        "transformer": Component([], parameters=sum(p.numel() for p in tr.parameters())),
        "text_encoder": Component([], parameters=sum(p.numel() for p in t5.parameters())),
        "vae": Component([], parameters=215_583_907),  # AutoencoderKLCogVideoX at CogVideoX-5B's config
    })
    vae_cfg = {"block_out_channels": [128, 256, 256, 512]}
    gb = {k: v / 1e9 for k, v in estimate_memory(report, tr_cfg, vae_cfg, headers).items()}
    assert gb["none"] == pytest.approx(33.1, rel=0.05)
    assert gb["model"] == pytest.approx(15.3, rel=0.05)
    assert gb["sequential"] == pytest.approx(4.1, rel=0.08)
