"""Photo-consistency carving: recover concavities that no silhouette can show (a cup's inside).

Space carving (Kutulakos & Seitz): a surface voxel of the current volume that the cameras see in
clearly different colours cannot lie on a Lambertian surface, so it is removed; repeat until every
visible surface voxel is consistent. Visibility comes from depth maps of the current volume, which
contains the true object, so a voxel is only judged by cameras that really see it.
The carved set then cuts into the fine silhouette field, leaving the hull's outer surface untouched.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from ..orbit import Orbit
from .hull import Volume
from .silhouettes import SilhouetteField, projection_matrices

GRID = 64  # cells along the longest side for the carving pass
IMAGE_SIZE = 160  # colour images are compared at this size (after a light blur)
MAX_VIEWS = 48
THRESHOLD = 0.09  # colour spread (0..1 scale) above which a voxel is inconsistent
MIN_VIEWS = 3
MIN_COSINE = 0.3


def carve_concavities(volume: Volume, field: SilhouetteField, rgb: np.ndarray, masks: np.ndarray,
                      orbit: Orbit) -> tuple[Volume, int]:
    """Cut photo-inconsistent regions out of ``volume``; returns the new volume and the carved voxel count."""
    stride = max(1, round(max(volume.values.shape) / GRID))
    coarse = volume.values[::stride, ::stride, ::stride]
    spacing = volume.spacing * stride
    occupied = coarse > 0
    kept = _space_carve(occupied, volume.origin, spacing, rgb, masks, orbit)
    carved = occupied & ~kept
    count = int(carved.sum())
    if count == 0:
        return volume, 0
    # Signed distance to the kept set (pixels, like the silhouette field), applied only around carved regions.
    px = field.pixels_per_unit(orbit) * spacing
    sdf = (ndimage.distance_transform_edt(kept) - ndimage.distance_transform_edt(~kept)) * px
    near = ndimage.binary_dilation(carved, iterations=2)
    fine_shape = volume.values.shape
    zoom = [(fine_shape[i] - 1) / max(coarse.shape[i] - 1, 1) for i in range(3)]
    sdf_fine = ndimage.zoom(sdf.astype(np.float32), zoom, order=1)[: fine_shape[0], : fine_shape[1], : fine_shape[2]]
    near_fine = ndimage.zoom(near.astype(np.uint8), zoom, order=0)[: fine_shape[0], : fine_shape[1], : fine_shape[2]]
    values = volume.values.copy()
    sl = tuple(slice(0, n) for n in sdf_fine.shape)
    region = near_fine.astype(bool)
    values[sl][region] = np.minimum(values[sl][region], sdf_fine[region])
    return Volume(values, volume.origin, volume.spacing), count


def _space_carve(occupied: np.ndarray, origin: np.ndarray, spacing: float, rgb: np.ndarray, masks: np.ndarray,
                 orbit: Orbit, max_iterations: int | None = None) -> np.ndarray:
    n, h, w = rgb.shape[:3]
    scale = IMAGE_SIZE / max(h, w)
    sw, sh = max(8, round(w * scale)), max(8, round(h * scale))
    views = np.unique(np.linspace(0, orbit.period - 1, min(MAX_VIEWS, orbit.period)).round().astype(int))
    images = np.stack([cv2.GaussianBlur(cv2.resize(rgb[v], (sw, sh), interpolation=cv2.INTER_AREA), (3, 3), 0)
                       for v in views]).astype(np.float32) / 255.0
    # Only pixels well inside the silhouette: edge pixels blend in the background colour.
    inner = np.stack([cv2.erode(cv2.resize(masks[v].astype(np.uint8), (sw, sh), interpolation=cv2.INTER_AREA),
                                np.ones((3, 3), np.uint8)) > 0 for v in views])
    proj = projection_matrices(orbit, sw, sh, views)
    centres = orbit.camera_to_world()[views, :3, 3]
    kept = occupied.copy()
    limit = max_iterations or max(occupied.shape)
    for _ in range(limit):
        surface = kept & ~ndimage.binary_erosion(kept)
        idx = np.argwhere(surface)
        if len(idx) == 0:
            break
        points = origin + spacing * idx
        normals = _normals(kept, idx)
        spread, seen = _colour_spread(points, normals, kept, origin, spacing, images, inner, proj, centres)
        remove = (seen >= MIN_VIEWS) & (spread > THRESHOLD)
        if not remove.any():
            break
        kept[tuple(idx[remove].T)] = False
    return kept


def _normals(kept: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Outward normals at voxel indices from the gradient of the smoothed occupancy."""
    smooth = ndimage.gaussian_filter(kept.astype(np.float32), 1.0)
    grads = np.stack([ndimage.sobel(smooth, axis=a)[tuple(idx.T)] for a in range(3)], axis=1)
    return -grads / np.maximum(np.linalg.norm(grads, axis=1, keepdims=True), 1e-9)


def _colour_spread(points, normals, kept, origin, spacing, images, inner, proj, centres):
    """Per point: colour spread across the views that see it, and how many views see it."""
    v_count, sh, sw = images.shape[:3]
    hom = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    all_idx = np.argwhere(kept)
    all_hom = np.concatenate([origin + spacing * all_idx, np.ones((len(all_idx), 1))], axis=1)
    total = np.zeros((len(points), 3))
    total_sq = np.zeros(len(points))
    seen = np.zeros(len(points), np.int32)
    for i in range(v_count):
        # Depth map of the whole current volume in this view (voxel splats, closed by a min filter).
        p = all_hom @ proj[i].T
        d = p[:, 2]
        x, y = (p[:, 0] / d).round().astype(int), (p[:, 1] / d).round().astype(int)
        ok = (x >= 0) & (x < sw) & (y >= 0) & (y < sh)
        depth = np.full((sh, sw), np.inf)
        np.minimum.at(depth, (y[ok], x[ok]), d[ok])
        depth = cv2.erode(depth.astype(np.float32), np.ones((3, 3), np.uint8))
        q = hom @ proj[i].T
        qd = q[:, 2]
        qx, qy = (q[:, 0] / qd).round().astype(int), (q[:, 1] / qd).round().astype(int)
        inside = (qx >= 0) & (qx < sw) & (qy >= 0) & (qy < sh)
        qx, qy = np.clip(qx, 0, sw - 1), np.clip(qy, 0, sh - 1)
        view = centres[i] - points
        cos = np.einsum("mj,mj->m", view, normals) / np.linalg.norm(view, axis=1)
        visible = inside & inner[i][qy, qx] & (cos > MIN_COSINE) & (qd <= depth[qy, qx] + 1.5 * spacing)
        colour = images[i][qy[visible], qx[visible]]
        total[visible] += colour
        total_sq[visible] += (colour**2).sum(axis=1)
        seen[visible] += 1
    mean = total / np.maximum(seen, 1)[:, None]
    variance = total_sq / np.maximum(seen, 1) - (mean**2).sum(axis=1)
    return np.sqrt(np.maximum(variance, 0.0) / 3.0), seen
