"""The visual hull as a sampled silhouette field, evaluated coarse-to-fine.

Only grid points near the surface are evaluated exactly at each finer level: elsewhere the field's
sign is already certain from the coarser level (the field changes by at most a few pixels per cell),
so the cost grows with the surface area rather than the volume.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from ..errors import ReconstructionError
from ..orbit import Cameras, project
from .silhouettes import SilhouetteField, signed_distance

FORGIVE_DEG = 5.0  # views within this much azimuth may see a point outside their masks before it dies
POSE_SIGMA_DEG = {False: 0.0, True: 0.5}  # angular pose uncertainty: orbit given / estimated from the frames
OBJECT_EXTENT = 0.2  # typical distance of the surface from the orbit centre, as a fraction of the orbit radius
# Masks that lose parts matching the background each carve away what the others show: their hull leaves 35–46 %
# of a view's foreground unexplained (the tuning object "snowy"), against at most 0.04 % for the other tuning
# objects' masks (clean and generated-like orbits, 128² and 192²).
CONSISTENT = 0.05  # the most a hull of consistent masks leaves unexplained (mean fraction of a view's foreground)
VOTING = 0.22  # fraction of the views that may see a point outside when the masks contradict each other (chosen
# on "snowy": 0.12, 0.17, 0.22, 0.28 gave F@0.02 0.39, 0.50, 0.61, 0.60 with its true orbit)
# Near the surface only the views that see it edge-on can cut it (the others look at it through the object), so
# there a point also dies when this fraction of those views sees it outside. Chosen on the tune objects: snowy
# (colour masks; 0.3 / 0.45 gave F@0.02 0.53 / 0.60 against 0.61 plain) and penguin and ring from their true
# alphas with a part cut from 2 or 4 views' masks (penguin 0.54–0.58 → 0.67–0.72 at 0.45, ring 0.56 → 0.61).
GRAZING_VOTE = 0.45
GRAZING_COS = 0.5  # edge-on: the line of sight within 30° of the surface's tangent plane
NORMAL_CELLS = 64  # grid over the hull for its surface normals
CHECK_GRID = 48  # cells along the object's longest side for the consistency check
# A view whose mask alone cuts away this share of the hull slipped (a matte that lost a part in that frame). The
# tune objects' colour and alpha masks (clean and generated-like, 36 frames): at most 0.016, the box's flat faces,
# which a single edge-on view trims; with a disc of radius 15 % of the object cut from 2 or 4 views' alphas (cup, box,
# torus, ring, penguin): 0.024–0.18.
SLIP_SHARE = 0.02
# Two neighbouring frames may lose the same part: charged also with the points that two views more than the field
# forgives cut, a view slipped beyond this share (tune objects' masks at most 0.029, the box's flat faces again;
# the same disc cut from two neighbouring frames of the cup, torus and penguin: 0.064–0.20).
PAIRED_SHARE = 0.05
SLIP_FLOOR = 0.005  # a smaller cut is no slip however badly the others agree
AGREED = 0.002  # unexplained foreground of masks that agree (the tune objects' at most 0.0008)
MAX_SLIPPED = 0.2  # more views than this share cutting alone is no slip: the masks contradict each other


@dataclass
class Volume:
    """Field samples ``values (nx, ny, nz) float32`` at ``origin + spacing · index`` (world metres)."""

    values: np.ndarray
    origin: np.ndarray
    spacing: float


def forgiving_field(masks: np.ndarray, cameras: Cameras, estimated: bool, forgive: int | None = None,
                    views: np.ndarray | None = None) -> SilhouetteField:
    """The hull's silhouette field, voting: a point dies only when more views than span ``FORGIVE_DEG`` of the
    turn see it outside their masks by more than the pose uncertainty can explain (in pixels at the object).

    Forgiving more views fattens every hull (measured on the tuning objects: 5 % of 36 views costs 0.01–0.03
    of F@0.02), so only one view's slip is forgiven on dense orbits; parts that colour loses in many views are
    the matting's and the mask repair's to keep. ``forgive`` overrides how many views may disagree; ``views``
    (indices) leaves the others out.
    """
    count = len(cameras) if views is None else len(views)
    return SilhouetteField(masks, cameras, views=views, forgive=default_forgive(count) if forgive is None else forgive,
                           tolerance_px=_pose_tolerance_px(masks, cameras, estimated))


def _pose_tolerance_px(masks: np.ndarray, cameras: Cameras, estimated: bool) -> float:
    """How far a surface point's projection may move under the pose uncertainty, in pixels."""
    height, width = masks.shape[1:3]
    # A pose error of σ moves a surface point at OBJECT_EXTENT·radius from the centre by σ·that many metres.
    return math.radians(POSE_SIGMA_DEG[estimated]) * OBJECT_EXTENT * cameras.focal_px(width, height)


