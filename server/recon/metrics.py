"""Scores for a reconstruction against a true mesh (benchmarks and tests).

Both meshes are scaled by the true mesh's largest extent, so distances are fractions of the
object's size: Chamfer distance (mean of the two directed mean distances), F-score at a threshold
(harmonic mean of precision and recall of surface samples) and volume IoU on a regular grid.
"""

from __future__ import annotations

import numpy as np
import trimesh
from scipy.spatial import cKDTree


def surface_scores(pred: trimesh.Trimesh, truth: trimesh.Trimesh, thresholds=(0.01, 0.02, 0.05),
                   samples: int = 50000, seed: int = 0) -> dict:
    """``{"chamfer": float, "f@0.01": float, ...}`` with both meshes scaled by the truth's largest extent."""
    scale = float(truth.extents.max())
    p = trimesh.sample.sample_surface(pred, samples, seed=seed)[0] / scale
    t = trimesh.sample.sample_surface(truth, samples, seed=seed + 1)[0] / scale
    d_pt = cKDTree(t).query(p)[0]  # precision side
    d_tp = cKDTree(p).query(t)[0]  # recall side
    scores = {"chamfer": float(0.5 * (d_pt.mean() + d_tp.mean()))}
    for tau in thresholds:
        precision, recall = float((d_pt < tau).mean()), float((d_tp < tau).mean())
        scores[f"f@{tau:g}"] = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return scores


def scale_aligned_f(pred: trimesh.Trimesh, truth: trimesh.Trimesh, tau: float = 0.02, bounds=(0.7, 1.4),
                    samples: int = 50000, seed: int = 0) -> tuple[float, float]:
    """``(F@tau, scale)``: the F-score of ``pred`` scaled about the origin by the scale that scores best.

    Where nothing fixes an orbit's size (a generated orbit: its radius and field of view trade off), the mesh's
    scale is a gauge; this scores its shape alone. Both samplings are made once: scaling the prediction by ``s``
    scales its distances to the truth's samples, so the recall side is queried at ``t / s`` within ``tau / s``.
    """
    size = float(truth.extents.max())
    p = trimesh.sample.sample_surface(pred, samples, seed=seed)[0] / size
    t = trimesh.sample.sample_surface(truth, samples, seed=seed + 1)[0] / size
    t_tree, p_tree = cKDTree(t), cKDTree(p)

    def f(s: float) -> float:
        precision = float((t_tree.query(p * s, distance_upper_bound=tau)[0] < tau).mean())
        recall = float((p_tree.query(t / s, distance_upper_bound=tau / s)[0] < tau / s).mean())
        return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0

    # A grid fine enough that the peak (about tau wide in scale) is not stepped over, then golden-section.
    grid = np.exp(np.linspace(np.log(bounds[0]), np.log(bounds[1]), 49))
    scores = [f(s) for s in grid]
    k = int(np.argmax(scores))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    best = (scores[k], float(grid[k]))
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    for _ in range(12):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        fa, fb = f(a), f(b)
        best = max(best, (fa, float(a)), (fb, float(b)))
        lo, hi = (lo, b) if fa >= fb else (a, hi)
    return best


def volume_iou(pred: trimesh.Trimesh, truth: trimesh.Trimesh, resolution: int = 96) -> float:
    """Intersection over union of the two solids, sampled on a grid over their joint bounds."""
    lo = np.minimum(pred.bounds[0], truth.bounds[0])
    hi = np.maximum(pred.bounds[1], truth.bounds[1])
    # A tiny offset keeps the sampling rays off shared edges and vertices.
    axes = [np.linspace(lo[i], hi[i], resolution) + 1e-7 * (i + 1) for i in range(3)]
    a, b = inside_grid(pred, axes), inside_grid(truth, axes)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def inside_grid(mesh: trimesh.Trimesh, axes: list[np.ndarray]) -> np.ndarray:
    """``(nx, ny, nz) bool`` grid points inside a closed mesh, by the parity of crossings along +Z rays."""
    xs, ys, zs = axes
    tri = mesh.triangles
    # Candidate (triangle, column) pairs from each triangle's footprint on the x-y grid.
    x0 = np.searchsorted(xs, tri[:, :, 0].min(axis=1))
    x1 = np.searchsorted(xs, tri[:, :, 0].max(axis=1), side="right")
    y0 = np.searchsorted(ys, tri[:, :, 1].min(axis=1))
    y1 = np.searchsorted(ys, tri[:, :, 1].max(axis=1), side="right")
    nx, ny = np.maximum(x1 - x0, 0), np.maximum(y1 - y0, 0)
    count = nx * ny
    t = np.repeat(np.arange(len(tri)), count)
    local = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    ix = x0[t] + local // np.maximum(ny[t], 1)
    iy = y0[t] + local % np.maximum(ny[t], 1)
    px, py = xs[ix], ys[iy]
    a, b, c = tri[t, 0], tri[t, 1], tri[t, 2]
    den = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    den = np.where(np.abs(den) < 1e-18, np.nan, den)
    l1 = ((b[:, 1] - c[:, 1]) * (px - c[:, 0]) + (c[:, 0] - b[:, 0]) * (py - c[:, 1])) / den
    l2 = ((c[:, 1] - a[:, 1]) * (px - c[:, 0]) + (a[:, 0] - c[:, 0]) * (py - c[:, 1])) / den
    l3 = 1.0 - l1 - l2
    hit = (l1 >= 0) & (l2 >= 0) & (l3 >= 0)
    z = l1 * a[:, 2] + l2 * b[:, 2] + l3 * c[:, 2]
    ix, iy, z = ix[hit], iy[hit], z[hit]
    # Every crossing flips the parity of the grid points below it in its column.
    below = np.searchsorted(zs, z)
    flips = np.zeros((len(xs), len(ys), len(zs) + 1), np.int32)
    np.add.at(flips, (ix, iy, np.zeros_like(below)), 1)
    np.add.at(flips, (ix, iy, below), -1)
    return (np.cumsum(flips, axis=2)[:, :, :-1] % 2).astype(bool)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB of two ``uint8`` images, optionally over ``mask`` only."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    if mask is not None:
        diff = diff[mask]
    mse = float(np.mean(diff**2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
