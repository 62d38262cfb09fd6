"""The surface of revolution that unchanging outlines describe, to hold tracked points on.

An object whose outline looks the same from every side of the turn (a bottle, a vase) is a solid of revolution
about the orbit's vertical axis, and its outlines tell its radius at every height but nothing of the frames'
azimuths: those rest on tracked texture alone. Tracks on a soft texture slide a little, and the bundle
adjustment then trades each point's depth against the steps of the turn: the tune bottle's tracked azimuths
came out 20° off on average, 39° at worst, while fitting their tracks to 1.2 px. A point on the surface is at
the profile's radius from the axis, which pins its depth, and so the steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ReconstructionError
from ..orbit import Cameras, spread_views
from .hull import object_bounds
from .silhouettes import SilhouetteField, downsized

SIZE = 256  # pixels along the masks' longer side
VIEWS = 12  # views whose hull gives the profile: the outlines are the same from every side
LEVELS = 96  # heights
RADIAL_SAMPLES = 128  # field samples outward from the axis at each height
DIRECTIONS = 8  # directions about the axis whose crossings are averaged (median)


@dataclass(frozen=True)
class RevolutionProfile:
    """The radius ``radius (L,)`` of the surface about the vertical axis at heights ``z (L,)`` (increasing)."""

    z: np.ndarray
    radius: np.ndarray

    def offset(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(M,)`` distances of ``points (M, 3)`` from the axis beyond the surface's radius at their heights, and
        their gradients ``(M, 3)``. Beyond the profile's ends the radius is the end's."""
        rho = np.maximum(np.hypot(points[:, 0], points[:, 1]), 1e-9)
        radius = np.interp(points[:, 2], self.z, self.radius)
        within = (points[:, 2] > self.z[0]) & (points[:, 2] < self.z[-1])
        slope = np.where(within, np.interp(points[:, 2], self.z, np.gradient(self.radius, self.z)), 0.0)
        gradient = np.stack([points[:, 0] / rho, points[:, 1] / rho, -slope], axis=1)
        return rho - radius, gradient


def revolution_profile(masks: np.ndarray, cameras: Cameras) -> RevolutionProfile | None:
    """The profile of the hull of ``masks`` under ``cameras``: at each height, where its field crosses zero going
    out from the axis (interpolated between samples: sub-sample exact), the median over a few directions. None when
    the hull is empty or fewer than three heights hold it in every direction."""
    small = downsized(masks, SIZE)
    field = SilhouetteField(small, cameras, spread_views(VIEWS, len(masks)))
    try:
        lo, hi = object_bounds(field)
    except ReconstructionError:  # no hull: no surface to hold points to (the bundle adjustment's poses stand)
        return None
    reach = float(np.hypot(np.abs([lo[0], hi[0]]).max(), np.abs([lo[1], hi[1]]).max()))
    z = np.linspace(lo[2], hi[2], LEVELS)
    rho = np.linspace(0.0, reach, RADIAL_SAMPLES)
    angle = np.linspace(0.0, 2.0 * np.pi, DIRECTIONS, endpoint=False)
    a, h, r = np.meshgrid(angle, z, rho, indexing="ij")
    values = field(np.stack([r * np.cos(a), r * np.sin(a), h], axis=-1).reshape(-1, 3)).reshape(a.shape)
    inside = values >= 0.0
    # The outermost sample inside, and the crossing between it and the next one out.
    last = RADIAL_SAMPLES - 1 - np.argmax(inside[..., ::-1], axis=-1)
    found = inside.any(axis=-1)
    nxt = np.minimum(last + 1, RADIAL_SAMPLES - 1)
    v0 = np.take_along_axis(values, last[..., None], -1)[..., 0]
    v1 = np.take_along_axis(values, nxt[..., None], -1)[..., 0]
    share = np.where(nxt > last, v0 / np.maximum(v0 - v1, 1e-9), 0.0)
    crossing = np.where(found, rho[last] + np.clip(share, 0.0, 1.0) * (rho[1] - rho[0]), np.nan)
    held = found.all(axis=0)
    if held.sum() < 3:
        return None
    return RevolutionProfile(z[held], np.median(crossing[:, held], axis=0))
