"""Appearance: an xatlas UV atlas and a base-colour texture baked from the orbit frames.

Every texel finds its 3D point and normal on the mesh, ranks the cameras by viewing angle, keeps
the best few that actually see the point (a depth test against a per-view depth map of the mesh),
and blends their colours with weights that favour head-on views, which hides seams between views.
Texels no camera sees, and the gutters around charts, are filled by pull-push from their neighbours.
"""

from __future__ import annotations

import cv2
import numpy as np
import trimesh
import xatlas

from ..orbit import Cameras, project, spread_views
from .visibility import depth_map, nearest_pixels

BEST_VIEWS = 4
MAX_VIEWS = 32  # candidate cameras, spread evenly around the orbit
DEPTH_MAP_SIZE = 192


def build_atlas(mesh: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(vertices (n, 3), faces (m, 3), uv (n, 2))`` with seams split so every vertex has one UV."""
    vmapping, faces, uv = xatlas.parametrize(mesh.vertices, mesh.faces)
    return mesh.vertices[vmapping], faces.astype(np.int64), uv


def bake_texture(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, rgb: np.ndarray, cameras: Cameras,
                 size: int = 1024) -> np.ndarray:
    """``(size, size, 3) uint8`` base colour. ``rgb (N, H, W, 3)`` frames seen by ``cameras`` (one turn).

    UV ``(0, 0)`` is the bottom-left of the image (OpenGL, as trimesh writes it into glTF).
    """
    tri_id, bary = _rasterize_uv(faces, uv, size)
    texels = np.nonzero(tri_id >= 0)
    tri = tri_id[texels]
    corners = faces[tri]
    points = np.einsum("mk,mkj->mj", bary, vertices[corners]).astype(np.float32)
    normals = trimesh.Trimesh(vertices, faces, process=False).vertex_normals
    normal = np.einsum("mk,mkj->mj", bary, normals[corners])
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)

    colour, weight = _blend_views(points, normal.astype(np.float32), tri, vertices, faces, rgb, cameras)
    image = np.zeros((size, size, 3), np.float32)
    filled = np.zeros((size, size), np.float32)
    image[texels] = colour
    filled[texels] = weight > 0
    return np.clip(_pull_push(image, filled), 0, 255).astype(np.uint8)


def vertex_colours(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """``(n, 4) uint8`` RGBA sampled from the texture at every vertex's UV."""
    size = texture.shape[0]
    col = np.clip((uv[:, 0] * size).astype(int), 0, size - 1)
    row = np.clip(((1.0 - uv[:, 1]) * size).astype(int), 0, size - 1)
    return np.concatenate([texture[row, col], np.full((len(uv), 1), 255, np.uint8)], axis=1)


def _rasterize_uv(faces: np.ndarray, uv: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Triangle id per texel (−1 outside charts) and barycentric coordinates of the texel centres."""
    pix = np.stack([uv[:, 0] * size, (1.0 - uv[:, 1]) * size], axis=1)  # texel-corner coordinates
    tri_id = np.full((size, size), -1, np.int32)
    shift = 4  # sub-pixel precision for cv2's fixed-point rasterizer
    fixed = np.round((pix[faces] - 0.5) * (1 << shift)).astype(np.int32)
    for i, poly in enumerate(fixed):
        cv2.fillConvexPoly(tri_id, poly, i, lineType=cv2.LINE_8, shift=shift)
    rows, cols = np.nonzero(tri_id >= 0)
    tri = tri_id[rows, cols]
    a, b, c = (pix[faces[tri, k]] for k in range(3))
    p = np.stack([cols + 0.5, rows + 0.5], axis=1)
    v0, v1, v2 = b - a, c - a, p - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    den = np.where(np.abs(den) < 1e-12, 1e-12, den)
    l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    bary = np.clip(np.stack([1 - l1 - l2, l1, l2], axis=1), 0, 1)  # edge texels may sit just outside
    bary /= bary.sum(axis=1, keepdims=True)
    bary_image = np.zeros((size, size, 3), np.float64)
    bary_image[rows, cols] = bary
    return tri_id, bary_image[tri_id >= 0]


def _depth_maps(vertices: np.ndarray, faces: np.ndarray, cameras: Cameras, width: int,
                height: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-view depth of the nearest surface from dense surface samples splatted at reduced size, and the
    reduced size's projections."""
    scale = DEPTH_MAP_SIZE / max(width, height)
    w, h = max(4, round(width * scale)), max(4, round(height * scale))
    samples = np.concatenate([vertices, vertices[faces].mean(axis=1)])
    edges = vertices[faces[:, [1, 2, 0]]] - vertices[faces]
    for t in (0.25, 0.5, 0.75):  # midpoints fill gaps between the vertices of long faces
        samples = np.concatenate([samples, vertices[faces[:, 0]] + t * edges[:, 0],
                                  vertices[faces[:, 1]] + t * edges[:, 1]])
    proj = cameras.projections(w, h, index=True).astype(np.float32)
    samples = samples.astype(np.float32)
    return np.stack([depth_map(samples, proj[i], w, h) for i in range(len(cameras))]), proj


def _blend_views(points, normal, tri, vertices, faces, rgb, cameras: Cameras) -> tuple[np.ndarray, np.ndarray]:
    """Weighted colour per texel from the best views of its face; weight 0 where no view sees it."""
    height, width = rgb.shape[1:3]
    views = spread_views(MAX_VIEWS, len(cameras))
    used = cameras.subset(views)
    centres = used.centres()
    proj = used.projections(width, height, index=True).astype(np.float32)
    maps, small = _depth_maps(vertices, faces, used, width, height)
    tolerance = 0.02 * float(np.ptp(vertices, axis=0).max())

    # Rank views per face by viewing angle (cheap), then judge each texel against its face's best views.
    centroid = vertices[faces].mean(axis=1)
    face_normal = trimesh.Trimesh(vertices, faces, process=False).face_normals
    to_cam = centres[None, :, :] - centroid[:, None, :]
    face_cos = np.einsum("fvj,fj->fv", to_cam, face_normal) / np.linalg.norm(to_cam, axis=2)
    k = min(BEST_VIEWS, len(views))
    best = np.argpartition(-face_cos, k - 1, axis=1)[:, :k][tri]  # (texels, k)

    colour = np.zeros((len(points), 3), np.float32)
    weight = np.zeros(len(points), np.float32)
    order = np.argsort(best.ravel(), kind="stable")
    bounds = np.searchsorted(best.ravel()[order], np.arange(len(views) + 1))
    for i, view in enumerate(views):
        rows = order[bounds[i]:bounds[i + 1]] // k  # texels ranking view i (at most once each)
        if rows.size == 0:
            continue
        p = points[rows]
        to_view = centres[i].astype(np.float32) - p
        cos = np.einsum("mj,mj->m", to_view, normal[rows]) / np.linalg.norm(to_view, axis=1)
        xy, depth = project(p, proj[i])
        x, y = xy[:, 0], xy[:, 1]
        inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1) & (cos > 0.05) & (depth > 0)
        dx, dy, _ = nearest_pixels(p, small[i])
        dx, dy = np.clip(dx, 0, maps.shape[2] - 1), np.clip(dy, 0, maps.shape[1] - 1)
        visible = inside & (depth <= maps[i][dy, dx] + tolerance)
        rows, cos, x, y = rows[visible], cos[visible], x[visible], y[visible]
        w = cos**4
        colour[rows] += _bilinear(rgb[view], x, y) * w[:, None]
        weight[rows] += w
    colour /= np.maximum(weight, 1e-9)[:, None]
    return colour, weight


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample ``image (H, W, C) uint8`` at array-index coordinates inside the image → float32."""
    image = image.astype(np.float32)
    x0 = np.minimum(x.astype(np.int32), image.shape[1] - 2)
    y0 = np.minimum(y.astype(np.int32), image.shape[0] - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _pull_push(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill invalid pixels from ever coarser averages of the valid ones (hole filling and chart gutters)."""
    if valid.all() or not valid.any():
        return image
    levels = [(image * valid[..., None], valid)]
    while min(levels[-1][1].shape) > 1:
        colour, weight = levels[-1]
        h, w = max(1, weight.shape[0] // 2), max(1, weight.shape[1] // 2)
        levels.append((cv2.resize(colour, (w, h), interpolation=cv2.INTER_AREA),
                       cv2.resize(weight, (w, h), interpolation=cv2.INTER_AREA)))
    colour, weight = levels[-1]
    filled = colour / np.maximum(weight, 1e-9)[..., None]
    for colour, weight in reversed(levels[:-1]):
        up = cv2.resize(filled, (weight.shape[1], weight.shape[0]), interpolation=cv2.INTER_LINEAR)
        own = colour / np.maximum(weight, 1e-9)[..., None]
        alpha = np.clip(weight, 0, 1)[..., None]
        filled = alpha * own + (1 - alpha) * up
    return np.where(valid[..., None] > 0, image, filled)
