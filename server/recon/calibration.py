"""Orbit calibration from silhouettes: elevation, field of view, direction and a closed loop.

With the right orbit every silhouette is consistent with every other: the ray through a point on
the outline of view ``j`` grazes the hull carved by the other views. With a wrong orbit such rays
miss the hull. The score is the mean distance (pixels) by which outline rays miss, a continuous
criterion searched coarse-to-fine: a grid over elevation × fov × direction on small masks, then a
pattern search with shrinking steps on middle-sized masks, finished on larger ones. Radius and start
azimuth are gauges (scale and the object's heading) that silhouettes cannot fix: they keep their given
or default values.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from ..orbit import Cameras, Orbit, spread_views
from .silhouettes import SilhouetteField, downsized, signed_distance

ELEVATIONS = (-30.0, -15.0, 0.0, 15.0, 30.0, 45.0, 60.0)
FOVS = (15.0, 25.0, 35.0, 45.0, 55.0, 70.0)
MISS_CAP = 8.0  # pixels: one bad mask cannot dominate the score
FINE_VIEWS = 16  # views the finest score (the referee) scores


PROFILE_OFFSETS = (1.0, 2.0, 4.0, 8.0, 16.0)  # degrees: where the score's rise is probed for the uncertainty
SCORE_TOLERANCE_PX = 0.03  # outline-ray miss (fine masks) within which two orbits are not told apart
UNDETERMINED_DEG = 32.0  # the half-width reported when no probed offset makes the silhouettes disagree


@dataclass
class Calibration:
    orbit: Orbit
    score: float  # mean outline-ray miss in pixels of the fine masks (0 = perfectly consistent)
    evaluations: int
    # Half-width (degrees) of the range of elevation / fov that the silhouettes cannot tell from the estimate
    # (UNDETERMINED_DEG when they cannot tell anything, 0 when given); how much worse the best orbit of the other
    # direction scores, relative to the best (0 when given: no evidence).
    uncertainty: dict = field(default_factory=dict)
    direction_margin: float = 0.0


def detect_closed_loop(masks: np.ndarray, rgb: np.ndarray | None = None) -> bool:
    """True when the last frame repeats the first: it matches frame 0 far better than frame 1 does."""
    def difference(a: int, b: int) -> float:
        d = float(np.mean(masks[a] != masks[b]))
        if rgb is not None:
            d += float(np.mean(np.abs(rgb[a].astype(np.int16) - rgb[b]))) / 255.0
        return d

    step = difference(0, 1)
    return difference(0, masks.shape[0] - 1) < 0.35 * step if step > 0 else False


class OutlineScore:
    """Silhouette-consistency score for candidate orbits, on masks scaled to ``size`` pixels."""

    def __init__(self, masks: np.ndarray, size: int, views: int | np.ndarray, outline_points: int,
                 depth_samples: int) -> None:
        """``views``: how many frames to score, spread over the orbit, or which."""
        self.small = downsized(masks, size)
        self.height, self.width = self.small.shape[1:3]
        self.size = size
        self.num_frames = masks.shape[0]
        self.views = spread_views(views, masks.shape[0]) if isinstance(views, int) else np.asarray(views)
        outlines = [_outline(self.small[k], outline_points) for k in self.views]
        self.pixels = np.concatenate(outlines)
        self.owner = np.concatenate([np.full(len(p), i) for i, p in enumerate(outlines)])  # view of each pixel
        self.sdt = np.stack([signed_distance(self.small[k]) for k in self.views])
        self.depth_samples = depth_samples
        centre = np.array([self.width / 2.0, self.height / 2.0])
        self.extent_px = float(np.linalg.norm(self.pixels + 0.5 - centre, axis=1).max())
        self.cameras: dict[tuple[float, int], np.ndarray] = {}  # c2w; the fov does not move the cameras

    def __call__(self, orbit: Orbit) -> float:
        key = (orbit.elevation_deg, orbit.direction)
        if key not in self.cameras:
            self.cameras[key] = orbit.camera_to_world()
        return self.score(Cameras(self.cameras[key], orbit.fov_deg))

    def score(self, cameras: Cameras) -> float:
        """Mean outline-ray miss (pixels) of ``cameras`` (one per frame)."""
        return float(np.mean(self.misses(cameras)))

    def misses(self, cameras: Cameras) -> np.ndarray:
        """Each outline ray's miss (pixels, capped) under ``cameras`` (one per frame)."""
        field = SilhouetteField(self.small, cameras, self.views, self.sdt)
        c2w = cameras.c2w[self.views]
        radius = cameras.radius
        f = cameras.focal_px(self.width, self.height)
        # The object lies within the sphere that the widest outline subtends at the orbit centre.
        reach = min(radius * self.extent_px / f * 1.2, 0.9 * radius)
        depths = np.linspace(radius - reach, radius + reach, self.depth_samples)
        step = depths[1] - depths[0]
        # Rays through the outline pixels (pixel centres) of all views at once, in world coordinates; each ray
        # is scored against the other views' silhouettes.
        x = (self.pixels[:, 0] + 0.5 - self.width / 2.0) / f
        y = -(self.pixels[:, 1] + 0.5 - self.height / 2.0) / f
        local = np.stack([x, y, -np.ones_like(x)], axis=1)
        dirs = np.einsum("pij,pj->pi", c2w[self.owner, :3, :3], local)
        origins = c2w[self.owner, :3, 3]

        def best_along(samples: np.ndarray) -> np.ndarray:
            points = origins[:, None, :] + dirs[:, None, :] * samples[..., None]
            values = field(points.reshape(-1, 3), skip=np.repeat(self.owner, samples.shape[-1]))
            return values.reshape(len(self.pixels), -1)

        peak = depths[best_along(np.broadcast_to(depths, (len(self.pixels), len(depths)))).argmax(axis=1)]
        # Second pass: a finer look around each ray's peak.
        best = best_along(peak[:, None] + np.linspace(-step, step, 9)[None, :]).max(axis=1)
        return np.minimum(np.maximum(-best, 0.0), MISS_CAP)