def default_forgive(views: int) -> int:
    """Views whose slip a point survives on consistent masks: those spanning ``FORGIVE_DEG`` of the turn."""
    return int(FORGIVE_DEG * views / 360.0)


def voting_field(masks: np.ndarray, cameras: Cameras, estimated: bool) -> GrazingVoteField:
    """The field for masks that contradict each other: a point dies when more than ``VOTING`` of the views see it
    outside, or, near the hull's surface, ``GRAZING_VOTE`` of the views that see the surface there edge-on. That
    keeps what most views see, at the cost of concavities few views see into."""
    return GrazingVoteField(masks, cameras, forgive=max(default_forgive(len(cameras)), round(VOTING * len(cameras))),
                            tolerance_px=_pose_tolerance_px(masks, cameras, estimated))


class GrazingVoteField(SilhouetteField):
    """A voting field that does not fatten the hull.

    A plain vote keeps a point just outside the surface: only the views that see the surface there edge-on show
    it outside their silhouettes (a band of the turn, fewer than the vote needs), the others see the object behind
    it. Measured with exact masks on snowy, a 22 % vote falls from F@0.02 0.93 to 0.62. So near the surface of the
    plain vote's hull, each point is also judged by the views that see it edge-on alone; the views that face it
    cannot tell it from the object behind, and their "outside" (a patch matching the background) is ignored.
    Deep inside, where the plain hull has no surface nearby, every view counts, which changes nothing there.
    """

    def __init__(self, masks: np.ndarray, cameras: Cameras, forgive: int, tolerance_px: float) -> None:
        super().__init__(masks, cameras, forgive=forgive, tolerance_px=tolerance_px)
        self._inward = None  # the plain vote until its normals exist
        lo, hi = object_bounds(self)
        spacing = float((hi - lo).max()) / NORMAL_CELLS
        shape = tuple(math.ceil((hi[i] - lo[i]) / spacing) + 1 for i in range(3))
        values = self(grid_points(lo, spacing, shape)).reshape(shape)
        # A smoothed occupancy in [-1, 1] (a cell either side of the surface): its gradient points inward, and is
        # zero deep inside and far outside.
        occupancy = ndimage.gaussian_filter(np.clip(values / (spacing * self.pixels_per_unit()), -1.0, 1.0), 1.0)
        self._inward = np.stack(np.gradient(occupancy)).astype(np.float32)
        self._grid_origin, self._grid_spacing = lo, spacing
        self._centres = self.cameras.centres().astype(np.float32)

    def _reduce(self, points: np.ndarray, values: np.ndarray) -> np.ndarray:
        vote = super()._reduce(points, values)
        if self._inward is None:
            return vote
        index = ((points - self._grid_origin) / self._grid_spacing).T
        inward = np.stack([ndimage.map_coordinates(g, index, order=1, mode="nearest") for g in self._inward], axis=1)
        inward /= np.maximum(np.linalg.norm(inward, axis=1, keepdims=True), 1e-9)  # zero stays zero: every view
        sight = self._centres[:, None, :] - points[None]  # (V, M, 3)
        sight /= np.linalg.norm(sight, axis=2, keepdims=True)
        grazing = np.abs(np.einsum("vmc,mc->vm", sight, inward)) <= GRAZING_COS
        edge_on = np.where(~grazing & (values < 0), np.inf, values)
        k = np.minimum((GRAZING_VOTE * grazing.sum(axis=0)).astype(np.int64), len(values) - 1)
        return np.minimum(vote, np.take_along_axis(np.sort(edge_on, axis=0), k[None], axis=0)[0] + self.tolerance_px)


