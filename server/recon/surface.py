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
    """Watertight, outward-oriented mesh of ``volume.values ≥ 0`` in world coordinates."""
    padded = np.pad(_without_slivers(volume.values), 1, constant_values=OUTSIDE)  # closed at the box's faces
    # Samples exactly on the level give zero-length edges that, once merged, leave holes.
    padded[padded == 0.0] = 1e-6
    if padded.max() <= 0:
        raise ReconstructionError("the reconstructed volume is empty", code="empty_reconstruction")
    verts, faces, _, _ = marching_cubes(padded, level=0.0, gradient_direction="descent", allow_degenerate=False)
    # Smooth and decimate in voxel units: the decimator's tolerances assume coordinates far above 1
    # (in metres it tears small meshes apart).
    mesh = _main_components(trimesh.Trimesh(verts - 1.0, faces, process=True))
    trimesh.smoothing.filter_taubin(mesh, lamb=0.5, nu=-0.53, iterations=smooth_iterations)
    if len(mesh.faces) > face_budget:
        mesh = _decimate(mesh, face_budget)
    mesh.apply_transform(trimesh.transformations.scale_and_translate(volume.spacing, volume.origin))
    return _repair(mesh)


def _without_slivers(values: np.ndarray) -> np.ndarray:
    """Remove solid parts thinner than about a voxel (an opening of the occupancy).

    The visual hull of few views can hold membranes where cones graze each other; on the grid they
    pinch the surface into non-manifold edges. Everything else keeps its sub-voxel field values.
    """
    inside = values > 0
    opened = ndimage.binary_opening(inside, structure=ndimage.generate_binary_structure(3, 1))
    return np.where(inside & ~opened, np.float32(-1e-3), values)


def _decimate(mesh: trimesh.Trimesh, face_budget: int) -> trimesh.Trimesh:
    """Quadric decimation that keeps the surface a closed 2-manifold.

    The decimator occasionally pinches two sheets together along an edge or leaves two-face slivers
    on thin parts; slivers are dropped, and a pinched result is redone more gently with another target
    (falling back to the undecimated mesh, which is always closed).
    """
    import fast_simplification

    for target, aggression in ((face_budget, 7), (int(face_budget * 0.97), 5), (int(face_budget * 0.94), 4)):
        vertices, faces = fast_simplification.simplify(mesh.vertices, mesh.faces, target_count=target, agg=aggression)
        result = _main_components(trimesh.Trimesh(vertices, faces, process=False))
        if result.is_watertight:
            return result
    log.warning("decimation could not keep the mesh closed; keeping all %d faces", len(mesh.faces))
    return mesh


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
