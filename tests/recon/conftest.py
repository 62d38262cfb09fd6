"""Fixtures for the recon tests: small orbits that Blender renders from known meshes (cached in .cache/).

Blender's venv is required: without it these fixtures fail (they never skip).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import trimesh
from droplet3d.orbit import Orbit, project
from droplet3d.recon.export import BLENDER_TO_GLTF

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import render_orbit

SIZE = 128
BALL_RADIUS = 0.5


def rendered(name: str, orbit: Orbit, size: int = SIZE, transparent: bool = False) -> Path:
    """Folder with ``frames/`` and ``truth.ply`` of ``name`` rendered along ``orbit``."""
    return render_orbit.render(name, orbit, size=size, samples=8, transparent=transparent)


def sphere_masks(orbit: Orbit, size: int) -> np.ndarray:
    """Exact ``size``² masks of a ball of ``BALL_RADIUS`` at the origin: the filled outline of its projected surface."""
    rng = np.random.default_rng(0)
    surface = rng.normal(size=(20000, 3))
    surface *= BALL_RADIUS / np.linalg.norm(surface, axis=1, keepdims=True)
    masks = np.zeros((orbit.num_frames, size, size), bool)
    for k, proj in enumerate(orbit.cameras().projections(size, size, index=True)):
        pixels, _ = project(surface, proj)
        hull = cv2.convexHull(np.round(pixels * 16).astype(np.int32))
        canvas = np.zeros((size, size), np.uint8)
        cv2.fillConvexPoly(canvas, hull, 1, shift=4)
        masks[k] = canvas > 0
    return masks


def load_glb_in_blender_world(path: Path) -> trimesh.Trimesh:
    mesh = trimesh.load(path, force="mesh")
    mesh.apply_transform(np.linalg.inv(BLENDER_TO_GLTF))
    return mesh


SUZANNE_ORBIT = Orbit(num_frames=24, elevation_deg=25.0, fov_deg=40.0, radius=2.5)


@pytest.fixture(scope="session")
def suzanne() -> Path:
    return rendered("suzanne", SUZANNE_ORBIT)