def fine_outline_score(masks: np.ndarray, views: np.ndarray | None = None) -> OutlineScore:
    """The finest scale the calibration scores at: its last search steps, and the referee of per-frame poses.
    ``views``: which frames to score (default ``FINE_VIEWS`` spread over the orbit)."""
    return OutlineScore(masks, size=160, views=FINE_VIEWS if views is None else views, outline_points=80,
                        depth_samples=32)


def _outline(mask: np.ndarray, count: int) -> np.ndarray:
    """``(n, 2)`` pixel coordinates (x, y) spread evenly along the mask's outer and hole outlines."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    points = np.concatenate([c.reshape(-1, 2) for c in contours]) if contours else np.zeros((0, 2), int)
    if len(points) > count:
        points = points[np.linspace(0, len(points) - 1, count).round().astype(int)]
    return points.astype(np.float64)


def calibrate_orbit(masks: np.ndarray, base: Orbit, rgb: np.ndarray | None = None, *,
                    elevation: float | None = None, fov: float | None = None, direction: int | None = None,
                    closed: bool | None = None, polish: bool = True) -> Calibration:
    """Estimate the orbit parameters given as None; the others (and radius/start azimuth) come from ``base``.

    ``polish=False`` stops before the last, fine-mask search (a per-frame refinement follows; see
    :func:`polish_orbit`)."""
    if closed is None:
        closed = detect_closed_loop(masks, rgb)
    base = replace(base, closed=closed)
    evaluations = 0

    def make(theta: float, phi: float, s: int) -> Orbit:
        return replace(base, elevation_deg=float(np.clip(theta, -89, 89)), fov_deg=float(np.clip(phi, 3, 120)),
                       direction=s)

    thetas = (elevation,) if elevation is not None else ELEVATIONS
    fovs = (fov,) if fov is not None else FOVS
    dirs = (direction,) if direction is not None else (1, -1)
    if len(thetas) * len(fovs) * len(dirs) == 1:
        return Calibration(make(thetas[0], fovs[0], dirs[0]), 0.0, 0, {"elevation_deg": 0.0, "fov_deg": 0.0})

    coarse = OutlineScore(masks, size=64, views=8, outline_points=40, depth_samples=24)
    scored = []
    for theta, phi, s in itertools.product(thetas, fovs, dirs):
        scored.append((coarse(make(theta, phi, s)), theta, phi, s))
    evaluations += len(scored)
    scored.sort()
    margin = 0.0
    if direction is None:
        other = min(x[0] for x in scored if x[3] != scored[0][3])
        margin = (other - scored[0][0]) / max(scored[0][0], 0.05)

    # Most of the pattern search's moves are large: make them on middle-sized masks, and only the last
    # half-degree steps and the parabola on the fine ones.
    middle = OutlineScore(masks, size=96, views=12, outline_points=60, depth_samples=24)
    best = None
    for score0, theta, phi, s in scored[:2]:
        if best is not None and score0 > 1.5 * scored[0][0]:
            break  # refine a runner-up basin only when the coarse grid could have misranked it
        result = _pattern_search(lambda t, p, s=s: middle(make(t, p, s)), theta, phi, elevation is None,
                                 fov is None, min_step=2.0)
        evaluations += result[-1]
        if best is None or result[0] < best[0]:
            best = (*result[:3], s, result[-1])
    score, theta, phi, s, _ = best
    uncertainty, count = _uncertainty(lambda t, p: middle(make(t, p, s)), theta, phi, elevation is None,
                                      fov is None, middle.size)
    evaluations += count
    calibration = Calibration(make(theta, phi, s), score, evaluations, uncertainty, margin)
    return polish_orbit(masks, calibration, elevation is None, fov is None) if polish else calibration


def polish_orbit(masks: np.ndarray, calibration: Calibration, free_theta: bool, free_phi: bool) -> Calibration:
    """The calibration's last step: a fine-mask search around its estimate (a fine score, sub-degree steps)."""
    orbit = calibration.orbit
    if not (free_theta or free_phi):
        return calibration
    fine = fine_outline_score(masks)
    score, theta, phi, count = _pattern_search(
        lambda t, p: fine(replace(orbit, elevation_deg=t, fov_deg=p)), orbit.elevation_deg, orbit.fov_deg,
        free_theta, free_phi, step_theta=1.0, step_phi=0.625)
    return replace(calibration, orbit=replace(orbit, elevation_deg=theta, fov_deg=phi), score=score,
                   evaluations=calibration.evaluations + count)


