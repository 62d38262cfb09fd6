"""From a sampled field to a clean mesh: marching cubes, light smoothing, decimation, repair."""

from __future__ import annotations

import logging

import numpy as np
import trimesh
from scipy import ndimage
from skimage.measure import marching_cubes

from ..errors import ReconstructionError
from .hull import Volume

OUTSIDE = -1e3
log = logging.getLogger(__name__)


def extract_surface(volume: Volume, face_budget: int = 10000, smooth_iterations: int = 4) -> trimesh.Trimesh:
    """Mesh of ``volume.values ≥ 0`` in world coordinates with at most ``face_budget`` faces, outward-oriented.

    Closed (watertight) whenever the budget allows: decimation that cannot keep the surface closed is retried
    on a coarser grid (a remesh: marching cubes on a padded grid is always closed). Only when even that fails is
    an open mesh handed back, still within the budget; ``mesh.is_watertight`` then says so.
    """
    values = np.pad(_without_slivers(volume.values), 1, constant_values=OUTSIDE)  # closed at the box's faces
    # Samples exactly on the level give zero-length edges that, once merged, leave holes.
    values[values == 0.0] = 1e-6
    if values.max() <= 0:
        raise ReconstructionError("the reconstructed volume is empty", code="empty_reconstruction")
    stride, fallback = 1, None
    while True:
        mesh = _marching_cubes(values[::stride, ::stride, ::stride], smooth_iterations)
        if mesh is None:  # the coarser grid lost every part: keep the best open mesh found so far
            break
        scale = trimesh.transformations.scale_and_translate(volume.spacing * stride, volume.origin - volume.spacing)
        closed, fitted = _fit_budget(mesh, face_budget)
        if closed is not None:
            return _within(_repair(closed.apply_transform(scale)), face_budget)
        if fallback is None:
            fallback = fitted.apply_transform(scale)
        log.info("decimation to %d faces could not keep the %d-face mesh closed; remeshing at grid stride %d",
                 face_budget, len(mesh.faces), stride * 2)
        stride *= 2
        if min(values[::stride, ::stride, ::stride].shape) < 4:
            break
    log.warning("no closed mesh within %d faces; the mesh is open", face_budget)
    return _within(_repair(fallback), face_budget)


def _marching_cubes(values: np.ndarray, smooth_iterations: int) -> trimesh.Trimesh | None:
    """Smoothed surface in grid units (the decimator's tolerances assume coordinates far above 1: in metres it
    tears small meshes apart); None when nothing of the grid is inside."""
    if values.max() <= 0:
        return None
    verts, faces, _, _ = marching_cubes(values, level=0.0, gradient_direction="descent", allow_degenerate=False)
    mesh = _main_components(trimesh.Trimesh(verts, faces, process=True))
    trimesh.smoothing.filter_taubin(mesh, lamb=0.5, nu=-0.53, iterations=smooth_iterations)
    return mesh


def _fit_budget(mesh: trimesh.Trimesh, face_budget: int) -> tuple[trimesh.Trimesh | None, trimesh.Trimesh]:
    """``(closed mesh within the budget or None, best open mesh within the budget)``."""
    if len(mesh.faces) <= face_budget:
        return (mesh if mesh.is_watertight else None), mesh
    decimated = _decimate(mesh, face_budget)
    return (decimated if decimated.is_watertight else None), decimated


def _within(mesh: trimesh.Trimesh, face_budget: int) -> trimesh.Trimesh:
    """Hole filling in the repair may add a few faces: a last light decimation keeps the promise."""
    if len(mesh.faces) > face_budget:
        import fast_simplification

        vertices, faces = fast_simplification.simplify(mesh.vertices, mesh.faces, target_count=face_budget - 4)
        mesh = _repair(trimesh.Trimesh(vertices, faces, process=False))
        if len(mesh.faces) > face_budget:  # never: the repair only fills holes the decimation opened
            mesh.update_faces(np.arange(face_budget))
    return mesh


def _without_slivers(values: np.ndarray) -> np.ndarray:
    """Remove solid parts thinner than about a voxel (an opening of the occupancy).

    The visual hull of few views can hold membranes where cones graze each other; on the grid they
    pinch the surface into non-manifold edges. Everything else keeps its sub-voxel field values.
    """
    inside = values > 0
    opened = ndimage.binary_opening(inside, structure=ndimage.generate_binary_structure(3, 1))
    return np.where(inside & ~opened, np.float32(-1e-3), values)


def _decimate(mesh: trimesh.Trimesh, face_budget: int) -> trimesh.Trimesh:
    """Quadric decimation of each component to its share of the budget (a thin handle keeps its faces instead of
    the largest part taking them all); the result is closed whenever the decimator managed to keep it so.

    The decimator occasionally pinches two sheets together along an edge or leaves two-face slivers on thin
    parts; slivers are dropped, and a pinched result is redone more gently with a lower target.
    """
    import fast_simplification

    parts = mesh.split(only_watertight=False)
    total = sum(len(p.faces) for p in parts)
    result = mesh
    for fraction, aggression in ((1.0, 7), (0.97, 5), (0.94, 4), (0.85, 3)):
        pieces = []
        for part in parts:
            target = max(4, int(face_budget * fraction * len(part.faces) / total))
            if len(part.faces) <= target:
                pieces.append(part)
                continue
            vertices, faces = fast_simplification.simplify(part.vertices, part.faces, target_count=target,
                                                           agg=aggression)
            pieces.append(trimesh.Trimesh(vertices, faces, process=False))
        result = _main_components(trimesh.util.concatenate(pieces))
        if result.is_watertight and len(result.faces) <= face_budget:
            return result
    return result


def _main_components(mesh: trimesh.Trimesh, keep_fraction: float = 0.02) -> trimesh.Trimesh:
    """Drop floating crumbs: keep components holding at least ``keep_fraction`` of the largest one's faces."""
    parts = mesh.split(only_watertight=False)
    if len(parts) <= 1:
        return mesh
    largest = max(len(p.faces) for p in parts)
    return trimesh.util.concatenate([p for p in parts if len(p.faces) >= keep_fraction * largest])


def _repair(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    mesh.merge_vertices()
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.update_faces(mesh.unique_faces())
    mesh.remove_unreferenced_vertices()
    if not mesh.is_watertight:
        trimesh.repair.fill_holes(mesh)
    trimesh.repair.fix_normals(mesh, multibody=True)
    if mesh.is_volume and mesh.volume < 0:
        mesh.invert()
    return mesh
