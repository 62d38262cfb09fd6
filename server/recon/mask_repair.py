"""Mask repair from the hull's reprojection: the parts of masks that the other views contradict are filled.

A colour mask loses whatever part of the object matches the background (white patches on white, black fur on
black), and it also shows real gaps (a mug's handle, a torus, the gaps of a chair). In one view the two look the
same; across views they differ. Carving a lost patch cuts into the body, and the views that look at the body from
elsewhere then show foreground that the hull no longer explains. A real gap passes through empty space, and every
other view stays explained. So: build the strict hull and a lenient one (a point dies there only when a good part
of the views see it outside), find the points only the strict hull carves, and give back those that other views
see as unexplained foreground. Each view then takes back what the given-back points cover:

- an enclosed hole that they cover for the most part is closed whole (a patch inside the outline);
- elsewhere (a patch on the outline, a bite), the pixels they cover: a bite may share its region with real
  background (the space between an arm and the body).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..orbit import Cameras
from .hull import forgiving_field, inside_points, pixels, splat

GRID = 48  # cells along the object's longest side for the check: the holes that matter span several
LENIENT = 0.4  # fraction of the views that must see a point outside before the lenient hull drops it
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
    """``masks (N, H, W) bool`` with contradicted holes and bites filled, and ``{"holes", "views", "pixels"}``:
    how many enclosed holes were closed, in how many views holes or bites were filled, and how many pixels."""
    height, width = masks.shape[1:3]
    none = {"holes": 0, "views": 0, "pixels": 0}
    strict = forgiving_field(masks, cameras, estimated)
    lenient = forgiving_field(masks, cameras, estimated, forgive=max(strict.forgive, int(LENIENT * len(cameras))))
    points, spacing = inside_points(lenient, GRID)
    values = strict(points)
    cell_px = spacing * strict.pixels_per_unit()
    # A point within a cell of the hull may stand for a part thinner than a cell: it explains its pixels.
    kept, carved = points[values > -cell_px], points[values < -cell_px]
    if len(carved) == 0:
        return masks, none

    projections = cameras.projections(width, height, index=True).astype(np.float32)
    radius = max(1, round(0.75 * cell_px))
    support = np.zeros(len(carved), np.int32)
    for k, proj in enumerate(projections):
        explained = splat(kept, proj, height, width, radius)
        # One pixel in from the outline: the coarse splat's edge is not evidence.
        unexplained = cv2.erode((masks[k] & ~explained).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        u, v, inside = pixels(carved, proj, height, width)
        support[inside] += unexplained[v, u]
    given_back = carved[support >= MIN_SUPPORT]
    if len(given_back) == 0:
        return masks, none

    repaired, closed = masks.copy(), 0
    for k, proj in enumerate(projections):
        cover = splat(given_back, proj, height, width, radius)
        labels, count = enclosed_holes(masks[k])
        if count:
            area = np.bincount(labels.ravel(), minlength=count + 1)
            covered = np.bincount(labels[cover], minlength=count + 1)
            close = np.nonzero(covered[1:] >= MIN_COVER * area[1:])[0] + 1
            repaired[k] |= np.isin(labels, close)
            closed += close.size
        # Closed rather than dilated: the discs would grow the outline by their radius.
        repaired[k] |= splat(given_back, proj, height, width, radius, closed=True) & (labels == 0)
    views = int((repaired != masks).any(axis=(1, 2)).sum())
    return repaired, {"holes": closed, "views": views, "pixels": int((repaired & ~masks).sum())}
