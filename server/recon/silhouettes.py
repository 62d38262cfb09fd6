"""The silhouette field: how far inside every silhouette a 3D point projects, in pixels.

``F(x) = min_k sdt_k(π_k(x))`` where ``sdt_k`` is the signed distance to the boundary of mask ``k``
(positive inside) and ``π_k`` projects with camera ``k``. The visual hull is ``F ≥ 0``; because ``F``
is continuous, marching cubes on it places the hull surface with sub-voxel accuracy, and its
magnitude bounds how far the surface can be (which drives the coarse-to-fine evaluation).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..orbit import Orbit, camera_position, look_at

CHUNK = 1 << 15  # points per evaluation chunk: bounds memory at CHUNK × views floats


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """``(H, W) float32`` signed distance in pixels to the mask boundary, positive inside."""
    m = mask.astype(np.uint8)
    inside = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, 5)
    return np.where(m > 0, inside - 0.5, 0.5 - outside).astype(np.float32)


def view_cameras(orbit: Orbit, views: np.ndarray | None = None) -> np.ndarray:
    """``(V, 4, 4)`` camera-to-world matrices of some of the orbit's frames (all when ``views`` is None)."""
    azimuths = orbit.azimuths_deg() if views is None else orbit.azimuths_deg()[views]
    return np.stack([look_at(camera_position(a, orbit.elevation_deg, orbit.radius)) for a in azimuths])


def projection_matrices(orbit: Orbit, width: int, height: int, views: np.ndarray | None = None) -> np.ndarray:
    """``(V, 3, 4)`` matrices mapping homogeneous world points to ``(u·d, v·d, d)`` in array-index pixels."""
    c2w = view_cameras(orbit, views)
    f = orbit.focal_px(width, height)
    # Camera looks down −Z with +Y up; pixel centres sit at index + 0.5, so array index = u − 0.5.
    cx, cy = width / 2.0 - 0.5, height / 2.0 - 0.5
    k = np.array([[f, 0.0, -cx], [0.0, -f, -cy], [0.0, 0.0, -1.0]])
    w2c = np.linalg.inv(c2w)[:, :3, :]
    return k @ w2c


class SilhouetteField:
    """``F(x)`` for a set of masks and their cameras (a subset of the orbit's frames when ``views`` is given)."""

    def __init__(self, masks: np.ndarray, orbit: Orbit, views: np.ndarray | None = None,
                 sdt: np.ndarray | None = None) -> None:
        """``sdt``: the views' signed distances when already computed (calibration tries many orbits)."""
        views = np.arange(masks.shape[0]) if views is None else np.asarray(views)
        self.height, self.width = masks.shape[1:3]
        self.sdt = np.stack([signed_distance(masks[k]) for k in views]) if sdt is None else sdt
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
        n = len(points)
        hom = np.concatenate([points, np.ones((n, 1), np.float32)], axis=1)
        proj = np.einsum("vij,mj->vim", self.proj, hom)  # (V, 3, M)
        depth = proj[:, 2]
        safe = np.where(depth > 1e-6, depth, np.float32(1e-6))
        u, v = proj[:, 0] / safe, proj[:, 1] / safe
        # Outside the image, extend the field linearly from the nearest border pixel.
        uc, vc = np.clip(u, 0, self.width - 1), np.clip(v, 0, self.height - 1)
        beyond = np.hypot(u - uc, v - vc)
        # cv2.remap samples bilinearly in C; a map row must stay under 32767 columns.
        cols = n if n < 32767 else 1024
        rows = -(-n // cols)
        grid_u = np.zeros((rows * cols,), np.float32)
        grid_v = np.zeros((rows * cols,), np.float32)
        out = np.full(n, np.inf, np.float32)
        for k in range(len(self.sdt)):
            if k == skip:
                continue
            grid_u[:n], grid_v[:n] = uc[k], vc[k]
            sampled = cv2.remap(self.sdt[k], grid_u.reshape(rows, cols), grid_v.reshape(rows, cols),
                                cv2.INTER_LINEAR).ravel()[:n]
            values = np.where(depth[k] > 1e-6, sampled - beyond[k], np.float32(-1e3))  # behind the camera: outside
            np.minimum(out, values, out=out)
        return out
