import cv2
import numpy as np
from conftest import SUZANNE_ORBIT, rendered
from droplet3d.recon import masks as masks_module
from droplet3d.recon.frames import load_frames
from droplet3d.recon.masks import compute_masks
from PIL import Image


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A ring (a through-hole, like a torus) on a tone-varying background with a soft shadow and JPEG noise."""
    h = w = 160
    yy, xx = np.mgrid[0:h, 0:w]
    background = np.stack([200 + 25 * xx / w, 205 + 15 * yy / h, 215 - 10 * xx / w], axis=-1)
    r = np.hypot(xx - 80, yy - 75)
    truth = (r < 45) & (r > 20)
    shadow = np.exp(-(((xx - 85) / 45.0) ** 2 + ((yy - 128) / 10.0) ** 2))  # soft, below the object
    image = background * (1 - 0.25 * shadow)[..., None]
    image[truth] = (60, 120, 40) + 20 * np.sin(xx[truth] / 5.0)[:, None]
    image = np.clip(image + np.random.default_rng(seed).normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    _, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED), truth


def test_plain_background_mask_ignores_tone_ramp_shadow_and_jpeg_noise_and_keeps_the_hole():
    image, truth = _scene()
    mask = compute_masks(image[None])[0]
    # Disagreement only along the outline (JPEG blocks ring there): nothing of the shadow or the ramp leaks in.
    edge = cv2.dilate(truth.astype(np.uint8), np.ones((7, 7), np.uint8)) > cv2.erode(
        truth.astype(np.uint8), np.ones((7, 7), np.uint8))
    assert not ((mask != truth) & ~edge).any()
    assert _iou(mask, truth) > 0.9
    assert not mask[75, 80]  # the ring's hole stays open


def test_alpha_channel_is_used_when_frames_carry_it():
    rgb = np.full((1, 64, 64, 3), 128, np.uint8)  # colour says nothing: only alpha can tell
    alpha = np.zeros((1, 64, 64), np.uint8)
    alpha[0, 20:40, 10:50] = 255
    mask = compute_masks(rgb, alpha)[0]
    assert mask.sum() == 20 * 40 and mask[30, 30]


def test_mask_from_a_rendered_background_matches_the_renders_alpha():
    opaque = load_frames(rendered("suzanne", SUZANNE_ORBIT) / "frames")
    with_alpha = load_frames(rendered("suzanne", SUZANNE_ORBIT, transparent=True) / "frames")
    assert opaque.alpha is None and with_alpha.alpha is not None
    ours = compute_masks(opaque.rgb)
    reference = compute_masks(with_alpha.rgb, with_alpha.alpha)
    assert _iou(ours, reference) > 0.97


def test_a_patch_of_near_background_colour_is_bridged_but_a_plain_hole_stays_open(monkeypatch):
    # A dark disc with a pale patch (slightly brighter than the grey background: weak evidence) and a hole of
    # pure background of the same size: colour alone cuts both out; the repair puts only the patch back.
    h = w = 160
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.full((h, w, 3), 200, np.uint8)
    disc = np.hypot(xx - 80, yy - 80) < 40
    image[disc] = (40, 60, 120)
    patch = (xx > 95) & (xx < 110) & (np.abs(yy - 80) < 5)
    image[patch] = 207  # 3.5 % brighter than the background: below the detection threshold, above half of it
    hole = (xx > 50) & (xx < 65) & (np.abs(yy - 80) < 5)
    image[hole] = 200
    mask = compute_masks(image[None])[0]
    inner = (slice(77, 84), slice(None))  # the rows away from the rectangles' corners, which clean-up rounds
    assert mask[patch].all()
    assert not mask[inner][hole[inner]].any()
    monkeypatch.setattr(masks_module, "WEAK", 100.0)  # no weak evidence: the colour test alone cuts the patch out
    assert not compute_masks(image[None])[0][inner][patch[inner]].any()


def test_frame_zero_alpha_alone_is_used_for_frame_zero(tmp_path):
    rgb = np.full((64, 64, 3), 128, np.uint8)
    rgb[20:40, 20:44] = (30, 90, 200)
    cut = np.zeros((64, 64), np.uint8)
    cut[10:50, 10:54] = 255  # the exact cut-out is larger than the blue patch: only alpha can say so
    Image.fromarray(np.dstack([rgb, cut])).save(tmp_path / "0000.png")
    for k in range(1, 8):
        Image.fromarray(rgb).save(tmp_path / f"{k:04d}.png")
    frames = load_frames(tmp_path)
    assert frames.has_alpha.tolist() == [True] + [False] * 7
    masks = compute_masks(frames.rgb, frames.alpha, frames.names, frames.has_alpha)
    assert masks[0].sum() == 40 * 44
    assert abs(int(masks[1].sum()) - 20 * 24) <= 4 and masks[1, 20:40, 20:44][1:-1, 1:-1].all()  # colour: corners
