"""Per-frame azimuths from the silhouettes, as a smooth drift of the even turn or of the tracked poses.

Where no tracks give the frames' poses (too little texture, or tracks the silhouettes reject), a generated orbit's
uneven angular speed is still there: up to ±12° ahead of or behind an even turn, smoothly. One frame's silhouette
barely tells its own azimuth (a body of revolution shows the same outline from everywhere), but all frames
together tell a smooth drift: the azimuths are the even turn plus two harmonics of the turn and a change of its
total (five numbers, zero at frame 0, the heading gauge). A generated video's zoom wobbles too (about ±1.5 %), and
that moves the outlines as far as a degree of turn does: fitted without it, the drift bent to absorb the zoom
(the tune ring: 1.3° mean, 4.2° worst; the tune penguin: 1.3°, 2.5°). So the frames' distances follow a smooth
zoom as well, a trend and three harmonics of the turn (seven numbers, zero at frame 0, the scale gauge), and the
azimuths come out at 0.6°, 2.0° and 0.6°, 1.7°. All twelve numbers are fitted by least squares to the
silhouettes' consistency (the calibration's outline-ray misses: a ray through one view's outline must graze the
hull of the others), which binds every view to every other at once, so a few distinctive outlines fix the drift
for all.

Tracked poses get the same drift on top. The bundle adjustment holds each frame's own jitter, but what it gets
wrong is smooth: on the tune objects (generated-like, 192², 36 frames, true elevation and fov) its azimuth error
less a trend and one harmonic of the turn is 0.07° (cup) to 0.39° (textured) against 0.74–0.82° whole. The zoom
is the larger part: without it the drift made the torus worse (0.8° → 2.9°); with it the torus's, the cup's and
the textured ball's errors fall from 0.74–0.82° mean and 1.5–2.4° worst to 0.31–0.45° and 0.67–0.94°.

The views fitted lie between those the caller's referee scores (``fine_outline_score``; frame 0 is in both), and
the caller keeps the result only where that referee prefers it to the poses it started from: the outlines that
judge the drift did not shape it. (Fitted on the referee's own views instead, the tune objects' errors come out
about as large.)
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

from ..orbit import Cameras, spread_views
from .calibration import FINE_VIEWS, fine_outline_score

MAX_EVALUATIONS = 20  # least-squares steps (each also takes twelve for its Jacobian)
DIFF_STEP = 0.1  # finite-difference step (degrees or percent, up to |x|): the misses are interpolated between pixels
BOUND_DEG = 25.0  # each azimuth number's bound (the drift stays within about ±12°, the turn within a few degrees)
ZOOM_HARMONICS = 3  # a zoom that wobbles up to three times over the turn (two left the tune objects at 1.1–1.7°)
BOUND_PERCENT = 5.0  # each zoom number's bound, in percent of the distance


def silhouette_drift(masks: np.ndarray, base: Cameras, direction: int) -> Cameras:
    """``base``'s cameras (the even turn, or the tracked poses) with their azimuths plus the smooth drift and their
    distances times the smooth zoom that best fit the masks ``(N, H, W) bool``; elevations and fov kept."""
    azimuth, elevation, distance = base.spherical()
    turn = direction * (azimuth - azimuth[0]) / 360.0  # share of the turn at each frame
    drift = np.stack([*_harmonics(turn, 2), 10.0 * turn], axis=1)  # degrees per unit
    zoom = np.stack([turn, *_harmonics(turn, ZOOM_HARMONICS)], axis=1) / 100.0  # a unit is a percent of the distance
    fitted = fine_outline_score(masks, _between(spread_views(FINE_VIEWS, len(masks))))

    def cameras(coef: np.ndarray) -> Cameras:
        turned, zoomed = drift @ coef[:drift.shape[1]], zoom @ coef[drift.shape[1]:]
        return Cameras.on_sphere(azimuth + turned, elevation, distance * (1.0 + zoomed), base.fov_deg)

    bound = np.concatenate([np.full(drift.shape[1], BOUND_DEG), np.full(zoom.shape[1], BOUND_PERCENT)])
    fit = least_squares(lambda coef: fitted.misses(cameras(coef)), np.zeros(len(bound)), bounds=(-bound, bound),
                        diff_step=DIFF_STEP, max_nfev=MAX_EVALUATIONS)
    return cameras(fit.x)


def _harmonics(turn: np.ndarray, count: int) -> list[np.ndarray]:
    """The sine and cosine of the first ``count`` harmonics of the turn, each zero at frame 0."""
    return [f for h in range(1, count + 1) for f in (np.sin(2 * np.pi * h * turn), np.cos(2 * np.pi * h * turn) - 1.0)]


def _between(views: np.ndarray) -> np.ndarray:
    """Frame 0, which holds the drift at zero (fitted without it, the drift trades its shape for a constant), and
    the frames halfway between consecutive ``views``."""
    return np.unique(np.concatenate([[0], np.round((views[:-1] + views[1:]) / 2.0).astype(int)]))