def slipped_views(field: SilhouetteField, masks: np.ndarray) -> np.ndarray:
    """Indices of the views whose masks alone cut parts away (a matte that slipped in that frame): those cutting
    more than ``SLIP_SHARE`` of the hull alone, or ``PAIRED_SHARE`` together with one other view, then, while the
    others' hull leaves more than ``AGREED`` of their foreground unexplained, the next largest cutter above
    ``SLIP_FLOOR`` (a thin part is a small share). None when more than ``MAX_SLIPPED`` of the views would be.

    A point cut by one (or two) views more than the field forgives is charged to each of them. A matte that lost a
    part in one frame carves a tunnel that no other view's silhouette can contradict (they see the object through
    it), so the share it cuts tells it, not the unexplained foreground.
    """
    lenient = copy.copy(field)  # shares the views' distance images
    lenient.forgive = field.forgive + 2
    points, _ = inside_points(lenient, CHECK_GRID)
    if len(points) == 0:  # not even the lenient hull holds a cell: no part of it to charge to anyone
        return np.zeros(0, np.int64)
    outside = lenient.per_view(points) + field.tolerance_px < 0
    cut_by = outside.sum(axis=0)
    alone = cut_by <= field.forgive + 1  # the points of the hull that forgives one view more
    single = outside[:, alone & (cut_by > field.forgive)].sum(axis=1) / max(int(alone.sum()), 1)
    paired = outside[:, cut_by > field.forgive].sum(axis=1) / len(points)
    flagged = (single > SLIP_SHARE) | (paired > PAIRED_SHARE)
    order = np.lexsort((-single, ~flagged))  # the flagged first, then by the share they cut alone
    count = int(flagged.sum())
    limit = int(MAX_SLIPPED * len(field.views))
    if 0 < count < limit:  # each try below leaves other views out: their distance images are computed once
        sdt = np.stack([signed_distance(masks[k]) for k in field.views])
    while 0 < count < limit and single[order[count]] > SLIP_FLOOR:
        kept = np.setdiff1d(np.arange(len(field.views)), order[:count])
        others = SilhouetteField(masks[field.views], field.cameras, views=kept, sdt=sdt[kept], forgive=field.forgive,
                                 tolerance_px=field.tolerance_px)
        if unexplained_fraction(others, masks[field.views]) <= AGREED:
            break
        count += 1
    return np.sort(field.views[order[:count]]) if count <= limit else np.zeros(0, np.int64)


def unexplained_fraction(field: SilhouetteField, masks: np.ndarray) -> float:
    """Mean over the views of the fraction of their foreground that the field's hull (sampled coarsely) does not
    cover."""
    # Within a cell of the hull: a point may stand for a part thinner than a cell.
    points, spacing = inside_points(field, CHECK_GRID, slack_cells=1.0)
    height, width = masks.shape[1:3]
    radius = max(1, round(0.75 * spacing * field.pixels_per_unit()))
    fractions = [(masks[k] & ~splat(points, proj, height, width, radius, closed=True)).sum() / max(masks[k].sum(), 1)
                 for k, proj in zip(field.views, field.proj, strict=True)]
    return float(np.mean(fractions))


def inside_points(field: SilhouetteField, cells: int, slack_cells: float = 0.0) -> tuple[np.ndarray, float]:
    """``(M, 3)`` points of a grid over the hull's box (``cells`` along its longest side) where the field is no
    more than ``slack_cells`` cells outside, and the grid's spacing."""
    lo, hi = object_bounds(field)
    spacing = float((hi - lo).max()) / cells
    shape = tuple(math.ceil((hi[i] - lo[i]) / spacing) + 1 for i in range(3))
    points = grid_points(lo, spacing, shape)
    return points[field(points) >= -slack_cells * spacing * field.pixels_per_unit()], spacing