def refine_with_cameras(masks: np.ndarray, cameras_at: Callable[[float, float], Cameras], theta: float, phi: float,
                        free_theta: bool, free_phi: bool) -> tuple[float, float, float, dict]:
    """Silhouette consistency over (elevation, fov) of a family of per-frame cameras: ``cameras_at(θ, fov)``.

    Returns ``(score, θ, fov, uncertainty)``: the per-frame poses found from the tracks keep their shape, the
    silhouettes place the shared elevation and field of view.
    """
    middle = OutlineScore(masks, size=96, views=12, outline_points=60, depth_samples=24)
    _, theta, phi, _ = _pattern_search(lambda t, p: middle.score(cameras_at(t, p)), theta, phi, free_theta,
                                       free_phi, step_theta=2.0, step_phi=1.25, min_step=1.0)
    uncertainty, _ = _uncertainty(lambda t, p: middle.score(cameras_at(t, p)), theta, phi, free_theta, free_phi,
                                  middle.size)
    fine = fine_outline_score(masks)
    score, theta, phi, _ = _pattern_search(lambda t, p: fine.score(cameras_at(t, p)), theta, phi, free_theta,
                                           free_phi, step_theta=0.5, step_phi=0.5, min_step=0.25)
    return score, theta, phi, uncertainty


