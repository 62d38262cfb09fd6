"""Per-frame cameras: every frame's own azimuth, elevation and distance, from feature tracks.

A generated orbit is not a turntable (REFERENCE.md §4): its angular speed drifts, the total turn is not exactly
360°, and each frame jitters and zooms a little. Frame ``k``'s camera sits at azimuth ``φ_k``, elevation
``Θ + δ_k`` and distance ``R·(1 + ζ_k)`` (zoom as a dolly), looking at the origin with +Z up; all frames share
the field of view. One bundle adjustment over every frame fits these and the tracked points' positions to the
tracks, starting from the calibrated uniform orbit: Levenberg-Marquardt on the reduced camera system (points
eliminated by their 3×3 blocks, the textbook sparse bundle adjustment), Huber-weighted, with an exact Jacobian.
``scipy.optimize.least_squares`` solves the same problem but its iterative inner solver took ten times longer
here. Points tracked through three or more frames, and tracks that close the loop, pin the steps far better
than two-view geometry can.

Gauges: ``φ_0`` is the start azimuth (the object's heading) and ``R`` the radius (the scale). Priors keep what the
tracks cannot see in check: the jitter is small (``δ_k``: 1°, ``ζ_k``: 2 %), the speed changes smoothly (second
differences of ``φ``: half a mean step), and the field of view stays near the silhouettes' estimate (within its
uncertainty). The posterior standard deviations (Gauss-Newton, points marginalised) are every estimate's confidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import sparse
from threadpoolctl import threadpool_limits

from ..errors import ReconstructionError
from ..orbit import DEFAULT_FOV_DEG, Cameras, Orbit, focal_from_fov
from .calibration import (
    UNDETERMINED_DEG,
    OutlineScore,
    calibrate_orbit,
    fine_outline_score,
    polish_orbit,
    refine_with_cameras,
)
from .drift import silhouette_drift
from .revolution import RevolutionProfile, revolution_profile
from .tracks import Tracks, track_features

MIN_TRACKS = 30  # fewer tracks than this cannot pin every frame: the uniform orbit stays
MIN_FRAME_OBSERVATIONS = 6  # a frame seen by fewer tracked points has its azimuth from the priors alone
PIXEL_SIGMA = 1.0  # pixels (full size): the observations' noise
HUBER = 2.0  # in PIXEL_SIGMA: residuals beyond this count linearly (false matches, sliding tracks)
OUTLIER_PX = 4.0  # observations this far off after the first fit are dropped
MAX_ITERATIONS = 40
FRAME0_GAUGE = 1e-5  # a known frame 0 keeps its elevation (radians) and distance (relative) to this
ELEVATION_JITTER_DEG = 1.0
ZOOM_JITTER = 0.02
SPEED_CHANGE = 0.5  # second difference of the azimuth, as a share of the mean step (weak: drift is real)
MAX_POINTS = 600  # each frame's longest tracks are kept up to this many: cost grows with them, accuracy barely
FLOW_AGREEMENT = 0.8  # share of frame pairs whose tracks must move the same way to fix the direction
DIRECTION_MARGIN = 0.15  # the other direction must score this much worse (relative) for the silhouettes to decide
PRIOR_ELEVATION_DEG = 0.0  # REFERENCE.md §4: the training orbits start from an eye-level view
UNMEASURED_STD_DEG = UNDETERMINED_DEG / 2.0  # nothing told the values apart: the prior is used
# A generated orbit's frames advance: jitter and drift may stall a step (85 frames: steps from about 0.2 of the mean
# up), but a step back by more than this share of the mean step is no turn.
MAX_BACKSTEP_SHARE = 0.5
MAX_TURN_ERROR_DEG = 45.0  # generated turns miss 360° by far less
# Nor does one step leap ahead: a generated drift changes a step by at most about 40 % of the mean, jitter by a few
# tenths of a degree; a fit that stands still and then jumps (features fixed to the light) is no turn.
MAX_STEP_SHARE = 3.0
UNCERTAIN_STD_DEG = 4.0  # a measured value this unsure is kept, with a warning
AZIMUTH_BLIND_PX = 0.1  # outlines that fit shuffled azimuths within this of the even turn cannot check azimuths
REJECTED_TRACKS_STD_DEG = 6.0  # the tracks' elevation when their poses gave way to the even turn: uncertain
# How much better than the even turn (or the tracked poses) a silhouette drift must fit the outlines to replace
# it. Tracked poses only need to fit no worse than the even turn: where they fit worse, even slightly (a chair's
# sparse tracks: 6 % worse, up to 11° off), they are wrong, and on a true turntable the even turn is the truth.
REFEREE_PX, REFEREE_SHARE = 0.02, 0.1
TRACK_PRIOR_DEG = 10.0  # how far the bundle adjustment may move the silhouettes' elevation and fov
# The bundle adjustment's own standard deviation of the elevation leaves out its model's error (zoom taken as a
# dolly, tracks that slide a little): a floor, from the tune scenes' generated-like orbits (errors up to 1.4°).
TRACK_FLOOR_DEG = 1.0
# How far a tracked point may lie off the surface of revolution that unchanging outlines describe, as a share of its
# largest radius (about a pixel of the masks). Chosen on the tune bottle (generated-like; capture, hints and frames
# alone): shares from 0.005 to 0.04 all gave mean azimuth errors of 1.9–2.4° (worst 5.6–6.8°), against 20° (39°)
# without the surface.
SURFACE_SIGMA = 0.02


def tracked_elevation_std(fit: FrameCameras, silhouettes_deg: float | None) -> float:
    """The tracks' elevation's standard deviation: the bundle adjustment's own, at least ``TRACK_FLOOR_DEG``, and
    at least its distance from the silhouettes' measurement on the same poses when there is one: two measurements
    that disagree beyond the tracks' spread show a model error of about that size, and the surer one is then
    taken."""
    std = max(fit.elevation_std_deg, TRACK_FLOOR_DEG)
    return std if silhouettes_deg is None else max(std, abs(fit.elevation_deg - silhouettes_deg))


@dataclass
class FrameCameras:
    """The bundle adjustment's result: cameras and their uncertainty (standard deviations)."""

    cameras: Cameras
    azimuth_deg: np.ndarray  # (N,) unwrapped
    elevation_deg: float  # Θ, the mean elevation
    fov_deg: float
    azimuth_std_deg: np.ndarray  # (N,) per frame
    elevation_std_deg: float
    fov_std_deg: float
    rms_px: float  # reprojection error of the inlier observations
    tracks: int
    observations: int
    pinned: np.ndarray  # (N,) bool: frames that enough tracked points see


