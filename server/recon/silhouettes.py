"""The silhouette field: how far inside every silhouette a 3D point projects, in pixels.

``F(x) = min_k sdt_k(π_k(x))`` where ``sdt_k`` is the signed distance to the boundary of mask ``k``
(positive inside) and ``π_k`` projects with camera ``k``. The visual hull is ``F ≥ 0``; because ``F``
is continuous, marching cubes on it places the hull surface with sub-voxel accuracy, and its
magnitude bounds how far the surface can be (which drives the coarse-to-fine evaluation).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..orbit import Orbit

CHUNK = 1 << 15  # points per evaluation chunk: bounds memory at CHUNK × views floats


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """``(H, W) float32`` signed distance in pixels to the mask boundary, positive inside."""
    m = mask.astype(np.uint8)
    inside = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, 5)
    return np.where(m > 0, inside - 0.5, 0.5 - outside).astype(np.float32)


def projection_matrices(orbit: Orbit, width: int, height: int, views: np.ndarray | None = None) -> np.ndarray:
    """``(V, 3, 4)`` matrices mapping homogeneous world points to ``(u·d, v·d, d)`` in array-index pixels."""
    c2w = orbit.camera_to_world()
    if views is not None:
        c2w = c2w[views]
    f = orbit.focal_px(width, height)
    # Camera looks down −Z with +Y up; pixel centres sit at index + 0.5, so array index = u − 0.5.
    cx, cy = width / 2.0 - 0.5, height / 2.0 - 0.5
    k = np.array([[f, 0.0, -cx], [0.0, -f, -cy], [0.0, 0.0, -1.0]])
    w2c = np.linalg.inv(c2w)[:, :3, :]
    return k @ w2c


class SilhouetteField:
    """``F(x)`` for a set of masks and their cameras (a subset of the orbit's frames when ``views`` is given)."""

    def __init__(self, masks: np.ndarray, orbit: Orbit, views: np.ndarray | None = None) -> None:
        views = np.arange(masks.shape[0]) if views is None else np.asarray(views)
        self.height, self.width = masks.shape[1:3]
        self.sdt = np.stack([signed_distance(masks[k]) for k in views])
        self.proj = projection_matrices(orbit, self.width, self.height, views).astype(np.float32)
        self.views = views

    def pixels_per_unit(self, orbit: Orbit) -> float:
        """Pixels spanned by one world unit at the orbit centre's depth."""
        return orbit.focal_px(self.width, self.height) / orbit.radius

    def __call__(self, points: np.ndarray, skip: int | None = None) -> np.ndarray:
        """``(M,) float32`` field at ``points (M, 3)``; ``skip`` leaves one view (by position) out."""
        out = np.empty(len(points), dtype=np.float32)
        for start in range(0, len(points), CHUNK):
            out[start:start + CHUNK] = self._evaluate(np.asarray(points[start:start + CHUNK], np.float32), skip)
        return out

    def _evaluate(self, points: np.ndarray, skip: int | None) -> np.ndarray:
        hom = np.concatenate([points, np.ones((len(points), 1), np.float32)], axis=1)
        proj = np.einsum("vij,mj->vim", self.proj, hom)  # (V, 3, M)
        depth = np.maximum(proj[:, 2], 1e-6)
        u, v = proj[:, 0] / depth, proj[:, 1] / depth
        # Outside the image, extend the field linearly from the nearest border pixel.
        uc, vc = np.clip(u, 0, self.width - 1), np.clip(v, 0, self.height - 1)
        beyond = np.hypot(u - uc, v - vc)
        values = _bilinear(self.sdt, uc, vc) - beyond
        values[proj[:, 2] <= 1e-6] = -1e3  # behind the camera
        if skip is not None:
            values[skip] = np.inf
        return values.min(axis=0)


def _bilinear(images: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample ``images (V, H, W)`` at ``u, v (V, M)`` (array-index coordinates, inside the image)."""
    w = images.shape[2]
    x0 = np.minimum(u.astype(np.int32), w - 2)
    y0 = np.minimum(v.astype(np.int32), images.shape[1] - 2)
    fx, fy = u - x0, v - y0
    flat = images.reshape(images.shape[0], -1)
    idx = y0 * w + x0
    a = np.take_along_axis(flat, idx, axis=1)
    b = np.take_along_axis(flat, idx + 1, axis=1)
    c = np.take_along_axis(flat, idx + w, axis=1)
    d = np.take_along_axis(flat, idx + w + 1, axis=1)
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy
