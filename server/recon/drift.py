"""Per-frame azimuths from the silhouettes alone, as a smooth drift of the even turn.

Where no tracks give the frames' poses (too little texture, or tracks the silhouettes reject), a generated orbit's
uneven angular speed is still there: up to ±12° ahead of or behind an even turn, smoothly. One frame's silhouette
barely tells its own azimuth (a body of revolution shows the same outline from everywhere), but all frames
together tell a smooth drift: the azimuths are the even turn plus two harmonics of the turn and a change of its
total (five numbers, zero at frame 0, the heading gauge). They are fitted by least squares to the silhouettes'
consistency (the calibration's outline-ray misses: a ray through one view's outline must graze the hull of the
others), which binds every view to every other at once, so a few distinctive outlines fix the drift for all.

The views fitted lie between those the caller's referee scores (``fine_outline_score``; frame 0 is in both), and
the caller keeps the result only where that referee prefers it to the even turn: the outlines that judge the drift
did not shape it. (Fitted on the referee's own views instead, the tune objects' errors come out about as large.)
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

from ..orbit import Cameras, Orbit, spread_views
from .calibration import FINE_VIEWS, fine_outline_score

MAX_EVALUATIONS = 20  # least-squares steps (each also takes five for its Jacobian): the tune objects converge sooner
DIFF_STEP_DEG = 0.1  # finite-difference step (degrees, up to |x|): the misses are interpolated between pixels
BOUND_DEG = 25.0  # each number's bound (the drift stays within about ±12°, the turn within a few degrees)


def silhouette_drift(masks: np.ndarray, orbit: Orbit) -> Cameras:
    """Every frame's camera on ``orbit`` (its elevation, fov and radius), at the even turn's azimuth plus the smooth
    drift that best fits the masks ``(N, H, W) bool``."""
    even = orbit.azimuths_deg()
    turn = orbit.direction * (even - even[0]) / 360.0  # share of the turn at each frame
    basis = np.stack([np.sin(2 * np.pi * turn), np.cos(2 * np.pi * turn) - 1.0, np.sin(4 * np.pi * turn),
                      np.cos(4 * np.pi * turn) - 1.0, 10.0 * turn], axis=1)  # degrees per unit
    fitted = fine_outline_score(masks, _between(spread_views(FINE_VIEWS, len(masks))))

    def cameras(coef: np.ndarray) -> Cameras:
        return Cameras.on_sphere(even + basis @ coef, orbit.elevation_deg, orbit.radius, orbit.fov_deg)

    fit = least_squares(lambda coef: fitted.misses(cameras(coef)), np.zeros(basis.shape[1]),
                        bounds=(-BOUND_DEG, BOUND_DEG), diff_step=DIFF_STEP_DEG,
                        max_nfev=MAX_EVALUATIONS)
    return cameras(fit.x)


def _between(views: np.ndarray) -> np.ndarray:
    """Frame 0, which holds the drift at zero (fitted without it, the drift trades its shape for a constant), and
    the frames halfway between consecutive ``views``."""
    return np.unique(np.concatenate([[0], np.round((views[:-1] + views[1:]) / 2.0).astype(int)]))
