"""The silhouette field: how far inside every silhouette a 3D point projects, in pixels.

``F(x) = min_k sdt_k(π_k(x))`` where ``sdt_k`` is the signed distance to the boundary of mask ``k``
(positive inside) and ``π_k`` projects with camera ``k``. The visual hull is ``F ≥ 0``; because ``F``
is continuous, marching cubes on it places the hull surface with sub-voxel accuracy, and its
magnitude bounds how far the surface can be (which drives the coarse-to-fine evaluation).

A forgiving field (``forgive = m``) takes the (m+1)-th smallest value instead of the minimum, plus a
tolerance in pixels: a point then dies only when more than ``m`` views see it clearly outside, so one
view's mask mistake (a part that matched the background there) cannot cut away what the others show.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..orbit import Cameras

BLOCK = 1 << 19  # samples (points × views) per evaluation chunk: bounds memory and keeps it cache-sized
SHRT_MAX = 32767  # cv2.remap's limit on image and map sides


def downsized(masks: np.ndarray, size: int) -> np.ndarray:
    """``(N, h, w) bool`` masks scaled so that their longer side is ``size`` pixels (at least 8 each way); a pixel
    is foreground when more than half of its area was."""
    h, w = masks.shape[1:3]
    scale = size / max(h, w)
    width, height = max(8, round(w * scale)), max(8, round(h * scale))
    return np.stack([cv2.resize(m.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA) >= 0.5
                     for m in masks])


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """``(H, W) float32`` signed distance in pixels to the mask boundary, positive inside."""
    m = mask.astype(np.uint8)
    inside = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, 5)
    return np.where(m > 0, inside - 0.5, 0.5 - outside).astype(np.float32)


class SilhouetteField:
    """``F(x)`` for a set of masks and their cameras (a subset of the frames when ``views`` is given)."""

    def __init__(self, masks: np.ndarray, cameras: Cameras, views: np.ndarray | None = None,
                 sdt: np.ndarray | None = None, forgive: int = 0, tolerance_px: float = 0.0) -> None:
        """``masks (N, H, W)`` and ``cameras`` (N of them); ``sdt``: the views' signed distances when already
        known (calibration tries many orbits); ``forgive`` views may disagree, each by ``tolerance_px``."""
        self.forgive, self.tolerance_px = forgive, np.float32(tolerance_px)
        views = np.arange(masks.shape[0]) if views is None else np.asarray(views)
        self.height, self.width = masks.shape[1:3]
        # All views tiled into one image (column-major; cv2.remap takes at most 32766 rows and columns), so
        # that a single remap samples every view at once.
        per_column = min(len(views), (SHRT_MAX - 1) // self.height)
        columns = -(-len(views) // per_column)
        self.atlas = np.zeros((per_column * self.height, columns * self.width), np.float32)
        tiles = np.arange(len(views))
        self.tile_u = ((tiles // per_column) * self.width).astype(np.float32)[:, None]
        self.tile_v = ((tiles % per_column) * self.height).astype(np.float32)[:, None]
        for i, k in enumerate(views):
            u, v = int(self.tile_u[i, 0]), int(self.tile_v[i, 0])
            self.atlas[v:v + self.height, u:u + self.width] = signed_distance(masks[k]) if sdt is None else sdt[i]
        used = cameras.subset(views)
        self.proj = used.projections(self.width, self.height, index=True).astype(np.float32)
        self.views = views
        self.cameras = used

    def pixels_per_unit(self) -> float:
        """Pixels spanned by one world unit at the orbit centre's depth."""
        return self.cameras.focal_px(self.width, self.height) / self.cameras.radius

    def __call__(self, points: np.ndarray, skip: int | np.ndarray | None = None) -> np.ndarray:
        """``(M,) float32`` field at ``points (M, 3)``; ``skip`` leaves one view (by position) out, for all
        points or (an ``(M,)`` array) for each point."""
        out = np.empty(len(points), dtype=np.float32)
        chunk = max(1, BLOCK // len(self.views))
        for start in range(0, len(points), chunk):
            part = skip[start:start + chunk] if isinstance(skip, np.ndarray) else skip
            out[start:start + chunk] = self._evaluate(np.asarray(points[start:start + chunk], np.float32), part)
        return out

    def per_view(self, points: np.ndarray) -> np.ndarray:
        """``(V, M) float32``: every view's signed distance at the points' projections, before the vote."""
        chunk = max(1, BLOCK // len(self.views))
        return np.concatenate([self._per_view(np.asarray(points[s:s + chunk], np.float32), None)
                               for s in range(0, len(points), chunk)], axis=1)

    def _evaluate(self, points: np.ndarray, skip: int | np.ndarray | None) -> np.ndarray:
        return self._reduce(points, self._per_view(points, skip))

    def _per_view(self, points: np.ndarray, skip: int | np.ndarray | None) -> np.ndarray:
        """``(V, M) float32``: each view's signed distance at the points' projections (skipped views: +inf)."""
        n, count = len(points), len(self.views)
        proj = self.proj[:, :, :3] @ points.T + self.proj[:, :, 3:]  # (V, 3, M)
        depth = proj[:, 2]
        safe = np.where(depth > 1e-6, depth, np.float32(1e-6))
        u, v = proj[:, 0] / safe, proj[:, 1] / safe
        # Outside the image, extend the field linearly from the nearest border pixel.
        uc, vc = np.clip(u, 0, self.width - 1), np.clip(v, 0, self.height - 1)
        beyond = np.hypot(u - uc, v - vc)
        uc += self.tile_u  # view k's tile in the atlas
        vc += self.tile_v
        # cv2.remap samples bilinearly in C; a map row must stay under SHRT_MAX columns.
        total = count * n
        cols = total if total < SHRT_MAX else 1024
        rows = -(-total // cols)
        grid_u = np.zeros((rows * cols,), np.float32)
        grid_v = np.zeros((rows * cols,), np.float32)
        grid_u[:total], grid_v[:total] = uc.ravel(), vc.ravel()
        sampled = cv2.remap(self.atlas, grid_u.reshape(rows, cols), grid_v.reshape(rows, cols),
                            cv2.INTER_LINEAR).ravel()[:total].reshape(count, n)
        values = np.where(depth > 1e-6, sampled - beyond, np.float32(-1e3))  # behind the camera: outside
        if isinstance(skip, np.ndarray):
            values[skip, np.arange(n)] = np.inf
        elif skip is not None:
            values[skip] = np.inf
        return values

    def _reduce(self, points: np.ndarray, values: np.ndarray) -> np.ndarray:
        """The field from the views' values ``(V, M)``: the (forgive+1)-th smallest, plus the tolerance."""
        if self.forgive == 0:
            return values.min(axis=0) + self.tolerance_px
        k = min(self.forgive, len(values) - 1)
        return np.partition(values, k, axis=0)[k] + self.tolerance_px
