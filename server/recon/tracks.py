"""Feature tracks through an orbit: corners on the object followed from frame to frame (pyramidal Lucas-Kanade).

Consecutive orbit frames differ by a few degrees, so optical flow follows a corner where descriptor matching
would confuse the repeats of a pattern (a checker, a brick wall). A step is kept only when tracking back lands
where it started (forward-backward check) and the point stays well inside the mask: points on the outline are
not fixed on the surface. New corners are seeded wherever no track runs. Tracks carry on past the last frame into
the first ones (a full turn), which closes the loop; a track stops before it comes back to its own first frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MAX_SIDE = 512  # frames are tracked at most this large (pixels on the longer side)
CORNERS = 400  # per frame, seeded where no track runs
MIN_DISTANCE = 0.012  # between corners, as a fraction of the longer side
FORWARD_BACKWARD_PX = 0.5  # at the tracking size
MIN_LENGTH = 3  # frames per track: two views pin an orbit's step poorly
WRAP_FRAMES = 4  # frames past the end that tracks follow into the start of the turn
LK = dict(winSize=(15, 15), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))


@dataclass
class Tracks:
    """Observations of ``count`` tracked points: ``frame (M,)``, ``point (M,)`` and ``pixel (M, 2)`` (full-size
    image coordinates, pixel centres at +0.5), and ``flow (N,)``: the median sideways motion (pixels) of the
    tracks from each frame to the next (NaN where none was followed)."""

    frame: np.ndarray
    point: np.ndarray
    pixel: np.ndarray
    count: int
    flow: np.ndarray

    def lengths(self) -> np.ndarray:
        return np.bincount(self.point, minlength=self.count)


def track_features(rgb: np.ndarray, masks: np.ndarray, wrap: bool = True) -> Tracks:
    """Tracks through ``rgb (N, H, W, 3) uint8`` within ``masks (N, H, W) bool``; ``wrap``: follow them from the
    last frames into the first (a full turn)."""
    n, h, w = masks.shape
    scale = min(1.0, MAX_SIDE / max(h, w))
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    spacing = max(3, round(MIN_DISTANCE * max(size)))
    gray, inner = _prepare(rgb, masks, size, spacing)

    frames, points, pixels = [], [], []
    flow = np.full(n, np.nan)
    pts = np.zeros((0, 2), np.float32)
    ids = np.zeros(0, np.int64)
    first = np.zeros(0, np.int64)  # each track's first frame
    next_id = 0
    steps = n - 1 + (min(WRAP_FRAMES, n - 2) if wrap else 0)
    for step in range(steps + 1):
        a = step % n
        if step < n:  # seed new corners where no track runs (not in the wrap: those frames have theirs)
            free = inner[a].copy()
            for x, y in pts.round().astype(int):
                cv2.circle(free, (int(x), int(y)), spacing, 0, -1)
            found = cv2.goodFeaturesToTrack(gray[a], CORNERS, 0.01, spacing, mask=free)
            if found is not None:
                new = found.reshape(-1, 2).astype(np.float32)
                pts = np.concatenate([pts, new])
                ids = np.concatenate([ids, next_id + np.arange(len(new))])
                first = np.concatenate([first, np.full(len(new), a)])
                frames.append(np.full(len(new), a))
                points.append(next_id + np.arange(len(new)))
                pixels.append(new)
                next_id += len(new)
        if step == steps or len(pts) == 0:
            break
        b = (step + 1) % n
        moved, status, _ = cv2.calcOpticalFlowPyrLK(gray[a], gray[b], pts, None, **LK)
        back, status_back, _ = cv2.calcOpticalFlowPyrLK(gray[b], gray[a], moved, None, **LK)
        ok = (status.ravel() == 1) & (status_back.ravel() == 1)
        ok &= np.linalg.norm(back - pts, axis=1) < FORWARD_BACKWARD_PX
        xi = np.clip(moved[:, 0].round().astype(int), 0, size[0] - 1)
        yi = np.clip(moved[:, 1].round().astype(int), 0, size[1] - 1)
        ok &= (moved[:, 0] >= 0) & (moved[:, 0] < size[0]) & (moved[:, 1] >= 0) & (moved[:, 1] < size[1])
        ok &= inner[b][yi, xi] > 0
        ok &= first != b  # never back to its own first frame
        if ok.any():
            flow[a] = float(np.median(moved[ok, 0] - pts[ok, 0])) / scale
        pts, ids, first = moved[ok], ids[ok], first[ok]
        frames.append(np.full(len(pts), b))
        points.append(ids.copy())
        pixels.append(pts.copy())
    if not frames:
        return Tracks(np.zeros(0, int), np.zeros(0, int), np.zeros((0, 2)), 0, flow)
    frame, point = np.concatenate(frames), np.concatenate(points)
    pixel = (np.concatenate(pixels).astype(np.float64) + 0.5) / scale  # OpenCV puts pixel centres on integers
    keep = (np.bincount(point, minlength=next_id) >= MIN_LENGTH)[point]
    frame, point, pixel = frame[keep], point[keep], pixel[keep]
    _, point = np.unique(point, return_inverse=True)
    return Tracks(frame, point, pixel, int(point.max()) + 1 if len(point) else 0, flow)


def _prepare(rgb: np.ndarray, masks: np.ndarray, size: tuple[int, int], spacing: int):
    """Grey frames at the tracking size with their brightness flicker evened out, and eroded masks."""
    gray, inner = [], []
    kernel = np.ones((2 * spacing + 1, 2 * spacing + 1), np.uint8)
    reference = None
    for k in range(len(rgb)):
        g = cv2.resize(cv2.cvtColor(rgb[k], cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA)
        m = cv2.resize(masks[k].astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        level = float(np.median(g[m > 0])) if m.any() else float(np.median(g))
        reference = reference or max(level, 1.0)
        g = np.clip(g.astype(np.float32) * (reference / max(level, 1.0)), 0, 255).astype(np.uint8)
        gray.append(g)
        inner.append(cv2.erode(m, kernel))
    return gray, inner