def pixels(points: np.ndarray, projection: np.ndarray, height: int, width: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rounded pixel columns and rows of the points in front of the camera and inside the image, and which."""
    uv, depth = project(points, projection)
    u, v = np.round(uv[:, 0]).astype(np.int64), np.round(uv[:, 1]).astype(np.int64)
    inside = (depth > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    return u[inside], v[inside], inside


def splat(points: np.ndarray, projection: np.ndarray, height: int, width: int, radius: int,
          closed: bool = False) -> np.ndarray:
    """``(H, W) bool``: the image area the points cover, each a disc of ``radius`` pixels; ``closed``: the gaps
    between the points filled, but no further out than the points themselves."""
    image = np.zeros((height, width), np.uint8)
    u, v, _ = pixels(points, projection, height, width)
    image[v, u] = 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.morphologyEx(image, cv2.MORPH_CLOSE if closed else cv2.MORPH_DILATE, kernel) > 0


def grid_points(origin: np.ndarray, spacing: float, shape: tuple[int, int, int]) -> np.ndarray:
    axes = [origin[i] + spacing * np.arange(shape[i]) for i in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def object_bounds(field: SilhouetteField, samples: int = 33) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box ``(lo, hi)`` around the hull, from a coarse pass over the cameras' common view."""
    radius = field.cameras.radius
    half = min(radius * math.tan(math.radians(field.cameras.fov_deg) / 2.0) * 1.2, 0.85 * radius)
    spacing = 2 * half / (samples - 1)
    origin = np.full(3, -half)
    values = field(grid_points(origin, spacing, (samples,) * 3)).reshape((samples,) * 3)
    margin = 2.0 * spacing * field.pixels_per_unit()  # a cell may hide a thin part: keep near-misses
    inside = np.argwhere(values > -margin)
    if inside.size == 0:
        raise ReconstructionError("the silhouettes do not intersect: the orbit parameters do not fit these frames",
                                  code="empty_reconstruction")
    lo = origin + spacing * (inside.min(axis=0) - 1)
    hi = origin + spacing * (inside.max(axis=0) + 1)
    return lo, hi


def carve_hull(field: SilhouetteField, resolution: int = 128, levels: int = 3) -> Volume:
    """Sample the silhouette field on a grid with ``resolution`` cells along the box's longest side."""
    lo, hi = object_bounds(field)
    base = max(4, math.ceil(resolution / 2**levels))
    spacing = float((hi - lo).max()) / base
    shape = tuple(math.ceil((hi[i] - lo[i]) / spacing) + 1 for i in range(3))
    values = field(grid_points(lo, spacing, shape)).reshape(shape)
    # The nearest camera sees the box's far corner largest: bound the field's change per cell from there.
    nearest = float(np.linalg.norm(field.cameras.centres(), axis=1).min())
    px_per_unit = field.pixels_per_unit() * field.cameras.radius / max(nearest - float(np.abs([lo, hi]).max()), 1e-3)
    for _ in range(levels):
        values = _upsample(values)
        spacing /= 2.0
        # Where the interpolated field is further from zero than a cell can change it, its sign is settled.
        band = 2.0 * math.sqrt(3.0) * spacing * px_per_unit
        near = np.argwhere(np.abs(values) < band)
        values[tuple(near.T)] = field(lo + spacing * near)
    return Volume(values, lo, spacing)


def _upsample(values: np.ndarray) -> np.ndarray:
    """Trilinear ×2 refinement of a point grid: ``n`` points per axis become ``2n − 1``."""
    for axis in range(3):
        values = np.moveaxis(values, axis, 0)
        out = np.empty((2 * values.shape[0] - 1, *values.shape[1:]), dtype=np.float32)
        out[::2] = values
        out[1::2] = 0.5 * (values[:-1] + values[1:])
        values = np.moveaxis(out, 0, axis)
    return values
