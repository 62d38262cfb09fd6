"""The Droplet transformer's forward, checked apart from itself: against diffusers' own CogVideoX transformer where
the two are the same model, and against restatements of the output unpatchify and the FPS conditioning sum."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXTransformer3DModel
from droplet3d.engine.embeddings import rotary_embedding
from droplet3d.engine.transformer import DropletTransformer3DModel

# Toy CogVideoX dims; the grid below gives 2 latent frames of 4x6 latents (patch 2: 2x3 tokens per frame).
CONFIG = {"num_attention_heads": 2, "attention_head_dim": 16, "out_channels": 16, "time_embed_dim": 16,
          "text_embed_dim": 32, "num_layers": 2, "patch_size": 2, "max_text_seq_length": 226}
BATCH, FRAMES, HEIGHT, WIDTH, TEXT = 2, 2, 4, 6, 7


def droplet(**overrides) -> DropletTransformer3DModel:
    torch.manual_seed(0)
    return DropletTransformer3DModel(**{**CONFIG, **overrides}).eval()


def inputs(channels: int, seed: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {"hidden_states": torch.randn(BATCH, FRAMES, channels, HEIGHT, WIDTH, generator=gen),
            "encoder_hidden_states": torch.randn(BATCH, TEXT, CONFIG["text_embed_dim"], generator=gen),
            "timestep": torch.tensor([999, 321])}


def rope() -> tuple[torch.Tensor, torch.Tensor]:
    # The rotary table for this latent grid (pixels = latents x 8), as the pipeline builds it.
    return rotary_embedding(FRAMES, HEIGHT * 8, WIDTH * 8, CONFIG["patch_size"], CONFIG["attention_head_dim"], "cpu",
                            8)


def test_forward_equals_diffusers_cogvideox_where_the_models_coincide():
    """16 input channels, rotary, no FPS: Droplet is CogVideoX, so diffusers' class on the same weights must agree."""
    ours = droplet(in_channels=16, use_rotary_positional_embeddings=True)
    theirs = CogVideoXTransformer3DModel(**CONFIG, in_channels=16, use_rotary_positional_embeddings=True).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)  # the same parameter names, every one
    x = inputs(16)
    with torch.no_grad():
        a = ours(**x, image_rotary_emb=rope(), return_dict=False)[0]
        b = theirs(**x, image_rotary_emb=rope(), return_dict=False)[0]
    assert a.shape == (BATCH, FRAMES, 16, HEIGHT, WIDTH)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_output_unpatchify_restated_index_by_index():
    """Token (f, y, x) of proj_out holds channel c's p×p patch as c·p² + i·p + j; pixel (y·p+i, x·p+j) of frame f."""
    model = droplet(in_channels=33)
    captured = {}
    model.proj_out.register_forward_hook(lambda mod, args, out: captured.setdefault("tokens", out))
    with torch.no_grad():
        out = model(**inputs(33), return_dict=False)[0]
    tokens, p = captured["tokens"], CONFIG["patch_size"]
    h, w = HEIGHT // p, WIDTH // p
    expected = torch.empty_like(out)
    for f in range(FRAMES):
        for y in range(h):
            for x in range(w):
                for c in range(CONFIG["out_channels"]):
                    for i in range(p):
                        for j in range(p):
                            expected[:, f, c, y * p + i, x * p + j] = tokens[:, f * h * w + y * w + x,
                                                                             c * p * p + i * p + j]
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_fps_conditioning_is_time_embedding_plus_fps_embedding():
    """The blocks and the output norm get time_embedding(sin(t)) + fps_embedding(sin(fps)), restated from the
    sinusoid up."""
    model = droplet(in_channels=33, use_fps_embedding=True)
    assert model.fps_embedding is not None
    seen = []
    model.norm_out.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs["temb"]), with_kwargs=True)
    x, fps = inputs(33), torch.tensor([16.0, 4.0])
    with torch.no_grad():
        model(**x, fps=fps, return_dict=False)
        inner = CONFIG["num_attention_heads"] * CONFIG["attention_head_dim"]

        def sinusoid(values):
            return get_timestep_embedding(values, inner, flip_sin_to_cos=True, downscale_freq_shift=0)

        expected = model.time_embedding(sinusoid(x["timestep"])) + model.fps_embedding(sinusoid(fps))
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=1e-6)
    assert not torch.allclose(model.fps_embedding(sinusoid(fps)), torch.zeros_like(expected))


def test_fps_transformer_refuses_a_call_without_fps():
    model = droplet(in_channels=33, use_fps_embedding=True)
    with pytest.raises(ValueError, match="pass fps"), torch.no_grad():
        model(**inputs(33))
