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

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from ..orbit import Cameras, spread_views
from .hull import Volume
from .silhouettes import SilhouetteField
from .visibility import depth_map, nearest_pixels

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


@dataclass
class _Views:
    """The carving views (blurred colour images, eroded masks, index-pixel projections, camera centres) and the
    carving grid (origin and spacing) they judge."""

    images: np.ndarray
    inner: np.ndarray
    proj: np.ndarray
    centres: np.ndarray
    origin: np.ndarray
    spacing: float

    @property
    def size(self) -> tuple[int, int]:
        return self.images.shape[2], self.images.shape[1]

    def points(self, idx: np.ndarray) -> np.ndarray:
        return self.origin + self.spacing * idx

    def depth(self, surface: np.ndarray, i: int) -> np.ndarray:
        """View ``i``'s depth map of the surface voxels (interior voxels always lie behind them)."""
        return depth_map(self.points(np.argwhere(surface)), self.proj[i], *self.size)

    def sees(self, points: np.ndarray, normals: np.ndarray, depth: np.ndarray, i: int):
        """Pixels ``(qx, qy)`` (clipped), whether each point is in view and unoccluded, and its cosine to view ``i``."""
        sw, sh = self.size
        qx, qy, qd = nearest_pixels(points, self.proj[i])
        inside = (qx >= 0) & (qx < sw) & (qy >= 0) & (qy < sh)
        qx, qy = np.clip(qx, 0, sw - 1), np.clip(qy, 0, sh - 1)
        view = self.centres[i] - points
        cos = np.einsum("mj,mj->m", view, normals) / np.linalg.norm(view, axis=1)
        return qx, qy, inside & (qd <= depth[qy, qx] + 1.5 * self.spacing), cos


def carve_concavities(volume: Volume, field: SilhouetteField, rgb: np.ndarray, masks: np.ndarray,
                      cameras: Cameras) -> tuple[Volume, int]:
    """Cut photo-inconsistent regions and the unseen underside out of ``volume``.

    ``rgb``, ``masks`` and ``cameras`` are the frames of one turn (a closing frame left out). Returns the new
    volume and the number of carved voxels (on the carving grid of ``GRID`` cells).
    """
    stride = max(1, round(max(volume.values.shape) / GRID))
    occupied = volume.values[::stride, ::stride, ::stride] > 0
    views = _view_images(rgb, masks, cameras, spread_views(MAX_VIEWS, len(cameras)), IMAGE_SIZE, volume.origin,
                         volume.spacing * stride)
    kept = _space_carve(occupied, views)
    kept = _largest_component(kept)  # crumbs of a carved-through cap would float above the cavity
    carved = occupied & ~kept
    px = field.pixels_per_unit()
    values = volume.values
    if carved.any():
        # A field whose zero level is the carved region's boundary, in pixels like the silhouette field,
        # moved to the most consistent depth found behind each wall voxel. Only the carved boundary
        # moves; the hull's outer surface keeps its silhouette accuracy.
        cavity = ndimage.distance_transform_edt(~carved) - ndimage.distance_transform_edt(carved)
        cavity -= _wall_depth(kept, carved, views)
        cavity = ndimage.gaussian_filter(cavity * views.spacing * px, 0.7).astype(np.float32)
        values = np.minimum(values, _resample(cavity, values.shape))
    elevation = cameras.elevation_deg
    floor = _unseen_underside(kept, views, elevation)
    if floor is not None:
        # Nothing looks at the underside: close it flat at the lowest surface any camera saw.
        z = volume.origin[2] + volume.spacing * np.arange(values.shape[2])
        plane = (np.sign(elevation) * (z - floor) * px).astype(np.float32)
        values = np.minimum(values, plane[None, None, :])
    return Volume(values.astype(np.float32), volume.origin, volume.spacing), int(carved.sum())


