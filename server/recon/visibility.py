"""Which surface a camera sees: per-view depth maps splatted from surface samples."""

from __future__ import annotations

import cv2
import numpy as np

from ..orbit import project


def depth_map(points: np.ndarray, projection: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(height, width) float32`` depth of the nearest of ``points (M, 3)`` per pixel (inf where none lands).

    ``projection (3, 4)`` in index coordinates (:func:`droplet3d.orbit.projection_matrices`). Each point lands on
    its nearest pixel; a 3×3 min filter closes the pinholes between samples.
    """
    pixels, depth = project(points, projection)
    x, y = np.rint(pixels[:, 0]).astype(np.int64), np.rint(pixels[:, 1]).astype(np.int64)
    ok = (x >= 0) & (x < width) & (y >= 0) & (y < height) & (depth > 0)
    out = np.full((height, width), np.inf, np.float32)
    np.minimum.at(out, (y[ok], x[ok]), depth[ok].astype(np.float32))
    return cv2.erode(out, np.ones((3, 3), np.uint8))


def nearest_pixels(points: np.ndarray, projection: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest pixel ``(x, y)`` (index coordinates, unclipped) and depth of ``points (M, 3)``."""
    pixels, depth = project(points, projection)
    return np.rint(pixels[:, 0]).astype(np.int64), np.rint(pixels[:, 1]).astype(np.int64), depth
