"""Foreground masks: exact alpha where a frame carries it, else a learned matte (``matting.py``) when one was
computed, completed by the colour model's regions that it touches, else a plain background estimated from the
border.

The background model is a per-frame linear colour ramp fitted robustly to the border pixels, so a
slightly varying tone is part of the background. A pixel is foreground when its colour departs from
that model by more than the border's own noise allows, measured as in Horprasert et al.: a chroma
distortion (colour direction) and a brightness ratio. Soft shadows only darken the background
without changing its colour direction, so a moderate darkening with little chroma change is background.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from ..errors import ReconstructionError
from ..threads import cpu_threads
from .frames import Frames
from .matting import DEFAULT_MODEL, MattingUnavailable, load_matting

MATTING = ("auto", "learned", "colour")  # auto: learned when the model can run, else colour with a warning

log = logging.getLogger(__name__)
SHADOW_MIN_BRIGHTNESS = 0.72  # darker than this (relative to the background) is foreground even without chroma
MIN_CHROMA = 0.035  # floors on the thresholds, as fractions of full scale, for noise-free renders
MIN_BRIGHTNESS = 0.06
WEAK = 0.5  # fraction of the detection thresholds that counts as weak evidence of the object
BRIDGE = 0.08  # gaps bridged by weak evidence, as a fraction of the object's extent in the frame


def frame_masks(frames: Frames, matting: str = "auto", model: str = DEFAULT_MODEL,
                ) -> tuple[np.ndarray, dict, list[dict]]:
    """Masks of every frame, how they were made (``{"method", "model", "exact_alpha_frames"}``) and warnings
    (``{code, field, message}``).

    Frames with an exact alpha keep it; the others get the learned matte (``matting`` auto or learned) or the
    background colour model (colour, or auto when the model cannot run: a warning says so).
    """
    need = ~frames.has_alpha
    mattes, method, warnings = None, "colour" if need.any() else "alpha", []
    if need.any() and matting != "colour":
        try:
            matte = load_matting(model)
        except MattingUnavailable as exc:
            if matting == "learned":
                raise
            warnings.append({"code": "matting_unavailable", "field": "matting",
                             "message": f"learned matting unavailable, masks from the background colour (parts that "
                                        f"match the background may be lost): {exc}"})
            log.warning("%s", warnings[-1]["message"])
        else:
            mattes = np.zeros(frames.rgb.shape[:3], np.uint8)
            mattes[need] = matte(frames.rgb[need])
            method = "learned"
    masks = compute_masks(frames.rgb, frames.alpha, frames.names, frames.has_alpha, mattes)
    info = {"method": method, "model": model if method == "learned" else None,
            "exact_alpha_frames": int(frames.has_alpha.sum())}
    return masks, info, warnings


def compute_masks(rgb: np.ndarray, alpha: np.ndarray | None = None, names: list[str] | None = None,
                  has_alpha: np.ndarray | None = None, mattes: np.ndarray | None = None) -> np.ndarray:
    """``(N, H, W) bool`` foreground masks of ``rgb (N, H, W, 3) uint8``; ReconstructionError on unusable frames.

    ``alpha (N, H, W) uint8`` is exact on the frames where ``has_alpha (N,) bool`` holds (all by default);
    ``mattes (N, H, W) uint8`` (a learned model's alpha, completed by the colour regions it touches) serves the
    others, else the background colour model.
    """
    names = names or [f"{k:04d}" for k in range(rgb.shape[0])]
    if has_alpha is None:
        has_alpha = np.full(rgb.shape[0], alpha is not None)

    def one(k: int) -> np.ndarray:
        if has_alpha[k]:
            return clean_mask(alpha[k] >= 128, smooth=False)
        if mattes is not None:
            return clean_mask(with_attached_colour(mattes[k] >= 128, background_difference(rgb[k])))
        return clean_mask(background_difference(rgb[k]))

    # OpenCV and numpy release the GIL on whole images, so threads use every core.
    with ThreadPoolExecutor(max_workers=cpu_threads()) as pool:
        masks = np.stack(list(pool.map(one, range(rgb.shape[0]))))
    for k in range(rgb.shape[0]):
        _check_mask(masks[k], names[k])
    return masks


def with_attached_colour(matte: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """The learned matte plus the colour model's foreground regions that it touches and that stay inside the frame.

    The model chooses which object is foreground, but it drops parts of it too (the small U²-Net loses up to a
    sixth of a black-and-white panda on black); where the object stands out from a plain background in colour,
    the colour model is right about its extent. A region the matte does not touch (another object) stays out, and
    so does one that reaches the frame's edge: on a background that is not plain, the colour model's foreground
    runs into it.
    """
    count, labels = cv2.connectedComponents(colour.astype(np.uint8), connectivity=8)
    if count <= 1:
        return matte
    joins = np.zeros(count, bool)
    joins[labels[matte & colour]] = True
    joins[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = False  # 0, the background, too
    return matte | joins[labels]


def background_difference(image: np.ndarray) -> np.ndarray:
    """``(H, W) bool`` pixels that differ from the border's background model, before clean-up."""
    h, w = image.shape[:2]
    smooth = cv2.GaussianBlur(image, (3, 3), 0.6).astype(np.float32) / 255.0
    band = max(2, round(0.02 * min(h, w)))
    border = np.zeros((h, w), dtype=bool)
    border[:band], border[-band:], border[:, :band], border[:, -band:] = True, True, True, True
    ys, xs = np.nonzero(border)
    background = _fit_background(smooth, xs, ys)
    bg_norm2 = np.maximum(np.einsum("ijc,ijc->ij", background, background), 1e-6)
    brightness = np.einsum("ijc,ijc->ij", smooth, background) / bg_norm2
    residual = smooth - brightness[..., None] * background
    chroma = np.sqrt(np.einsum("ijc,ijc->ij", residual, residual))
    # Noise level from the border itself (robust to an object touching part of it).
    b_border, c_border = brightness[border], chroma[border]
    c_sigma = 1.4826 * np.median(np.abs(c_border - np.median(c_border)))
    b_sigma = 1.4826 * np.median(np.abs(b_border - 1.0))
    chroma_thr = max(MIN_CHROMA, np.median(c_border) + 6.0 * c_sigma)
    bright_thr = max(MIN_BRIGHTNESS, 6.0 * b_sigma)
    raw = (chroma > chroma_thr) | (brightness > 1.0 + bright_thr) | (brightness < min(SHADOW_MIN_BRIGHTNESS,
                                                                                       1.0 - bright_thr))
    # Weak evidence: beyond a fraction of the noise thresholds, darkening included (a shade of a pale object).
    weak = (chroma > chroma_thr * WEAK) | (np.abs(brightness - 1.0) > bright_thr * WEAK)
    raw = _repair_ambiguous(raw, weak)
    return _refine_edges(image.astype(np.float32) / 255.0, background, raw)


def _repair_ambiguous(strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """Bites and holes where the object's colour nears the background's (white patches on white, black fur on
    black): pixels with weak evidence that lie in the gaps a closing of the sure foreground bridges (about
    ``BRIDGE`` of the object's size) join the object.

    Plain background shows no evidence there, so real through-holes and gaps stay open.
    """
    m = strong.astype(np.uint8)
    x, y, w, h = cv2.boundingRect(m)
    if w == 0:
        return strong
    radius = max(1, round(BRIDGE * max(w, h)))
    # Only the object's box (with room for the closing) matters; nothing to do without weak evidence there.
    pad = 2 * radius + 2
    box = (slice(max(0, y - pad), y + h + pad), slice(max(0, x - pad), x + w + pad))
    if not (weak[box] & ~strong[box]).any():
        return strong
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    bridged = cv2.morphologyEx(m[box], cv2.MORPH_CLOSE, kernel)
    # Not along the outline itself: a soft shadow touching the object must not grow it.
    bridged = cv2.erode(bridged, np.ones((3, 3), np.uint8)) > 0
    out = strong.copy()
    out[box] |= bridged & weak[box]
    return out


def _refine_edges(image: np.ndarray, background: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Decide edge pixels by coverage: anti-aliased pixels count as object when more than half covered.

    A detection threshold tuned for noise flags pixels that are only slightly covered, which would
    grow every silhouette by about a pixel; unmixing each edge pixel between the background model and
    the colour of the object just inside gives its coverage instead.
    """
    m = mask.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    interior = cv2.erode(m, kernel).astype(np.float32)
    band = (cv2.dilate(m, kernel) > 0) & (interior == 0)
    weight = cv2.blur(interior, (5, 5))
    inside_colour = cv2.blur(image * interior[..., None], (5, 5)) / np.maximum(weight, 1e-6)[..., None]
    ok = band & (weight > 0)
    fg, bg, px = inside_colour[ok], background[ok], image[ok]
    contrast = ((fg - bg) ** 2).sum(-1)
    coverage = ((px - bg) * (fg - bg)).sum(-1) / np.maximum(contrast, 1e-6)
    refined = mask.copy()
    refined[ok] = np.where(contrast > 1e-3, coverage >= 0.5, mask[ok])
    return refined


def _fit_background(image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """A linear colour ramp ``c(x, y)`` fitted to the border pixels, robust to an object touching the border.

    Starts from the border's median colour (right while the object covers less than half of the border),
    then refits the ramp to the pixels that agree with the current model.
    """
    h, w = image.shape[:2]
    design = np.stack([np.ones(xs.size), xs / w - 0.5, ys / h - 0.5], axis=1)
    values = image[ys, xs]
    residual = np.linalg.norm(values - np.median(values, axis=0), axis=1)
    coef = np.zeros((3, 3))
    coef[0] = np.median(values, axis=0)
    for _ in range(3):
        keep = residual < max(3.0 * 1.4826 * np.median(residual), 0.03)
        if keep.sum() < 16:
            break
        coef, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
        residual = np.linalg.norm(design @ coef - values, axis=1)
    coef = coef.astype(np.float32)
    gx = (np.arange(w, dtype=np.float32) / w - 0.5)[None, :, None]
    gy = (np.arange(h, dtype=np.float32) / h - 0.5)[:, None, None]
    return coef[0] + gx * coef[1] + gy * coef[2]


def clean_mask(mask: np.ndarray, smooth: bool = True) -> np.ndarray:
    """Clean-up: drop specks (opening/closing when ``smooth``), fill pinholes (not through-holes), keep the
    object's components. Alpha masks are exact and skip the smoothing."""
    h, w = mask.shape
    m = mask.astype(np.uint8)
    if smooth:
        radius = max(1, round(min(h, w) / 256))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        m = cv2.morphologyEx(cv2.morphologyEx(m, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel)
    # Fill background islands that are tiny (noise inside the object); a torus hole is far larger.
    n, labels, stats, _ = cv2.connectedComponentsWithStats(1 - m, connectivity=4)
    small_hole = max(8, int(2e-4 * h * w))
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        touches = x == 0 or y == 0 or x + bw == w or y + bh == h
        if area <= small_hole and not touches:
            m[labels == i] = 1
    # Keep the largest component and any other substantial one (an object may be in pieces, e.g. a handle).
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 1:
        return np.zeros_like(mask, dtype=bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.nonzero(areas >= max(0.05 * areas.max(), 4))[0] + 1
    return np.isin(labels, keep)


def _check_mask(mask: np.ndarray, name: str) -> None:
    if not mask.any():
        raise ReconstructionError(f"frame {name} has no foreground: no object stands out from the background",
                                  code="no_foreground")
    if mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any():
        raise ReconstructionError(f"frame {name}: the foreground touches every border; reconstruction needs the whole "
                                  "object in view on a plain background", code="foreground_clipped")