def adjust_cameras(tracks: Tracks, orbit: Orbit, width: int, height: int, elevation_std_deg: float = 90.0,
                   fov_std_deg: float = 5.0, frame0: bool = False, surface: RevolutionProfile | None = None
                   ) -> FrameCameras | None:
    """Per-frame cameras fitted to ``tracks``, starting from the uniform ``orbit``; None with too few tracks.

    ``elevation_std_deg`` / ``fov_std_deg``: how far the mean elevation and the field of view may leave
    ``orbit``'s (their prior uncertainty: small when given, the silhouettes' when estimated). ``frame0``: the
    orbit's elevation, radius and fov are frame 0's own camera (the capture the orbit was generated from), so frame
    0 carries no jitter or zoom of its own and the others' are measured from it; else from the frames' mean.
    ``surface``: the surface of revolution the tracked points lie on (``revolution.py``), when the outlines say so.
    """
    tracks = _strongest(tracks, MAX_POINTS)
    if tracks.count < MIN_TRACKS:
        return None
    n = orbit.num_frames
    priors = (orbit.elevation_deg, elevation_std_deg, orbit.fov_deg, fov_std_deg, frame0, surface)
    problem = _Problem(tracks, n, orbit.radius, width, height, *priors)
    with threadpool_limits(1):  # small dense blocks: BLAS threads only fight over the cores
        return _adjust(problem, tracks, orbit, width, height, priors)


def _adjust(problem: _Problem, tracks: Tracks, orbit: Orbit, width: int, height: int,
            priors: tuple) -> FrameCameras | None:
    n = orbit.num_frames
    x = problem.solve(problem.initial(orbit))
    # Observations the robust loss gave up on (false matches, tracks that slid) are dropped and the fit repeated
    # once from there.
    reproj = problem.reprojection(x)
    inlier = np.hypot(reproj[:, 0], reproj[:, 1]) < OUTLIER_PX
    if inlier.mean() < 0.98:
        kept = _subset(tracks, inlier)
        if kept.count < MIN_TRACKS:
            return None
        refit = _Problem(kept, n, orbit.radius, width, height, *priors)
        refit.phi0 = problem.phi0
        x = refit.solve(refit.start(x[:problem.cam_params]))
        problem, tracks = refit, kept
    phi, theta_mean, delta, zeta, fov = problem.unpack(x)
    std = problem.camera_std(x)
    cameras = Cameras.on_sphere(np.degrees(phi), np.degrees(theta_mean + delta), orbit.radius * (1.0 + zeta),
                                math.degrees(fov))
    reproj = problem.reprojection(x)
    observed = np.bincount(tracks.frame, minlength=n)
    return FrameCameras(
        cameras=cameras, azimuth_deg=np.degrees(phi), elevation_deg=math.degrees(theta_mean),
        fov_deg=math.degrees(fov), azimuth_std_deg=std["azimuth"], elevation_std_deg=std["elevation"],
        fov_std_deg=std["fov"], rms_px=float(np.sqrt(np.mean(reproj**2) * 2.0)), tracks=tracks.count,
        observations=len(tracks.frame), pinned=observed >= MIN_FRAME_OBSERVATIONS,
    )


