"""Per-frame azimuths from the silhouettes alone, as a smooth drift of the even turn.

Where no tracks give the frames' poses (too little texture, or tracks the silhouettes reject), a generated orbit's
uneven angular speed is still there: up to ±12° ahead of or behind an even turn, smoothly. One frame's silhouette
barely tells its own azimuth (a body of revolution shows the same outline from everywhere), but all frames
together tell a smooth drift: the azimuths are the even turn plus two harmonics of the turn and a change of its
total (five numbers, zero at frame 0, the heading gauge), chosen so that the hull of spread reference views,
projected into each frame, covers that frame's mask best (intersection over union). Frames whose mask hardly
changes with the azimuth weigh nothing; a few distinctive ones fix the drift for all.

The caller keeps the result only where an independent silhouette score (the calibration's outline referee)
prefers it to the even turn.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from ..orbit import Cameras, Orbit, spread_views
from .hull import inside_points, splat
from .silhouettes import SilhouetteField, downsized

SIZE = 160  # pixels along the masks' longer side
FIT_FRAMES = 36  # frames whose masks score a drift (spread over the orbit): five numbers need no more
REFERENCE_VIEWS = 18  # views whose hull is projected into the others
GRID = 48  # cells along the hull's longest side
SWEEPS = ((16.0, 1.0), (8.0, 0.5), (4.0, 0.25))  # (half-width, step) in degrees of the offsets scored per sweep


def silhouette_drift(masks: np.ndarray, orbit: Orbit) -> Cameras:
    """Every frame's camera on ``orbit`` (its elevation, fov and radius), at the even turn's azimuth plus the smooth
    drift that best fits the masks ``(N, H, W) bool``."""
    small = downsized(masks, SIZE)
    even = orbit.azimuths_deg()
    turn = orbit.direction * (even - even[0]) / 360.0  # share of the turn at each frame
    basis = np.stack([np.sin(2 * np.pi * turn), np.cos(2 * np.pi * turn) - 1.0, np.sin(4 * np.pi * turn),
                      np.cos(4 * np.pi * turn) - 1.0, 10.0 * turn], axis=1)  # degrees per unit
    fit = spread_views(FIT_FRAMES, len(masks))[1:]  # frame 0 is the gauge
    coef = np.zeros(basis.shape[1])
    for span, step in SWEEPS:
        azimuth = even + basis @ coef
        offsets = np.arange(-span, span + 1e-9, step)
        costs = _costs(small, Cameras.on_sphere(azimuth, orbit.elevation_deg, orbit.radius, orbit.fov_deg), fit,
                       offsets)
        start = coef.copy()

        def cost(c: np.ndarray, start: np.ndarray = start, offsets: np.ndarray = offsets,
                 costs: np.ndarray = costs) -> float:
            moved = basis[fit] @ (c - start)
            return float(sum(np.interp(m, offsets, row, left=1.0, right=1.0) for m, row in zip(moved, costs,
                                                                                               strict=True)))

        coef = minimize(cost, start, method="Powell", options={"xtol": 0.02, "maxfev": 1500}).x
    return Cameras.on_sphere(even + basis @ coef, orbit.elevation_deg, orbit.radius, orbit.fov_deg)


def _costs(small: np.ndarray, cameras: Cameras, frames: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``(len(frames), len(offsets))``: 1 − IoU of each frame's mask with the reference hull projected from that
    frame's camera turned by each offset."""
    height, width = small.shape[1:3]
    field = SilhouetteField(small, cameras, spread_views(REFERENCE_VIEWS, len(small)), forgive=1)
    points, spacing = inside_points(field, GRID)
    radius = max(1, round(0.6 * spacing * field.pixels_per_unit()))
    azimuth, elevation, distance = cameras.spherical()
    out = np.ones((len(frames), len(offsets)))
    for i, k in enumerate(frames):
        turned = Cameras.on_sphere(azimuth[k] + offsets, elevation[k], distance[k], cameras.fov_deg)
        for j, proj in enumerate(turned.projections(width, height, index=True)):
            seen = splat(points, proj, height, width, radius, closed=True)
            union = (seen | small[k]).sum()
            out[i, j] = 1.0 - (seen & small[k]).sum() / union if union else 1.0
    return out
