"""Photo-consistency carving: recover concavities that no silhouette can show (a cup's inside).

Space carving (Kutulakos & Seitz): a surface voxel of the current volume that the cameras see in
clearly different colours cannot lie on a Lambertian surface, so it is removed; repeat until every
visible surface voxel is consistent. Visibility comes from depth maps of the current volume, which
contains the true object, so a voxel is only judged by cameras that really see it.
The carved set then cuts into the fine silhouette field, leaving the hull's outer surface untouched.

From an orbit above the object, the hull also extends below it in a cone that no camera sees (every
ray to it passes through the object first); that unseen underside is closed flat at the lowest
surface any camera saw. What no camera sees at all, such as the floor of a deep, narrow cup seen
from a low orbit, cannot be carved.
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
MAX_VIEWS = 36  # more views make the spread test stricter on true walls (measured on the cup benchmark)
WALL_OFFSETS = np.linspace(-2.0, 0.5, 11)  # voxels along the outward normal, for placing carved walls
THRESHOLD = 0.11  # colour spread (0..1 scale) above which a voxel is inconsistent
MIN_VIEWS = 3
MIN_COSINE = 0.3
UNDERSIDE_MIN_ELEVATION = 5.0  # degrees
OFFSETS = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])  # voxels along the normal
BLUR = 1.5  # pixels (at IMAGE_SIZE): tolerance for the voxel grid's sub-voxel misplacement


def carve_concavities(volume: Volume, field: SilhouetteField, rgb: np.ndarray, masks: np.ndarray,
                      orbit: Orbit) -> tuple[Volume, int]:
    """Cut photo-inconsistent regions and the unseen underside out of ``volume``.

    Returns the new volume and the number of carved voxels (on the carving grid of ``GRID`` cells).
    """
    views = _views(orbit)
    centres = orbit.camera_to_world()[views, :3, 3]
    stride = max(1, round(max(volume.values.shape) / GRID))
    spacing = volume.spacing * stride
    occupied = volume.values[::stride, ::stride, ::stride] > 0
    images, inner, proj = _view_images(rgb, masks, orbit, views, IMAGE_SIZE)
    kept = _space_carve(occupied, volume.origin, spacing, images, inner, proj, centres)
    kept = _largest_component(kept)  # crumbs of a carved-through cap would float above the cavity
    carved = occupied & ~kept
    px = field.pixels_per_unit(orbit)
    values = volume.values
    if carved.any():
        # A field whose zero level is the carved region's boundary, in pixels like the silhouette field,
        # moved to the most consistent depth found behind each wall voxel. Only the carved boundary
        # moves; the hull's outer surface keeps its silhouette accuracy.
        cavity = ndimage.distance_transform_edt(~carved) - ndimage.distance_transform_edt(carved)
        cavity -= _wall_depth(kept, carved, volume.origin, spacing, images, inner, proj, centres)
        cavity = ndimage.gaussian_filter(cavity * spacing * px, 0.7).astype(np.float32)
        values = np.minimum(values, _resample(cavity, values.shape))
    floor = _unseen_underside(kept, volume.origin, spacing, proj, centres, orbit, images.shape[2], images.shape[1])
    if floor is not None:
        # Nothing looks at the underside: close it flat at the lowest surface any camera saw.
        z = volume.origin[2] + volume.spacing * np.arange(values.shape[2])
        plane = (np.sign(orbit.elevation_deg) * (z - floor) * px).astype(np.float32)
        values = np.minimum(values, plane[None, None, :])
    return Volume(values.astype(np.float32), volume.origin, volume.spacing), int(carved.sum())


def _wall_depth(kept, carved, origin, spacing, images, inner, proj, centres) -> np.ndarray:
    """How far (voxels) behind each carved wall the colours agree best, spread smoothly over the grid.

    Carving stops as soon as a voxel is consistent within the tolerance of ``OFFSETS``, i.e. up to a
    voxel in front of the true surface; the best of finer positions along the normal places it.
    """
    surface = kept & ~ndimage.binary_erosion(kept)
    idx = np.argwhere(surface & ndimage.binary_dilation(carved))
    depth = np.zeros(kept.shape, np.float32)
    if len(idx) == 0:
        return depth
    points = origin + spacing * idx
    normals = _normals(kept, idx)
    spread, seen = _colour_spread(points, normals, surface, origin, spacing, images, inner, proj, centres,
                                  offsets=WALL_OFFSETS)
    best = -WALL_OFFSETS[spread.argmin(axis=0)]
    weight = np.zeros(kept.shape, np.float32)
    good = seen >= MIN_VIEWS
    depth[tuple(idx[good].T)] = best[good]
    weight[tuple(idx[good].T)] = 1.0
    blurred = ndimage.gaussian_filter(weight, 1.0)
    return np.where(blurred > 1e-3, ndimage.gaussian_filter(depth, 1.0) / np.maximum(blurred, 1e-3), 0.0)


def _resample(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Trilinear resampling of a grid strided from a finer one back onto the fine grid's points."""
    zoom = [(shape[i] - 1) / max(coarse.shape[i] - 1, 1) for i in range(3)]
    out = ndimage.zoom(coarse, zoom, order=1, grid_mode=False, mode="nearest")
    pad = [(0, max(0, shape[i] - out.shape[i])) for i in range(3)]
    return np.pad(out, pad, mode="edge")[: shape[0], : shape[1], : shape[2]]


