"""Writing the mesh: GLB (embedded PNG base colour, per-vertex colours), OBJ and PLY.

The reconstruction lives in Blender's world (+Z up, metres). glTF is +Y up and Blender's importer
maps glTF ``(x, y, z)`` to Blender ``(x, −z, y)``, so the GLB stores Blender ``(x, y, z)`` as
``(x, z, −y)``: after import the mesh sits exactly where the orbit's cameras expect it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

# Blender world → glTF: (x, y, z) ↦ (x, z, −y); a rotation by −90° about X.
BLENDER_TO_GLTF = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1.0]])


def textured_mesh(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, texture: np.ndarray,
                  colours: np.ndarray) -> trimesh.Trimesh:
    """A trimesh in Blender's world with UVs, a PBR material (base colour texture) and vertex colours."""
    material = trimesh.visual.material.PBRMaterial(
        name="droplet_baked", baseColorTexture=Image.fromarray(texture), metallicFactor=0.0, roughnessFactor=1.0)
    mesh = trimesh.Trimesh(vertices, faces, visual=trimesh.visual.TextureVisuals(uv=uv, material=material),
                           process=False)
    # glTF's COLOR_0 would multiply the texture; an application attribute keeps the colours alongside it.
    mesh.vertex_attributes["_COLOR"] = (colours.astype(np.float32) / 255.0)
    return mesh


def write_mesh(mesh: trimesh.Trimesh, path: Path) -> None:
    """Write ``mesh`` (Blender world coordinates) as ``.glb``, ``.obj`` or ``.ply`` by suffix."""
    suffix = path.suffix.lower()
    if suffix == ".glb":
        out = mesh.copy()
        out.vertex_attributes = dict(mesh.vertex_attributes)
        out.apply_transform(BLENDER_TO_GLTF)
        path.write_bytes(out.export(file_type="glb", include_normals=True))
    elif suffix == ".obj":
        mesh.export(path, file_type="obj", include_texture=True)
    elif suffix == ".ply":
        plain = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False,
                                vertex_colors=(mesh.vertex_attributes["_COLOR"] * 255).astype(np.uint8))
        plain.export(path, file_type="ply")
    else:
        raise ValueError(f"unsupported mesh format {suffix}")
