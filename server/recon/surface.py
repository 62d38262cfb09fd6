"""From a sampled field to a clean mesh: marching cubes, light smoothing, decimation, repair."""

from __future__ import annotations

import numpy as np
import trimesh
from skimage.measure import marching_cubes

from ..errors import DropletError
from .hull import Volume

OUTSIDE = -1e3


def extract_surface(volume: Volume, face_budget: int = 10000, smooth_iterations: int = 4) -> trimesh.Trimesh:
    """Watertight, outward-oriented mesh of ``volume.values ≥ 0`` in world coordinates."""
    padded = np.pad(volume.values, 1, constant_values=OUTSIDE)  # closes the surface where it meets the box
    if padded.max() <= 0:
        raise DropletError("the reconstructed volume is empty", code="empty_reconstruction")
    verts, faces, _, _ = marching_cubes(padded, level=0.0, spacing=(volume.spacing,) * 3,
                                        gradient_direction="descent")
    mesh = trimesh.Trimesh(verts - volume.spacing + volume.origin, faces, process=True)
    mesh = _main_components(mesh)
    trimesh.smoothing.filter_taubin(mesh, lamb=0.5, nu=-0.53, iterations=smooth_iterations)
    if len(mesh.faces) > face_budget:
        mesh = mesh.simplify_quadric_decimation(face_count=face_budget)
    return _repair(mesh)


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
