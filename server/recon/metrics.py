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


def volume_iou(pred: trimesh.Trimesh, truth: trimesh.Trimesh, resolution: int = 64) -> float:
    """Intersection over union of the two solids, sampled on a grid over their joint bounds."""
    lo = np.minimum(pred.bounds[0], truth.bounds[0])
    hi = np.maximum(pred.bounds[1], truth.bounds[1])
    axes = [np.linspace(lo[i], hi[i], resolution) for i in range(3)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    a, b = _inside(pred, points), _inside(truth, points)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def _inside(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Inside test against the mesh's filled voxelisation (pitch: 1/128 of its largest extent)."""
    grid = mesh.voxelized(pitch=float(mesh.extents.max()) / 128.0).fill()
    return grid.is_filled(points)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB of two ``uint8`` images, optionally over ``mask`` only."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    if mask is not None:
        diff = diff[mask]
    mse = float(np.mean(diff**2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
