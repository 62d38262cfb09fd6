"""Mask repair from the hull's reprojection: enclosed holes that the other views contradict are filled.

A colour mask has a hole wherever a part of the object matches the background (white patches on white, black
fur on black), and so does a real through-hole (a mug's handle, a torus, the gaps of a chair). In one view the
two look the same; across views they differ. Carving a patch's hole cuts a tunnel through the body, and the
views that look at the body from the side then show foreground that the hull no longer explains. A real hole
passes through empty space, and every other view stays explained. So: build the hull with and without the
enclosed holes, find the points only the holes carved, and give back those that other views see as unexplained
foreground; the holes those points fill are patches, and are closed in the masks.

Bites into the outline (a patch on the silhouette's edge) are not enclosed and are left as they are.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..orbit import Cameras, project
from .hull import forgiving_field, grid_points, object_bounds

GRID = 48  # cells along the object's longest side for the check: the holes that matter span several
MIN_SUPPORT = 2  # views whose unexplained foreground a carved point must cover before it is given back
MIN_COVER = 0.5  # fraction of a hole that the given-back points must cover before the hole is closed


def enclosed_holes(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels ``(H, W) int32`` of the mask's background components that do not touch the image border (0 =
    none), and their count."""
    count, labels = cv2.connectedComponents((~mask).astype(np.uint8), connectivity=4)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    keep = np.ones(count, bool)
    keep[0], keep[border] = False, False  # label 0 is the mask itself
    relabel = np.zeros(count, np.int32)
    relabel[keep] = np.arange(1, keep.sum() + 1)
    return relabel[labels], int(keep.sum())


def repair_masks(masks: np.ndarray, cameras: Cameras, estimated: bool) -> tuple[np.ndarray, dict]:
    """``masks (N, H, W) bool`` with contradicted enclosed holes closed, and ``{"holes", "views", "pixels"}``:
    how many holes were closed, in how many views, covering how many pixels."""
    height, width = masks.shape[1:3]
    holes = [enclosed_holes(mask) for mask in masks]
    none = {"holes": 0, "views": 0, "pixels": 0}
    if not any(count for _, count in holes):
        return masks, none
    filled = masks | np.stack([labels > 0 for labels, _ in holes])
    with_holes = forgiving_field(masks, cameras, estimated)
    without = forgiving_field(filled, cameras, estimated)
    lo, hi = object_bounds(without)
    spacing = float((hi - lo).max()) / GRID
    shape = tuple(math.ceil((hi[i] - lo[i]) / spacing) + 1 for i in range(3))
    points = grid_points(lo, spacing, shape)
    points = points[without(points) >= 0]
    values = with_holes(points)
    cell_px = spacing * with_holes.pixels_per_unit()
    # A point within a cell of the hull may stand for a part thinner than a cell: it explains its pixels.
    kept, carved = points[values > -cell_px], points[values < -cell_px]
    if len(carved) == 0:
        return masks, none

    projections = cameras.projections(width, height, index=True).astype(np.float32)
    radius = max(1, round(0.75 * cell_px))
    support = np.zeros(len(carved), np.int32)
    for k, proj in enumerate(projections):
        explained = _splat(kept, proj, height, width, radius)
        # One pixel in from the outline: the coarse splat's edge is not evidence.
        unexplained = cv2.erode((masks[k] & ~explained).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        u, v, inside = _pixels(carved, proj, height, width)
        support[inside] += unexplained[v, u]
    given_back = carved[support >= MIN_SUPPORT]
    if len(given_back) == 0:
        return masks, none

    repaired, closed, views = masks.copy(), 0, 0
    for k, proj in enumerate(projections):
        labels, count = holes[k]
        if count == 0:
            continue
        cover = _splat(given_back, proj, height, width, radius)
        area = np.bincount(labels.ravel(), minlength=count + 1)
        covered = np.bincount(labels[cover], minlength=count + 1)
        close = np.nonzero(covered[1:] >= MIN_COVER * area[1:])[0] + 1
        if close.size:
            repaired[k] |= np.isin(labels, close)
            closed, views = closed + close.size, views + 1
    return repaired, {"holes": closed, "views": views, "pixels": int((repaired & ~masks).sum())}


def _pixels(points: np.ndarray, projection: np.ndarray, height: int, width: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rounded pixel columns and rows of the points in front of the camera and inside the image, and which."""
    pixels, depth = project(points, projection)
    u, v = np.round(pixels[:, 0]).astype(np.int64), np.round(pixels[:, 1]).astype(np.int64)
    inside = (depth > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    return u[inside], v[inside], inside


def _splat(points: np.ndarray, projection: np.ndarray, height: int, width: int, radius: int) -> np.ndarray:
    """``(H, W) bool``: the image area the points cover, each a disc of ``radius`` pixels."""
    image = np.zeros((height, width), np.uint8)
    u, v, _ = _pixels(points, projection, height, width)
    image[v, u] = 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(image, kernel) > 0
