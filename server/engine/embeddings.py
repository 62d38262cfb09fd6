"""Positional embeddings where Droplet differs from diffusers' CogVideoX.

Both functions restate docs/design.md §7.2 (items 2 and 3); they are pure tensor code so that tests can check
them against an independent computation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The reference slices the video part of the sin-cos table at this literal row, not at the
# config's ``max_text_seq_length``; with the published config the two agree.
REFERENCE_TEXT_OFFSET = 226
# RoPE crops are computed against CogVideoX 1.0's 720x480 training grid (pixels).
ROPE_BASE_WIDTH = 720
ROPE_BASE_HEIGHT = 480


def resized_sincos_embedding(
    table: torch.Tensor,
    table_frames: int,
    table_height: int,
    table_width: int,
    text_len: int,
    grid: tuple[int, int, int],
) -> torch.Tensor:
    """The additive positional embedding the reference adds for one run.

    ``table`` is ``(1, 226 + T0*H0*W0, D)``: zero text rows then the sin-cos table for the config's sample grid
    ``(T0, H0, W0)``. The video rows are trilinearly resized to ``(T0, h, w)`` of this run (the frame axis keeps
    the table's length), appended to the first ``text_len`` rows of the *unresized* table, and cut to
    ``text_len + f*h*w`` rows. With ``text_len > 226`` text rows 226.. therefore carry raw spatial rows.
    Returns ``(1, text_len + f*h*w, D)``.
    """
    f, h, w = grid
    dim = table.shape[-1]
    video = table[:, REFERENCE_TEXT_OFFSET:].reshape(1, table_frames, table_height, table_width, dim)
    video = video.permute(0, 4, 1, 2, 3)
    video = F.interpolate(video, size=(table_frames, h, w), mode="trilinear", align_corners=False)
    video = video.permute(0, 2, 3, 4, 1).reshape(1, -1, dim)
    joint = torch.cat([table[:, :text_len], video], dim=1)
    return joint[:, : text_len + f * h * w]


def rope_crop_region(grid_height: int, grid_width: int, patch_size: int, vae_scale: int = 8):
    """``((top, left), (bottom, right))`` of this run's latent grid fitted into the 720x480 base grid."""
    base_w = ROPE_BASE_WIDTH // (vae_scale * patch_size)
    base_h = ROPE_BASE_HEIGHT // (vae_scale * patch_size)
    from diffusers.pipelines.cogvideo.pipeline_cogvideox_image2video import get_resize_crop_region_for_grid

    return get_resize_crop_region_for_grid((grid_height, grid_width), base_w, base_h)


def rotary_embedding(
    latent_frames: int, height: int, width: int, patch_size: int, head_dim: int, device=None, vae_scale: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """3D RoPE ``(cos, sin)`` for a ``latent_frames`` x ``height`` x ``width`` (pixels) run, as CogVideoX 1.0 I2V."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    grid_h = height // (vae_scale * patch_size)
    grid_w = width // (vae_scale * patch_size)
    crops = rope_crop_region(grid_h, grid_w, patch_size, vae_scale)
    return get_3d_rotary_pos_embed(
        embed_dim=head_dim, crops_coords=crops, grid_size=(grid_h, grid_w), temporal_size=latent_frames,
        use_real=True, device=device,
    )