class _Problem:
    """Parameters ``[φ_1..φ_{N−1}, δ_0..δ_{N−1}, ζ_0..ζ_{N−1}, Θ, fov, X (3P)]`` (angles in radians) and residuals.

    Gauges: ``Θ`` and ``R`` are the frames' mean elevation and distance (``δ``, ``ζ`` average to zero), or frame 0's
    own with ``frame0`` (``δ_0 = ζ_0 = 0``). With a ``surface``, each point's distance from it is a residual too."""

    def __init__(self, tracks: Tracks, n: int, radius: float, width: int, height: int, elevation_deg: float,
                 elevation_std_deg: float, fov_deg: float, fov_std_deg: float, frame0: bool = False,
                 surface: RevolutionProfile | None = None) -> None:
        self.tracks, self.n, self.radius, self.frame0 = tracks, n, radius, frame0
        self.surface = surface
        self.surface_sigma = SURFACE_SIGMA * float(surface.radius.max()) if surface is not None else 0.0
        self.width, self.height = width, height
        self.theta_prior, self.theta_std = math.radians(elevation_deg), math.radians(max(elevation_std_deg, 1e-3))
        self.fov_prior, self.fov_std = math.radians(fov_deg), math.radians(max(fov_std_deg, 1e-3))
        self.cam_params = 3 * n + 1
        self.speed_change_deg = SPEED_CHANGE * 360.0 / n
        self.phi0 = 0.0
        self.obs = len(tracks.frame)

    def initial(self, orbit: Orbit) -> np.ndarray:
        phi = np.radians(orbit.azimuths_deg())
        self.phi0 = phi[0]
        return self.start(np.concatenate([phi[1:], np.zeros(2 * self.n), [math.radians(orbit.elevation_deg)],
                                          [self.fov_prior]]))

    def start(self, cams: np.ndarray) -> np.ndarray:
        """Camera parameters and the points triangulated under them."""
        return np.concatenate([cams, self._triangulate(cams).ravel()])

    def unpack(self, x: np.ndarray):
        n = self.n
        phi = np.concatenate([[self.phi0], x[:n - 1]])
        delta, zeta = x[n - 1:2 * n - 1], x[2 * n - 1:3 * n - 1]
        theta_mean, fov = x[3 * n - 1], x[3 * n]
        return phi, theta_mean, delta, zeta, fov

    def points(self, x: np.ndarray) -> np.ndarray:
        return x[self.cam_params:].reshape(-1, 3)

    def _axes(self, x: np.ndarray):
        phi, theta_mean, delta, zeta, fov = self.unpack(x)
        theta = theta_mean + delta
        sp, cp, st, ct = np.sin(phi), np.cos(phi), np.sin(theta), np.cos(theta)
        zero = np.zeros_like(sp)
        right = np.stack([cp, sp, zero], 1)
        up = np.stack([-sp * st, cp * st, ct], 1)
        forward = np.stack([-sp * ct, cp * ct, -st], 1)  # toward the origin
        distance = self.radius * (1.0 + zeta)
        return right, up, forward, distance, focal_from_fov(math.degrees(fov), self.width, self.height)

    def reprojection(self, x: np.ndarray) -> np.ndarray:
        """``(M, 2)`` predicted minus observed pixels."""
        right, up, forward, distance, f = self._axes(x)
        k, p = self.tracks.frame, self.points(x)[self.tracks.point]
        depth = np.einsum("mj,mj->m", p, forward[k]) + distance[k]
        depth = np.where(depth > 1e-3, depth, 1e-3)
        u = self.width / 2.0 + f * np.einsum("mj,mj->m", p, right[k]) / depth
        v = self.height / 2.0 - f * np.einsum("mj,mj->m", p, up[k]) / depth
        return np.stack([u, v], 1) - self.tracks.pixel

    def residuals(self, x: np.ndarray) -> np.ndarray:
        n = self.n
        phi, _, delta, zeta, _ = self.unpack(x)
        priors = [
            np.degrees(delta) / ELEVATION_JITTER_DEG,
            zeta / ZOOM_JITTER,
            [self._gauge(zeta)],  # the radius is the scale gauge
            [self._gauge(delta)],  # Θ is the (mean) elevation: a given one is kept
            np.degrees(np.diff(phi, 2)) / self.speed_change_deg if n > 2 else [],
            [(x[3 * n - 1] - self.theta_prior) / self.theta_std],
            [(x[3 * n] - self.fov_prior) / self.fov_std],
        ]
        if self.surface is not None:
            priors.append(self.surface.offset(self.points(x))[0] / self.surface_sigma)
        return np.concatenate([self.reprojection(x).ravel() / PIXEL_SIGMA, *map(np.ravel, priors)])

    def _gauge(self, offsets: np.ndarray) -> float:
        """The gauge residual of per-frame offsets (δ or ζ): frame 0's (held exactly: it is known) or their mean."""
        return offsets[0] / FRAME0_GAUGE if self.frame0 else float(np.mean(offsets)) / 1e-3

    def jacobian(self, x: np.ndarray) -> sparse.csr_matrix:
        """The residuals' exact Jacobian (sparse: each observation sees one camera, one point and the shared Θ, fov)."""
        n, m = self.n, self.obs
        right, up, forward, distance, f = self._axes(x)
        phi, theta_mean, delta, _, fov = self.unpack(x)
        k, j = self.tracks.frame, self.tracks.point
        p = self.points(x)[j]
        a = np.einsum("mj,mj->m", p, right[k])
        b = np.einsum("mj,mj->m", p, up[k])
        depth = np.einsum("mj,mj->m", p, forward[k]) + distance[k]
        depth = np.where(depth > 1e-3, depth, 1e-3)
        sp, cp = np.sin(phi[k]), np.cos(phi[k])
        theta = theta_mean + delta[k]
        st, ct = np.sin(theta), np.cos(theta)
        zero = np.zeros(m)

        def d_uv(da: np.ndarray, db: np.ndarray, dd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            scale = f / (PIXEL_SIGMA * depth**2)  # observations are in units of PIXEL_SIGMA
            return scale * (da * depth - a * dd), -scale * (db * depth - b * dd)

        # ∂/∂φ: the axes turn about +Z; ∂/∂θ: up → forward, forward → −up, right fixed.
        d_right_phi = np.stack([-sp, cp, zero], 1)
        d_up_phi = np.stack([-cp * st, -sp * st, zero], 1)
        d_fwd_phi = np.stack([-cp * ct, -sp * ct, zero], 1)
        j_phi = d_uv(*(np.einsum("mj,mj->m", p, d) for d in (d_right_phi, d_up_phi, d_fwd_phi)))
        j_theta = d_uv(zero, depth - distance[k], -b)
        j_zeta = d_uv(zero, zero, np.full(m, self.radius))
        half = fov / 2.0
        df = -(max(self.width, self.height) / 4.0) / math.sin(half) ** 2
        j_fov = (a / depth * df / PIXEL_SIGMA, -b / depth * df / PIXEL_SIGMA)
        j_point = [d_uv(right[k][:, i], up[k][:, i], forward[k][:, i]) for i in range(3)]

        rows, cols, vals = [], [], []

        def put(r, c, v) -> None:
            rows.append(np.broadcast_to(r, np.shape(v)).ravel())
            cols.append(np.broadcast_to(c, np.shape(v)).ravel())
            vals.append(np.ravel(v))

        moving = k > 0
        for axis in range(2):
            r = 2 * np.arange(m) + axis
            put(r[moving], k[moving] - 1, j_phi[axis][moving])
            put(r, n - 1 + k, j_theta[axis])
            put(r, 2 * n - 1 + k, j_zeta[axis])
            put(r, np.full(m, 3 * n - 1), j_theta[axis])
            put(r, np.full(m, 3 * n), j_fov[axis])
            for i in range(3):
                put(r, self.cam_params + 3 * j + i, j_point[i][axis])
        row = 2 * m
        put(row + np.arange(n), n - 1 + np.arange(n), np.full(n, math.degrees(1.0) / ELEVATION_JITTER_DEG))
        row += n
        put(row + np.arange(n), 2 * n - 1 + np.arange(n), np.full(n, 1.0 / ZOOM_JITTER))
        row += n
        gauge = np.eye(n)[0] / FRAME0_GAUGE if self.frame0 else np.full(n, 1.0 / (n * 1e-3))
        put(np.full(n, row), 2 * n - 1 + np.arange(n), gauge)
        put(np.full(n, row + 1), n - 1 + np.arange(n), gauge)
        row += 2
        scale = math.degrees(1.0) / self.speed_change_deg
        for i, w in enumerate((1.0, -2.0, 1.0)):  # φ_{r} − 2φ_{r+1} + φ_{r+2}; φ_0 is fixed
            c = np.arange(max(n - 2, 0)) + i
            ok = c > 0
            put(row + np.arange(max(n - 2, 0))[ok], c[ok] - 1, np.full(ok.sum(), w * scale))
        row += max(n - 2, 0)
        put(np.array([row, row + 1]), np.array([3 * n - 1, 3 * n]), 1.0 / np.array([self.theta_std, self.fov_std]))
        row += 2
        if self.surface is not None:  # each point's distance from the surface depends on that point alone
            count = self.tracks.count
            gradient = self.surface.offset(self.points(x))[1] / self.surface_sigma
            put(np.repeat(row + np.arange(count), 3), self.cam_params + np.arange(3 * count), gradient.ravel())
            row += count
        r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
        return sparse.csr_matrix((v, (r, c)), shape=(row, self.cam_params + 3 * self.tracks.count))

    def _triangulate(self, cams: np.ndarray) -> np.ndarray:
        """Each track's point closest to all its rays (least squares), under the cameras in ``cams``."""
        right, up, forward, distance, f = self._axes(np.concatenate([cams, np.zeros(3 * self.tracks.count)]))
        k = self.tracks.frame
        x = (self.tracks.pixel[:, 0] - self.width / 2.0) / f
        y = -(self.tracks.pixel[:, 1] - self.height / 2.0) / f
        rays = forward[k] + x[:, None] * right[k] + y[:, None] * up[k]
        rays /= np.linalg.norm(rays, axis=1, keepdims=True)
        origins = -distance[k, None] * forward[k]
        proj = np.eye(3)[None] - rays[:, :, None] * rays[:, None, :]
        a = np.zeros((self.tracks.count, 3, 3))
        b = np.zeros((self.tracks.count, 3))
        np.add.at(a, self.tracks.point, proj)
        np.add.at(b, self.tracks.point, np.einsum("mij,mj->mi", proj, origins))
        a += 1e-6 * np.eye(3)[None]  # a track along one ray stays near the orbit centre
        return np.linalg.solve(a, b[..., None])[..., 0]

    def normal_equations(self, x: np.ndarray, damping: float = 0.0):
        """Gauss-Newton system with robust (Huber) weights, points eliminated: the reduced camera matrix ``S``,
        its right-hand side, and what back-substitution needs."""
        r = self.residuals(x)
        jac = self.jacobian(x)
        weight = np.ones(len(r))
        obs = np.hypot(r[0:2 * self.obs:2], r[1:2 * self.obs:2])
        weight[:2 * self.obs] = np.repeat(np.minimum(1.0, HUBER / np.maximum(obs, 1e-12)), 2)
        cp, count = self.cam_params, self.tracks.count
        weighted = (sparse.diags(weight) @ jac).tocsc()
        jac = jac.tocsc()
        g = jac.T @ (weight * r)
        jc, jp, wc, wp = jac[:, :cp], jac[:, cp:], weighted[:, :cp], weighted[:, cp:]
        a = (jc.T @ wc).toarray()
        b = (jc.T @ wp).toarray()
        blocks = (jp.T @ wp).tocoo()  # block diagonal: each observation sees one point
        c = np.zeros((count, 3, 3))
        np.add.at(c, (blocks.row // 3, blocks.row % 3, blocks.col % 3), blocks.data)
        if damping:
            a = a + damping * np.diag(np.diag(a))
            c = c + damping * np.einsum("pii->pi", c)[:, :, None] * np.eye(3)[None]
        c_inv = np.linalg.inv(c + 1e-9 * np.eye(3)[None])
        b_c_inv = np.einsum("cpi,pij->cpj", b.reshape(cp, count, 3), c_inv).reshape(cp, -1)
        schur = a - b_c_inv @ b.T
        rhs = g[:cp] - b_c_inv @ g[cp:]
        return schur, rhs, b, c_inv, g, r, weight

    def cost(self, x: np.ndarray) -> float:
        """Huber cost of the residuals (observations robust, priors quadratic)."""
        r = self.residuals(x)
        obs = np.hypot(r[0:2 * self.obs:2], r[1:2 * self.obs:2])
        huber = np.where(obs <= HUBER, 0.5 * obs**2, HUBER * (obs - 0.5 * HUBER))
        return float(huber.sum() + 0.5 * np.sum(r[2 * self.obs:] ** 2))

    def solve(self, x: np.ndarray) -> np.ndarray:
        """Levenberg-Marquardt on the reduced camera system (the classic sparse bundle adjustment)."""
        damping, cost = 1e-3, self.cost(x)
        cp, count = self.cam_params, self.tracks.count
        for _ in range(MAX_ITERATIONS):
            schur, rhs, b, c_inv, g, _, _ = self.normal_equations(x, damping)
            try:
                step_c = np.linalg.solve(schur, -rhs)
            except np.linalg.LinAlgError:
                damping *= 10.0
                continue
            step_p = -np.einsum("pij,pj->pi", c_inv, (g[cp:] + b.T @ step_c).reshape(count, 3)).ravel()
            trial = x + np.concatenate([step_c, step_p])
            new_cost = self.cost(trial)
            if new_cost < cost:
                converged = cost - new_cost < 1e-6 * cost
                x, cost, damping = trial, new_cost, max(damping / 3.0, 1e-7)
                if converged:
                    break
            else:
                damping *= 5.0
                if damping > 1e6:
                    break
        return x

    def camera_std(self, x: np.ndarray) -> dict:
        """Posterior standard deviations of the camera parameters (Gauss-Newton, points marginalised).

        The residuals are in units of their standard deviations (PIXEL_SIGMA), so no rescaling."""
        schur = self.normal_equations(x)[0]
        var = np.clip(np.diag(np.linalg.pinv(schur)), 0.0, None)
        n = self.n
        return {"azimuth": np.degrees(np.sqrt(np.concatenate([[0.0], var[:n - 1]]))),
                "elevation": math.degrees(math.sqrt(var[3 * n - 1])),
                "fov": math.degrees(math.sqrt(var[3 * n]))}


def _strongest(tracks: Tracks, limit: int) -> Tracks:
    """At most ``limit`` tracks, the longest first but with every frame's share: each frame keeps its own longest
    ones, so that no stretch of the turn is left to the priors."""
    if tracks.count <= limit:
        return tracks
    lengths = tracks.lengths()
    n = int(tracks.frame.max()) + 1
    order = np.lexsort((-lengths[tracks.point], tracks.frame))  # by frame, then longest first
    frame, point = tracks.frame[order], tracks.point[order]
    rank = np.arange(len(order)) - np.searchsorted(frame, frame)
    quota = max(2, limit // n)
    while True:  # the largest per-frame quota that stays within the limit
        keep = np.zeros(tracks.count, bool)
        keep[point[rank < 2 * quota]] = True
        if keep.sum() > limit:
            break
        quota *= 2
    keep = np.zeros(tracks.count, bool)
    keep[point[rank < quota]] = True
    return _subset(tracks, keep[tracks.point])


def _subset(tracks: Tracks, observations: np.ndarray) -> Tracks:
    """The tracks made of the selected observations, renumbered; tracks left with fewer than 2 are dropped."""
    frame, point, pixel = tracks.frame[observations], tracks.point[observations], tracks.pixel[observations]
    long_enough = np.bincount(point, minlength=tracks.count) >= 2
    keep = long_enough[point]
    frame, point, pixel = frame[keep], point[keep], pixel[keep]
    _, point = np.unique(point, return_inverse=True)
    return Tracks(frame, point, pixel, int(point.max()) + 1 if len(point) else 0, tracks.flow)


@dataclass
class CameraEstimate:
    """Every frame's camera with the shared orbit parameters, how sure each estimate is, and the warnings."""

    orbit: Orbit  # the shared parameters (mean elevation, fov, direction, loop) as a uniform orbit
    cameras: Cameras
    confidence: dict  # per parameter: value, standard deviation (degrees) and where it came from
    warnings: list[dict]
    report: dict  # for the manifest


def estimate_cameras(rgb: np.ndarray, masks: np.ndarray, base: Orbit, *, elevation: float | None = None,
                     fov: float | None = None, direction: int | None = None, closed: bool | None = None,
                     per_frame: bool = True, frame0: bool = False) -> CameraEstimate:
    """Shared orbit parameters from the silhouettes, then each frame's own pose from feature tracks.

    1 silhouettes → a uniform orbit (elevation, fov, direction, loop); 2 tracks → the direction, where the
    silhouettes cannot tell it; 3 bundle adjustment → every frame's pose; 4 silhouettes again, on those poses →
    the shared elevation and fov, and how sure they are; 5 priors for what nothing measured, with warnings.
    Parameters given (not None) are kept; ``frame0``: they are frame 0's own camera (see ``adjust_cameras``).
    """
    given = {"elevation": elevation, "fov": fov, "direction": direction, "closed": closed}
    # Without per-frame poses the uniform orbit is the answer: polish it now; else only if the referee keeps it.
    cal = calibrate_orbit(masks, base, rgb, **given, polish=not per_frame)
    orbit = cal.orbit
    h, w = masks.shape[1:3]
    report: dict = {"silhouette_score_px": round(cal.score, 4), "evaluations": cal.evaluations}
    tracks = track_features(rgb, masks) if per_frame else None

    direction_source = "given" if direction is not None else "silhouettes"
    report["silhouette_direction_margin"] = round(cal.direction_margin, 4)
    if tracks is not None and direction is None and cal.direction_margin < DIRECTION_MARGIN:
        # Only where the silhouettes cannot tell: the flow's rule (the near side moves against the camera) fails
        # where a concave inside shows (a cup from above: its far inner wall moves the other way).
        flow_direction, agreement = _flow_direction(tracks, masks.shape[0])
        report["flow_direction_agreement"] = round(agreement, 3)
        if agreement >= FLOW_AGREEMENT:
            direction_source = "tracks"
            if flow_direction != orbit.direction:
                cal = calibrate_orbit(masks, base, rgb, **{**given, "direction": flow_direction}, polish=False)
                orbit = cal.orbit
    if direction_source == "silhouettes" and cal.direction_margin < DIRECTION_MARGIN:
        direction_source = "prior"
        orbit = replace(orbit, direction=1)

    uncertainty = dict(cal.uncertainty)
    report["on_even_turn"] = _measurement(orbit.elevation_deg, orbit.fov_deg, uncertainty)
    fit = None
    if tracks is not None:
        report.update(tracks=tracks.count, observations=len(tracks.frame))
        fit = adjust_cameras(tracks, orbit, w, h, _prior_std(elevation, uncertainty["elevation_deg"]),
                             _prior_std(fov, uncertainty["fov_deg"]), frame0)
        if fit is not None and not _one_turn(fit, orbit):
            # Features fixed to the world, not the object (shading on an untextured body), describe no turn.
            report["tracks_rejected"] = "the tracked poses do not make one turn in one direction"
            fit = None
    tracked = {"elevation_deg": math.inf, "fov_deg": math.inf}
    cameras_at, by_tracks = None, {}
    theta, phi = orbit.elevation_deg, orbit.fov_deg
    if fit is not None:
        free_theta, free_phi = elevation is None, fov is None
        if free_theta or free_phi:
            # The tracks give the poses' shape; the silhouettes place the shared elevation and fov where they can.
            score, theta, phi, found = refine_with_cameras(masks, _family(fit), fit.elevation_deg, fit.fov_deg,
                                                           free_theta, free_phi)
            report["silhouette_score_px"] = round(score, 4)
            report["on_tracked_poses"] = _measurement(theta, phi, found)
            uncertainty.update({k: v for k, v in found.items() if (free_theta, free_phi)[k == "fov_deg"]})
            if min(uncertainty.values()) < UNDETERMINED_DEG:
                # The steps trade off against the fov (and the elevation) on short tracks: fit again around the
                # silhouettes' values.
                again = _orbit_at(orbit, theta, phi)
                fit = adjust_cameras(tracks, again, w, h, _prior_std(elevation, uncertainty["elevation_deg"]),
                                     1e-3, frame0) or fit
        cameras_at = _family(fit)
        by_tracks = {"elevation_deg": fit.elevation_deg, "fov_deg": fit.fov_deg}
        # The tracks pin the elevation but hardly the fov (it trades off against the steps): the fov is the
        # silhouettes' (or the prior).
        measured = elevation is None and uncertainty["elevation_deg"] < UNDETERMINED_DEG
        tracked = {"elevation_deg": tracked_elevation_std(fit, theta if measured else None), "fov_deg": math.inf}
        report.update(rms_px=round(fit.rms_px, 3), tracks_used=fit.tracks,
                      total_turn_deg=round(float(abs(fit.azimuth_deg[-1] - fit.azimuth_deg[0])), 3))

    confidence = {"direction": {"value": orbit.direction, "source": direction_source}}
    for name, value, was_given in (("elevation_deg", theta, elevation), ("fov_deg", phi, fov)):
        if was_given is not None:
            confidence[name] = {"value": float(was_given), "std": 0.0, "source": "given"}
        elif uncertainty[name] / 2.0 <= tracked[name]:
            source = "silhouettes" if fit is None else "silhouettes+tracks"
            confidence[name] = {"value": value, "std": uncertainty[name] / 2.0, "source": source}
        else:
            confidence[name] = {"value": by_tracks[name], "std": tracked[name], "source": "tracks"}
    if fit is None:
        # Uniform spacing asked for (a known turntable) is no fallback; found nothing to track, it is.
        confidence["azimuth_deg"] = {"source": "prior" if per_frame else "given"}
        if "tracks_rejected" in report:
            confidence["azimuth_deg"]["tracks"] = "rejected"
    else:
        confidence["azimuth_deg"] = {"std": fit.azimuth_std_deg.round(3).tolist(), "source": "tracks",
                                     "frames_without_tracks": int((~fit.pinned).sum())}
    warnings = _apply_priors(confidence)
    orbit = _confident_orbit(orbit, confidence)
    cameras, referee = orbit.cameras(), None
    if cameras_at is not None:
        # The silhouettes referee: per-frame poses that fit them worse than the uniform orbit does (a perfect
        # turntable with short, sliding tracks; sparse tracks that bend the turn) give way to it.
        # Each side at its own best elevation and fov.
        referee = fine_outline_score(masks)
        per_frame = cameras_at(orbit.elevation_deg, orbit.fov_deg)
        scores = referee.score(per_frame), referee(cal.orbit)
        report.update(per_frame_score_px=round(scores[0], 4), uniform_score_px=round(scores[1], 4))
        if scores[0] <= scores[1]:
            cameras = per_frame
            if _blind_to_azimuth(referee, orbit):
                confidence["azimuth_deg"]["outlines"] = "unchanging"
                held = _held_to_surface(tracks, masks, orbit, per_frame,
                                        _prior_std(elevation, uncertainty["elevation_deg"]), frame0)
                if held is not None:
                    confidence["azimuth_deg"].update(std=held.azimuth_std_deg.round(3).tolist(), surface="revolution")
                    report["surface_rms_px"] = round(held.rms_px, 3)
                    if confidence["elevation_deg"]["source"] == "tracks":
                        # The surface pins the points' depth, and so the elevation too (the tune bottle, from the
                        # frames alone: 9.8° by the tracks alone, 17.2° held, 20.1° true).
                        confidence["elevation_deg"].update(
                            value=held.elevation_deg, std=tracked_elevation_std(held, theta if measured else None))
                        warnings = _apply_priors(confidence)
                        orbit = _confident_orbit(orbit, confidence)
                    # Only the azimuths: the frames' jitter and zoom stay those the referee kept. A profile a pixel
                    # too wide (the masks' edge) would move every frame but the gauge back by as much, and a
                    # mesh so carved is that much off in scale (the tune bottle: F@0.02 1.00 → 0.70).
                    cameras = _family(fit, held.azimuth_deg)(orbit.elevation_deg, orbit.fov_deg)
            else:
                # The tracks hold each frame's own jitter; what they get wrong is smooth (a bent turn, the zoom), and
                # the outlines measure that. From the frames alone it can also absorb the elevation's and fov's
                # errors (the tune cup: 0.80° → 0.94° mean), but the tune objects gain on the whole (suzanne:
                # 1.95° → 0.49°).
                corrected = _smooth_drift(masks, per_frame, orbit.direction, referee, report)
                if corrected is not None:
                    cameras, confidence["azimuth_deg"]["outline_correction"] = corrected
        else:
            cal = polish_orbit(masks, cal, elevation is None, fov is None)
            confidence["azimuth_deg"] = {"source": "silhouettes", "uniform": True}
            for name, value in (("elevation_deg", cal.orbit.elevation_deg), ("fov_deg", cal.orbit.fov_deg)):
                entry, std = confidence[name], cal.uncertainty[name] / 2.0
                if entry["source"] in ("given", "prior"):
                    continue
                if entry["source"] == "tracks":
                    # Poses that gave way make their elevation suspect too, but it may still be the only
                    # measurement (a textured body of revolution, whose outlines tell none): kept, with a warning,
                    # unless the outlines on the even turn are surer.
                    entry["std"] = max(entry["std"], REJECTED_TRACKS_STD_DEG)
                    if std >= entry["std"]:
                        continue
                # Measured by the outlines on the poses that gave way: measured again on the even turn.
                entry.update(value=value, std=std, source="silhouettes")
            # The polished values face the same test as the first ones: what they leave unmeasured is the prior's,
            # in the orbit as in the manifest.
            warnings = _apply_priors(confidence)
            orbit = _confident_orbit(cal.orbit, confidence)
            cameras = orbit.cameras()
    if per_frame and (confidence["azimuth_deg"]["source"] == "prior" or confidence["azimuth_deg"].get("uniform")):
        referee = referee or fine_outline_score(masks)
        drifted = None if _blind_to_azimuth(referee, orbit) else _smooth_drift(masks, orbit.cameras(),
                                                                                 orbit.direction, referee, report)
        if drifted is not None:
            cameras, sizes = drifted
            tracks = "rejected" if confidence["azimuth_deg"].get("uniform") or "tracks_rejected" in report else "none"
            confidence["azimuth_deg"] = {"source": "silhouettes", "drift": True, "tracks": tracks, **sizes}
    warnings += _azimuth_warnings(confidence["azimuth_deg"])
    return CameraEstimate(orbit, cameras, _rounded(confidence), warnings, report)


def _smooth_drift(masks: np.ndarray, base: Cameras, direction: int, referee: OutlineScore, report: dict
                  ) -> tuple[Cameras, dict] | None:
    """``base`` (the even turn or the tracked poses) with the silhouettes' smooth drift and zoom (``drift.py``), and
    their largest sizes, where the outline ``referee`` clearly prefers them to ``base``; else None. Callers skip
    bodies of revolution: there the fitted zoom alone makes the referee prefer a drift whose azimuths are noise
    (the tune bottle at 128²: 7.7° mean error against the even turn's 5.0°)."""
    try:
        drifted = silhouette_drift(masks, base, direction)
    except ReconstructionError:  # the reference views' hull is empty: no drift to fit
        return None
    before, after = referee.score(base), referee.score(drifted)
    report.update(before_drift_score_px=round(before, 4), drift_score_px=round(after, 4))
    if after >= before - max(REFEREE_PX, REFEREE_SHARE * before):
        return None
    (azimuth, _, distance), (azimuth0, _, distance0) = drifted.spherical(), base.spherical()
    return drifted, {"largest_drift_deg": round(float(np.abs(azimuth - azimuth0).max()), 2),
                     "largest_zoom_percent": round(float(np.abs(distance / distance0 - 1.0).max()) * 100.0, 2)}


def _blind_to_azimuth(referee: OutlineScore, orbit: Orbit) -> bool:
    """Whether the outlines cannot tell one azimuth from another (a body of revolution): shuffling the even turn's
    azimuths fits them about as well. Every other object's outlines then fit far worse (0.5 px and more on the
    tune objects, 0.03 px on a bottle)."""
    azimuths = orbit.azimuths_deg()
    shuffled = azimuths.copy()
    shuffled[1:] = np.random.default_rng(0).permutation(azimuths[1:])
    cameras = Cameras.on_sphere(shuffled, orbit.elevation_deg, orbit.radius, orbit.fov_deg)
    return referee.score(cameras) - referee(orbit) < AZIMUTH_BLIND_PX


def _measurement(elevation_deg: float, fov_deg: float, half_widths: dict) -> dict:
    """A silhouette measurement for the report: the values and their standard deviations (half the widths)."""
    return {"elevation_deg": round(elevation_deg, 3), "fov_deg": round(fov_deg, 3),
            **{f"{k}_std": round(v / 2.0, 3) for k, v in half_widths.items()}}


def _orbit_at(orbit: Orbit, elevation_deg: float, fov_deg: float) -> Orbit:
    """``orbit`` with this shared elevation and fov, kept within the calibration's bounds."""
    return replace(orbit, elevation_deg=float(np.clip(elevation_deg, -89, 89)), fov_deg=float(np.clip(fov_deg, 3, 120)))


def _confident_orbit(orbit: Orbit, confidence: dict) -> Orbit:
    """``orbit`` with the elevation and fov that ``confidence`` settled on (measured, given or prior)."""
    return _orbit_at(orbit, confidence["elevation_deg"]["value"], confidence["fov_deg"]["value"])


def _one_turn(fit: FrameCameras, orbit: Orbit) -> bool:
    """Whether the fitted azimuths never step back or leap, and add up to about the orbit's turn."""
    steps = orbit.direction * np.diff(fit.azimuth_deg)
    nominal = 360.0 / orbit.period
    turn = float(np.sum(steps))
    expected = nominal * (orbit.num_frames - 1)
    return bool(steps.min() > -MAX_BACKSTEP_SHARE * nominal and steps.max() < MAX_STEP_SHARE * nominal
                and abs(turn - expected) <= MAX_TURN_ERROR_DEG)


def _held_to_surface(tracks: Tracks, masks: np.ndarray, orbit: Orbit, cameras: Cameras, elevation_std_deg: float,
                     frame0: bool) -> FrameCameras | None:
    """The bundle adjustment again with the tracked points held to the surface of revolution that the outlines
    under ``cameras`` describe (``revolution.py``); None where there is none or the poses describe no turn."""
    surface = revolution_profile(masks, cameras)
    if surface is None:
        return None
    h, w = masks.shape[1:3]
    held = adjust_cameras(tracks, orbit, w, h, elevation_std_deg, 1e-3, frame0, surface)
    if held is None or not _one_turn(held, orbit):
        return None
    return held


def _flow_direction(tracks: Tracks, frames: int) -> tuple[int, float]:
    """The turning direction from the tracks' sideways motion, and the share of frame pairs that agree.

    The visible surface is the near side, which moves against the camera: leftward for a ccw orbit.
    """
    flow = tracks.flow[np.isfinite(tracks.flow) & (np.abs(tracks.flow) > 0.05)]
    if len(flow) < max(3, frames // 4):
        return 1, 0.0
    direction = -1 if np.sum(np.sign(flow)) > 0 else 1
    return direction, float(np.mean(np.sign(flow) == -direction))


def _prior_std(given: float | None, half_width: float) -> float:
    """The bundle adjustment's prior on a shared parameter: tight when given, the silhouettes' when they fix it,
    loose otherwise."""
    if given is not None:
        return 1e-3
    return max(half_width / 2.0, 0.5) if half_width < UNDETERMINED_DEG else TRACK_PRIOR_DEG


def _family(fit: FrameCameras, azimuth_deg: np.ndarray | None = None):
    """``(θ, fov) → Cameras``: the fitted poses with their shared elevation and field of view replaced (and their
    azimuths, given ``azimuth_deg``)."""
    _, elevations, distances = fit.cameras.spherical()
    offsets = elevations - fit.elevation_deg
    azimuth_deg = fit.azimuth_deg if azimuth_deg is None else azimuth_deg

    def cameras_at(theta: float, fov: float) -> Cameras:
        return Cameras.on_sphere(azimuth_deg, theta + offsets, distances, fov)

    return cameras_at


def _apply_priors(confidence: dict) -> list[dict]:
    """Replace a shared parameter that nothing measured by its documented prior; one warning per parameter."""
    warnings = []
    priors = {"elevation_deg": (PRIOR_ELEVATION_DEG, "eye level, where the training orbits start"),
              "fov_deg": (DEFAULT_FOV_DEG, "a typical object-render field of view")}
    for name, (value, why) in priors.items():
        entry = confidence[name]
        label = name.removesuffix("_deg")
        if entry["source"] == "given":
            continue
        if entry["std"] >= UNMEASURED_STD_DEG:
            entry.update(value=value, source="prior")
            warnings.append({"code": "camera_prior", "field": name,
                             "message": f"{label} could not be measured from these frames (neither the outlines "
                                        f"nor tracked texture fix it, as for an untextured body of revolution): "
                                        f"using the prior {value:g}° ({why})"})
        elif entry["std"] > UNCERTAIN_STD_DEG:
            warnings.append({"code": "camera_uncertain", "field": name,
                             "message": f"{label} is only loosely fixed by these frames: "
                                        f"{entry['value']:.1f}° ± {entry['std']:.0f}°"})
    if confidence["direction"]["source"] == "prior":
        warnings.append({"code": "camera_prior", "field": "direction",
                         "message": "the turning direction could not be measured from these frames: assuming "
                                    "counter-clockwise"})
    return warnings


def _azimuth_warnings(entry: dict) -> list[dict]:
    """What the frames' azimuths rest on, when it is not the tracks."""
    warnings = []
    if entry["source"] == "prior":
        why = "the tracked features do not describe one turn" if entry.get("tracks") == "rejected" else \
            "too few surface features to track"
        warnings.append({"code": "camera_prior", "field": "azimuth",
                         "message": f"{why}: frames are assumed evenly spaced around the turn"})
    elif entry.get("drift"):
        why = "too few surface features to track" if entry["tracks"] == "none" else \
            "the tracked features do not describe the turn"
        warnings.append({"code": "camera_uncertain", "field": "azimuth",
                         "message": f"{why}: the frames' azimuths follow the silhouettes as a smooth drift of an "
                                    f"even turn (up to {entry['largest_drift_deg']:.1f}°, with a smooth zoom of up "
                                    f"to {entry['largest_zoom_percent']:.1f} %); each frame's own jitter is not "
                                    "recovered"})
    elif entry.get("uniform"):
        warnings.append({"code": "camera_prior", "field": "azimuth",
                         "message": "the tracked poses fit the silhouettes worse than an even turn: frames are "
                                    "assumed evenly spaced around the turn"})
    elif entry.get("outlines") == "unchanging":
        held = " held to the surface of revolution the outlines describe" if entry.get("surface") else " alone"
        warnings.append({"code": "camera_uncertain", "field": "azimuth",
                         "message": "the outline looks the same from every side (a body of revolution): the frames' "
                                    f"azimuths rest on the tracked texture{held}, which nothing else can check"})
    elif entry.get("frames_without_tracks"):
        count = entry["frames_without_tracks"]
        warnings.append({"code": "camera_prior", "field": "azimuth",
                         "message": f"{count} frames have too few tracked features: their azimuths follow "
                                    "their neighbours' (smooth speed)"})
    return warnings


def _rounded(confidence: dict) -> dict:
    out = {}
    for name, entry in confidence.items():
        out[name] = {k: (round(float(v), 4) if isinstance(v, float | np.floating) else v) for k, v in entry.items()}
    return out