def _views(orbit: Orbit) -> np.ndarray:
    return np.unique(np.linspace(0, orbit.period - 1, min(MAX_VIEWS, orbit.period)).round().astype(int))


def _view_images(rgb: np.ndarray, masks: np.ndarray, orbit: Orbit, views: np.ndarray, size: int):
    """Blurred colour images, eroded masks and projections of the carving views, ``size`` pixels wide."""
    h, w = rgb.shape[1:3]
    scale = size / max(h, w)
    sw, sh = max(8, round(w * scale)), max(8, round(h * scale))
    blur = BLUR * size / IMAGE_SIZE
    images = np.stack([cv2.GaussianBlur(cv2.resize(rgb[v], (sw, sh), interpolation=cv2.INTER_AREA), (0, 0), blur)
                       for v in views]).astype(np.float32) / 255.0
    # Only pixels well inside the silhouette: edge pixels blend in the background colour.
    inner = np.stack([cv2.erode(cv2.resize(masks[v].astype(np.uint8), (sw, sh), interpolation=cv2.INTER_AREA),
                                np.ones((3, 3), np.uint8)) > 0 for v in views])
    return images, inner, projection_matrices(orbit, sw, sh, views)


def _largest_component(kept: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(kept)
    if count <= 1:
        return kept
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (np.argmax(sizes) + 1)


def _unseen_underside(kept, origin, spacing, proj, centres, orbit: Orbit, sw: int, sh: int) -> float | None:
    """Height of the lowest surface voxel any camera sees (highest, for an orbit below the object).

    From an orbit above the object the hull extends below it in a cone that every camera sees only
    through the object itself; None when the orbit is near the equator and there is no such cone.
    """
    if abs(orbit.elevation_deg) < UNDERSIDE_MIN_ELEVATION:
        return None
    surface = kept & ~ndimage.binary_erosion(kept)
    idx = np.argwhere(surface)
    points = origin + spacing * idx
    normals = _normals(kept, idx)
    all_hom = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    seen = np.zeros(len(points), bool)
    for i in range(len(proj)):
        depth = _depth_map(all_hom, proj[i], sw, sh)
        qx, qy, qd = _pixels(points, proj[i])
        inside = (qx >= 0) & (qx < sw) & (qy >= 0) & (qy < sh)
        qx, qy = np.clip(qx, 0, sw - 1), np.clip(qy, 0, sh - 1)
        view = centres[i] - points
        facing = np.einsum("mj,mj->m", view, normals) > 0
        seen |= inside & facing & (qd <= depth[qy, qx] + 1.5 * spacing)
    if not seen.any():
        return None
    z = points[seen, 2]
    if orbit.elevation_deg > 0:
        return float(np.percentile(z, 1.0) - 0.5 * spacing)
    return float(np.percentile(z, 99.0) + 0.5 * spacing)


def _depth_map(all_hom: np.ndarray, proj: np.ndarray, sw: int, sh: int) -> np.ndarray:
    """Depth of the nearest voxel per pixel (voxel-centre splats, closed by a 3×3 min filter)."""
    p = all_hom @ proj.T
    d = p[:, 2]
    x, y = (p[:, 0] / d).round().astype(int), (p[:, 1] / d).round().astype(int)
    ok = (x >= 0) & (x < sw) & (y >= 0) & (y < sh)
    depth = np.full((sh, sw), np.inf)
    np.minimum.at(depth, (y[ok], x[ok]), d[ok])
    return cv2.erode(depth.astype(np.float32), np.ones((3, 3), np.uint8))


def _space_carve(occupied: np.ndarray, origin: np.ndarray, spacing: float, images, inner, proj, centres,
                 active: np.ndarray | None = None, max_iterations: int | None = None) -> np.ndarray:
    """Peel photo-inconsistent surface voxels (within ``active``) until none is left (or ``max_iterations``)."""
    kept = occupied.copy()
    limit = max_iterations or max(occupied.shape)
    for _ in range(limit):
        surface = kept & ~ndimage.binary_erosion(kept)
        idx = np.argwhere(surface if active is None else surface & active)
        if len(idx) == 0:
            break
        points = origin + spacing * idx
        normals = _normals(kept, idx)
        spread, seen = _colour_spread(points, normals, surface, origin, spacing, images, inner, proj, centres)
        remove = (seen >= MIN_VIEWS) & (spread.min(axis=0) > THRESHOLD)
        if not remove.any():
            break
        kept[tuple(idx[remove].T)] = False
    return kept


def _normals(kept: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Outward normals at voxel indices from the gradient of the smoothed occupancy."""
    smooth = ndimage.gaussian_filter(kept.astype(np.float32), 1.0)
    grads = np.stack([ndimage.sobel(smooth, axis=a)[tuple(idx.T)] for a in range(3)], axis=1)
    return -grads / np.maximum(np.linalg.norm(grads, axis=1, keepdims=True), 1e-9)


def _colour_spread(points, normals, surface, origin, spacing, images, inner, proj, centres, offsets=None):
    """Colour spread across the views that see each point, at positions along its normal, and the view count.

    Returns ``(spread (len(offsets), M), seen (M,))``; ``offsets`` are in voxels (default ``OFFSETS``).
    The voxel centre may sit up to a voxel off the true surface, which on a sharp texture alone makes
    the colours disagree; the caller takes the best position.
    """
    v_count, sh, sw = images.shape[:3]
    offsets = (OFFSETS if offsets is None else offsets) * spacing
    # Interior voxels always lie behind surface ones: the surface alone gives the depth maps.
    all_idx = np.argwhere(surface)
    all_hom = np.concatenate([origin + spacing * all_idx, np.ones((len(all_idx), 1))], axis=1)
    total = np.zeros((len(offsets), len(points), 3))
    total_sq = np.zeros((len(offsets), len(points)))
    seen = np.zeros(len(points), np.int32)
    for i in range(v_count):
        depth = _depth_map(all_hom, proj[i], sw, sh)
        qx, qy, qd = _pixels(points, proj[i])
        inside = (qx >= 0) & (qx < sw) & (qy >= 0) & (qy < sh)
        qx, qy = np.clip(qx, 0, sw - 1), np.clip(qy, 0, sh - 1)
        view = centres[i] - points
        cos = np.einsum("mj,mj->m", view, normals) / np.linalg.norm(view, axis=1)
        visible = np.nonzero(inside & inner[i][qy, qx] & (cos > MIN_COSINE) & (qd <= depth[qy, qx] + 1.5 * spacing))[0]
        seen[visible] += 1
        for j, offset in enumerate(offsets):
            ox, oy, _ = _pixels(points[visible] + offset * normals[visible], proj[i])
            colour = images[i][np.clip(oy, 0, sh - 1), np.clip(ox, 0, sw - 1)]
            total[j, visible] += colour
            total_sq[j, visible] += (colour**2).sum(axis=1)
    n = np.maximum(seen, 1)
    mean = total / n[None, :, None]
    variance = total_sq / n[None, :] - (mean**2).sum(axis=2)
    return np.sqrt(np.maximum(variance, 0.0) / 3.0), seen


def _pixels(points: np.ndarray, proj: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest pixel (x, y) and depth of ``points (M, 3)`` under a ``(3, 4)`` projection."""
    q = points @ proj[:, :3].T + proj[:, 3]
    return (q[:, 0] / q[:, 2]).round().astype(int), (q[:, 1] / q[:, 2]).round().astype(int), q[:, 2]