def _uncertainty(value: Callable[[float, float], float], theta: float, phi: float, free_theta: bool,
                 free_phi: bool, size: int) -> tuple[dict, int]:
    """Half-widths (degrees) of elevation and fov around ``(θ, fov)`` over which the score stays within what
    the masks' own noise allows (SCORE_TOLERANCE_PX at 160 px, or a quarter of the best score): the smallest
    probed offset that raises the score past that on both sides. ``size``: the scored masks' longer side."""
    best = value(theta, phi)
    tolerance = best + max(SCORE_TOLERANCE_PX * size / 160.0, 0.25 * best)
    count = 1
    out = {}
    for name, free in (("elevation_deg", free_theta), ("fov_deg", free_phi)):
        width = 0.0 if not free else UNDETERMINED_DEG
        for offset in PROFILE_OFFSETS if free else ():
            moves = [(offset, 0.0), (-offset, 0.0)] if name == "elevation_deg" else [(0.0, offset), (0.0, -offset)]
            rises = [value(float(np.clip(theta + dt, -89, 89)), float(np.clip(phi + dp, 3, 120))) > tolerance
                     for dt, dp in moves]
            count += 2
            if all(rises):
                width = offset
                break
        out[name] = width
    return out, count


def _pattern_search(value: Callable[[float, float], float], theta: float, phi: float, free_theta: bool,
                    free_phi: bool, step_theta: float = 8.0, step_phi: float = 5.0, min_step: float = 0.5):
    """Compass search on (elevation, fov) with halving steps; returns ``(score, θ, fov, evaluations)``."""
    cache: dict[tuple[float, float], float] = {}

    def cached(t: float, p: float) -> float:
        key = (round(t, 4), round(p, 4))
        if key not in cache:
            cache[key] = value(float(np.clip(t, -89, 89)), float(np.clip(p, 3, 120)))
        return cache[key]

    best = cached(theta, phi)
    while max(step_theta if free_theta else 0, step_phi if free_phi else 0) >= min_step:
        moves = [(dt, dp) for dt in (-step_theta, 0, step_theta) for dp in (-step_phi, 0, step_phi)
                 if (dt or dp) and (free_theta or not dt) and (free_phi or not dp)]
        candidates = [(cached(theta + dt, phi + dp), theta + dt, phi + dp) for dt, dp in moves]
        top = min(candidates)
        if top[0] < best:
            best, theta, phi = top
        else:
            step_theta, step_phi = step_theta / 2.0, step_phi / 2.0
    # The compass grid leaves up to half its last step; a parabola through the last neighbours places the
    # minimum between them (each axis on its own: the two barely interact near the optimum).
    h_theta, h_phi = 2.0 * step_theta, 2.0 * step_phi
    t, p = theta, phi
    if free_theta:
        t += _vertex(cached(theta - h_theta, phi), best, cached(theta + h_theta, phi), h_theta)
    if free_phi:
        p += _vertex(cached(t, phi - h_phi), cached(t, phi), cached(t, phi + h_phi), h_phi)
    if cached(t, p) <= best:
        best, theta, phi = cached(t, p), t, p
    return best, float(np.clip(theta, -89, 89)), float(np.clip(phi, 3, 120)), len(cache)


def _vertex(left: float, centre: float, right: float, h: float) -> float:
    """Offset of the minimum of the parabola through ``(−h, left), (0, centre), (h, right)``, within ±h/2."""
    curvature = left - 2.0 * centre + right
    if curvature <= 1e-12:
        return 0.0
    return float(np.clip(h * (left - right) / (2.0 * curvature), -h / 2.0, h / 2.0))
