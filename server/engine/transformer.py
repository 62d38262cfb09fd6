"""The Droplet transformer: diffusers' CogVideoX transformer with the Droplet differences.

Differences (docs/design.md §7.2): a 33-channel inpaint input (conditioning concatenated on channels before the
patch embedding), the reference's resized additive sin-cos table when rotary is off, and DropletVideo's FPS
embedding added to the timestep embedding. Parameter names are CogVideoX's, so checkpoints load unchanged.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
from diffusers.models.embeddings import CogVideoXPatchEmbed, TimestepEmbedding, Timesteps
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXTransformer3DModel
from torch import nn

from .embeddings import REFERENCE_TEXT_OFFSET, resized_sincos_embedding

logger = logging.getLogger(__name__)

COGVIDEOX_ARGS = frozenset(inspect.signature(CogVideoXTransformer3DModel.__init__).parameters) - {"self"}


class DropletPatchEmbed(CogVideoXPatchEmbed):
    """CogVideoX 1.0 patch embedding whose sin-cos table is resized the reference's way."""

    def forward(self, text_embeds: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        text_embeds = self.text_proj(text_embeds)
        batch, frames, channels, height, width = image_embeds.shape
        image_embeds = self.proj(image_embeds.reshape(-1, channels, height, width))
        image_embeds = image_embeds.view(batch, frames, *image_embeds.shape[1:])
        image_embeds = image_embeds.flatten(3).transpose(2, 3).flatten(1, 2)  # (B, F*h*w, D), frame-major
        embeds = torch.cat([text_embeds, image_embeds], dim=1).contiguous()
        if not self.use_positional_embeddings:
            return embeds
        p = self.patch_size
        table_frames = (self.sample_frames - 1) // self.temporal_compression_ratio + 1
        pos = resized_sincos_embedding(
            self.pos_embedding, table_frames, self.sample_height // p, self.sample_width // p,
            text_embeds.shape[1], (frames, height // p, width // p),
        )
        return embeds + pos.to(embeds.dtype)


class DropletTransformer3DModel(CogVideoXTransformer3DModel):
    """``CogVideoXTransformer3DModel`` + inpaint channels, reference positional table and optional FPS embedding.

    Extra config keys (stored with the CogVideoX ones): ``use_fps_embedding`` (DropletVideo),
    ``add_noise_in_inpaint_model`` (read by the pipeline) and ``text_seq_length`` (the T5 length the pipeline uses;
    absent in published checkpoints, where the per-model default applies).
    """

    _repeated_blocks = ("CogVideoXBlock",)  # for diffusers' regional compilation (compile_repeated_blocks)

    def __init__(
        self,
        use_fps_embedding: bool = False,
        add_noise_in_inpaint_model: bool = False,
        text_seq_length: int | None = None,
        **cogvideox_config: Any,
    ) -> None:
        config = {k: v for k, v in cogvideox_config.items() if k in COGVIDEOX_ARGS}
        super().__init__(**config)
        self.register_to_config(
            use_fps_embedding=use_fps_embedding,
            add_noise_in_inpaint_model=add_noise_in_inpaint_model,
            text_seq_length=text_seq_length,
        )
        cfg = self.config
        inner_dim = cfg.num_attention_heads * cfg.attention_head_dim
        if not cfg.use_rotary_positional_embeddings:
            if cfg.max_text_seq_length != REFERENCE_TEXT_OFFSET:
                raise ValueError(
                    f"max_text_seq_length must be {REFERENCE_TEXT_OFFSET} without rotary embeddings "
                    f"(the reference slices its positional table there), got {cfg.max_text_seq_length}"
                )
            self.patch_embed = DropletPatchEmbed(
                patch_size=cfg.patch_size, in_channels=cfg.in_channels, embed_dim=inner_dim,
                text_embed_dim=cfg.text_embed_dim, bias=cfg.patch_bias, sample_width=cfg.sample_width,
                sample_height=cfg.sample_height, sample_frames=cfg.sample_frames,
                temporal_compression_ratio=cfg.temporal_compression_ratio, max_text_seq_length=cfg.max_text_seq_length,
                spatial_interpolation_scale=cfg.spatial_interpolation_scale,
                temporal_interpolation_scale=cfg.temporal_interpolation_scale,
                use_positional_embeddings=True, use_learned_positional_embeddings=False,
            )
        self.fps_proj = self.fps_embedding = None
        if use_fps_embedding:
            self.fps_proj = Timesteps(inner_dim, cfg.flip_sin_to_cos, cfg.freq_shift)
            self.fps_embedding = TimestepEmbedding(inner_dim, cfg.time_embed_dim, cfg.timestep_activation_fn)

    @property
    def table_latent_frames(self) -> int | None:
        """Latent frames of the sin-cos table (a run may not exceed it), or None with rotary embeddings."""
        cfg = self.config
        if cfg.use_rotary_positional_embeddings:
            return None
        return (cfg.sample_frames - 1) // cfg.temporal_compression_ratio + 1

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        fps: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """``hidden_states`` is ``(B, F, 33, h, w)``: noisy latents ⊕ mask latent ⊕ masked-video latents."""
        batch, frames, _, height, width = hidden_states.shape
        emb = self.time_embedding(self.time_proj(timestep).to(hidden_states.dtype))
        if self.fps_embedding is not None:
            if fps is None:
                raise ValueError("this transformer has an FPS embedding: pass fps")
            emb = emb + self.fps_embedding(self.fps_proj(fps).to(hidden_states.dtype))

        hidden_states = self.patch_embed(encoder_hidden_states, hidden_states)
        text_len = encoder_hidden_states.shape[1]
        encoder_hidden_states, hidden_states = hidden_states[:, :text_len], hidden_states[:, text_len:]
        for block in self.transformer_blocks:
            hidden_states, encoder_hidden_states = block(
                hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states, temb=emb,
                image_rotary_emb=image_rotary_emb, attention_kwargs=attention_kwargs,
            )
        hidden_states = self.proj_out(self.norm_out(self.norm_final(hidden_states), temb=emb))

        p = self.config.patch_size
        output = hidden_states.reshape(batch, frames, height // p, width // p, -1, p, p)
        output = output.permute(0, 1, 4, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4)
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)


def load_state_tolerant(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, str]:
    """Load ``state`` into ``model`` the reference's way; returns ``{name: why}`` for model tensors left unloaded.

    Tensors whose shape differs are skipped, except ``patch_embed.proj.weight`` with fewer input channels (a
    16-channel text-to-video transformer), which is widened with zeros so the extra inpaint channels start inert.
    """
    own = model.state_dict()
    fixed: dict[str, torch.Tensor] = {}
    why: dict[str, str] = {}
    for name, tensor in state.items():
        target = own.get(name)
        if target is None:
            logger.warning("%s: ignoring %s, which this model does not have", source, name)
        elif target.shape == tensor.shape:
            fixed[name] = tensor
        elif name == "patch_embed.proj.weight" and tensor.shape[1] < target.shape[1] and (
            tensor.shape[0], *tensor.shape[2:]) == (target.shape[0], *target.shape[2:]):
            wide = torch.zeros(target.shape, dtype=tensor.dtype, device=tensor.device)
            wide[:, : tensor.shape[1]] = tensor
            fixed[name] = wide
            logger.warning("%s: %s widened with zeros from %d to %d input channels (a non-inpaint transformer)",
                           source, name, tensor.shape[1], target.shape[1])
        else:
            why[name] = f"shape {tuple(tensor.shape)}, expected {tuple(target.shape)}"
            logger.warning("%s: skipping %s: %s", source, name, why[name])
    for name, target in own.items():
        if name not in fixed and name not in why:
            why[name] = f"missing, expected shape {tuple(target.shape)}"
    model.load_state_dict(fixed, strict=False, assign=True)
    return why