def _wall_depth(kept: np.ndarray, carved: np.ndarray, views: _Views) -> np.ndarray:
    """How far (voxels) behind each carved wall the colours agree best, spread smoothly over the grid.

    Carving stops as soon as a voxel is consistent within the tolerance of ``OFFSETS``, i.e. up to a
    voxel in front of the true surface; the best of finer positions along the normal places it.
    """
    surface = kept & ~ndimage.binary_erosion(kept)
    idx = np.argwhere(surface & ndimage.binary_dilation(carved))
    depth = np.zeros(kept.shape, np.float32)
    if len(idx) == 0:
        return depth
    normals = _normals(kept, idx)
    spread, seen = _colour_spread(views.points(idx), normals, surface, views, offsets=WALL_OFFSETS)
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


def _view_images(rgb: np.ndarray, masks: np.ndarray, cameras: Cameras, views: np.ndarray, size: int,
                 origin: np.ndarray, spacing: float) -> _Views:
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
    used = cameras.subset(views)
    return _Views(images, inner, used.projections(sw, sh, index=True), used.centres(), origin, spacing)


def _largest_component(kept: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(kept)
    if count <= 1:
        return kept
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (np.argmax(sizes) + 1)


def _unseen_underside(kept: np.ndarray, views: _Views, elevation_deg: float) -> float | None:
    """Height of the lowest surface voxel any camera sees (highest, for an orbit below the object).

    From an orbit above the object the hull extends below it in a cone that every camera sees only
    through the object itself; None when the orbit is near the equator and there is no such cone.
    """
    if abs(elevation_deg) < UNDERSIDE_MIN_ELEVATION:
        return None
    surface = kept & ~ndimage.binary_erosion(kept)
    idx = np.argwhere(surface)
    points = views.points(idx)
    normals = _normals(kept, idx)
    seen = np.zeros(len(points), bool)
    for i in range(len(views.proj)):
        _, _, visible, cos = views.sees(points, normals, views.depth(surface, i), i)
        seen |= visible & (cos > 0)
    if not seen.any():
        return None
    z = points[seen, 2]
    if elevation_deg > 0:
        return float(np.percentile(z, 1.0) - 0.5 * views.spacing)
    return float(np.percentile(z, 99.0) + 0.5 * views.spacing)


def _space_carve(occupied: np.ndarray, views: _Views, active: np.ndarray | None = None,
                 max_iterations: int | None = None) -> np.ndarray:
    """Peel photo-inconsistent surface voxels (within ``active``) until none is left (or ``max_iterations``)."""
    kept = occupied.copy()
    limit = max_iterations or max(occupied.shape)
    for _ in range(limit):
        surface = kept & ~ndimage.binary_erosion(kept)
        idx = np.argwhere(surface if active is None else surface & active)
        if len(idx) == 0:
            break
        normals = _normals(kept, idx)
        spread, seen = _colour_spread(views.points(idx), normals, surface, views)
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


def _colour_spread(points: np.ndarray, normals: np.ndarray, surface: np.ndarray, views: _Views,
                   offsets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Colour spread across the views that see each point, at positions along its normal, and the view count.

    Returns ``(spread (len(offsets), M), seen (M,))``; ``offsets`` are in voxels (default ``OFFSETS``).
    The voxel centre may sit up to a voxel off the true surface, which on a sharp texture alone makes
    the colours disagree; the caller takes the best position.
    """
    sw, sh = views.size
    offsets = (OFFSETS if offsets is None else offsets) * views.spacing
    total = np.zeros((len(offsets), len(points), 3))
    total_sq = np.zeros((len(offsets), len(points)))
    seen = np.zeros(len(points), np.int32)
    for i in range(len(views.proj)):
        qx, qy, unoccluded, cos = views.sees(points, normals, views.depth(surface, i), i)
        visible = np.nonzero(unoccluded & views.inner[i][qy, qx] & (cos > MIN_COSINE))[0]
        seen[visible] += 1
        for j, offset in enumerate(offsets):
            ox, oy, _ = nearest_pixels(points[visible] + offset * normals[visible], views.proj[i])
            colour = views.images[i][np.clip(oy, 0, sh - 1), np.clip(ox, 0, sw - 1)]
            total[j, visible] += colour
            total_sq[j, visible] += (colour**2).sum(axis=1)
    n = np.maximum(seen, 1)
    mean = total / n[None, :, None]
    variance = total_sq / n[None, :] - (mean**2).sum(axis=2)
    return np.sqrt(np.maximum(variance, 0.0) / 3.0), seen
