"""The reference's positional embeddings against independent numpy re-derivations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from droplet3d.engine.embeddings import resized_sincos_embedding, rope_crop_region, rotary_embedding


def _linear_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` matrix of 1-D linear interpolation with half-pixel centres (align_corners False)."""
    m = np.zeros((n_out, n_in))
    for j in range(n_out):
        src = max((j + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(math.floor(src), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        m[j, i0] += 1 - lam
        m[j, i1] += lam
    return m


def _numpy_reference(table: np.ndarray, t0: int, h0: int, w0: int, text_len: int, grid) -> np.ndarray:
    f, h, w = grid
    dim = table.shape[-1]
    video = table[226:].reshape(t0, h0, w0, dim)
    # separable trilinear resize; the frame axis keeps its length
    video = np.einsum("hH,wW,tHWd->thwd", _linear_weights(h0, h), _linear_weights(w0, w), video)
    joint = np.concatenate([table[:text_len], video.reshape(-1, dim)])
    return joint[: text_len + f * h * w]


@pytest.mark.parametrize(("text_len", "grid"), [(240, (3, 4, 4)), (226, (4, 6, 5)), (260, (2, 9, 3)), (20, (1, 2, 2))])
def test_sincos_table_resize_matches_numpy(text_len, grid):
    t0, h0, w0, dim = 4, 6, 5, 8
    rng = np.random.default_rng(0)
    table = np.concatenate([np.zeros((226, dim)), rng.normal(size=(t0 * h0 * w0, dim))])
    ours = resized_sincos_embedding(torch.from_numpy(table)[None], t0, h0, w0, text_len, grid)[0].numpy()
    expected = _numpy_reference(table, t0, h0, w0, text_len, grid)
    assert ours.shape == expected.shape == (text_len + math.prod(grid), dim)
    np.testing.assert_allclose(ours, expected, atol=1e-9)


def test_text_rows_beyond_226_receive_raw_spatial_rows():
    t0, h0, w0, dim = 2, 3, 3, 4
    table = torch.cat([torch.zeros(226, dim), torch.arange(t0 * h0 * w0 * dim, dtype=torch.float64).view(-1, dim)])
    out = resized_sincos_embedding(table[None], t0, h0, w0, 240, (2, 2, 2))[0]
    assert torch.equal(out[:226], torch.zeros(226, dim))
    assert torch.equal(out[226:240], table[226:240])  # rows of the unresized spatial table


def test_transformer_table_is_zero_text_rows_then_sincos(engine_3d):
    pe = engine_3d.pipe.transformer.patch_embed
    table = pe.pos_embedding[0]
    assert table.shape[0] == 226 + 9 * 6 * 5
    assert torch.count_nonzero(table[:226]) == 0
    # 3D sin-cos: the temporal first quarter of the channels is constant within a frame, the spatial rest is the
    # same in every frame
    dim = table.shape[1]
    video = table[226:].view(9, 30, dim)
    temporal, spatial = video[..., : dim // 4], video[..., dim // 4 :]
    assert torch.allclose(spatial[0], spatial[8]) and torch.allclose(temporal[:, 0], temporal[:, 29])


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((512, 512), ((0, 8), (30, 38))),   # square: full height, centred across the width
        ((480, 720), ((0, 0), (30, 45))),   # the base grid itself
        ((384, 672), ((2, 0), (28, 45))),   # DropletVideo's default 672x384: full width
        ((720, 480), ((0, 12), (30, 32))),  # portrait
    ],
)
def test_rope_crop_region_against_hand_computation(size, expected):
    height, width = size
    assert rope_crop_region(height // 16, width // 16, patch_size=2) == expected


def _numpy_rope(head_dim, crops, grid, frames, theta=10000.0):
    (top, left), (bottom, right) = crops
    gh, gw = grid

    def one(dim, pos):
        freqs = 1.0 / theta ** (np.arange(0, dim, 2)[: dim // 2] / dim)
        ang = np.outer(pos, freqs)
        return np.repeat(np.cos(ang), 2, axis=1), np.repeat(np.sin(ang), 2, axis=1)

    dt, dh, dw = head_dim // 4, head_dim // 8 * 3, head_dim // 8 * 3
    ct, st = one(dt, np.linspace(0, frames * (frames - 1) / frames, frames))
    ch, sh = one(dh, np.linspace(top, bottom * (gh - 1) / gh, gh))
    cw, sw = one(dw, np.linspace(left, right * (gw - 1) / gw, gw))

    def combine(t, h, w):
        out = np.concatenate([
            np.broadcast_to(t[:, None, None], (frames, gh, gw, t.shape[1])),
            np.broadcast_to(h[None, :, None], (frames, gh, gw, h.shape[1])),
            np.broadcast_to(w[None, None, :], (frames, gh, gw, w.shape[1])),
        ], axis=-1)
        return out.reshape(frames * gh * gw, -1)

    return combine(ct, ch, cw), combine(st, sh, sw)


def test_rotary_embedding_matches_numpy():
    cos, sin = rotary_embedding(latent_frames=3, height=512, width=512, patch_size=2, head_dim=64)
    exp_cos, exp_sin = _numpy_rope(64, ((0, 8), (30, 38)), (32, 32), 3)
    np.testing.assert_allclose(cos.numpy(), exp_cos, atol=1e-5)
    np.testing.assert_allclose(sin.numpy(), exp_sin, atol=1e-5)
