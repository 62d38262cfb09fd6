"""Mask repair: holes that patches matching the background punch into the masks are closed when the other views
contradict them; real through-holes stay open."""

import cv2
import numpy as np
import trimesh
from conftest import load_glb_in_blender_world, rendered
from droplet3d.orbit import Orbit, project
from droplet3d.recon.hull import carve_hull, forgiving_field
from droplet3d.recon.mask_repair import enclosed_holes, repair_masks
from droplet3d.recon.metrics import surface_scores
from droplet3d.recon.pipeline import ReconOptions, reconstruct

SIZE = 96
ORBIT = Orbit(num_frames=48, elevation_deg=20.0, fov_deg=40.0, radius=2.5)
SNOWY_ORBIT = Orbit(num_frames=24, elevation_deg=25.0, fov_deg=40.0, radius=2.5, direction=-1)


def splat(points: np.ndarray, projection: np.ndarray) -> np.ndarray:
    pixels, _ = project(points, projection)
    u, v = np.round(pixels).astype(int).T
    canvas = np.zeros((SIZE, SIZE), np.uint8)
    canvas[v, u] = 1
    return cv2.morphologyEx(canvas, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)) > 0


def splat_masks(surface: np.ndarray, normals: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """Masks of a surface seen along ORBIT: every projected point is object, except the points of ``patch`` that
    face the camera (their colour matches the background), which punch holes inside the outline."""
    masks = np.zeros((ORBIT.num_frames, SIZE, SIZE), bool)
    cameras = ORBIT.cameras()
    for k, proj in enumerate(cameras.projections(SIZE, SIZE, index=True)):
        outline = splat(surface, proj)
        facing = ((cameras.centres()[k] - surface) * normals).sum(axis=1) > 0
        hidden = splat(surface[facing & patch], proj) if (facing & patch).any() else np.zeros_like(outline)
        inner = cv2.erode(outline.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        masks[k] = outline & ~(hidden & inner)
    return masks


def sphere(radius: float, count: int = 60000) -> tuple[np.ndarray, np.ndarray]:
    normals = np.random.default_rng(0).normal(size=(count, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return radius * normals, normals


def hull_volume(masks: np.ndarray) -> float:
    volume = carve_hull(forgiving_field(masks, ORBIT.cameras(), estimated=False), resolution=48)
    return float((volume.values > 0).sum() * volume.spacing**3)


def test_patches_that_match_the_background_no_longer_cut_tunnels_through_the_hull():
    surface, normals = sphere(0.5)
    caps = np.array([[1.0, 0.0, 0.2], [-0.3, 1.0, 0.1], [0.0, -1.0, 0.5], [-1.0, 0.2, -0.2]])
    caps /= np.linalg.norm(caps, axis=1, keepdims=True)
    patch = (normals @ caps.T).max(axis=1) > np.cos(np.radians(22))  # four light patches on the ball
    masks = splat_masks(surface, normals, patch)
    assert sum(enclosed_holes(m)[1] for m in masks) >= ORBIT.num_frames  # every view has a hole or more

    truth = 4 / 3 * np.pi * 0.5**3
    holed = hull_volume(masks)
    repaired, info = repair_masks(masks, ORBIT.cameras(), estimated=False)
    assert holed < 0.8 * truth  # tunnels: the patches carve the ball away
    assert abs(hull_volume(repaired) - truth) < 0.12 * truth
    assert info["holes"] >= ORBIT.num_frames // 2 and info["views"] >= ORBIT.num_frames // 2 and info["pixels"] > 0
    assert not (repaired & ~masks).any(axis=0)[[0, -1]].any()  # closed holes only, nothing grown at the border


def test_a_real_through_hole_stays_open():
    # A torus standing on edge (axis along y): views from ±y see through its hole, views from ±x see a bar.
    rng = np.random.default_rng(1)
    theta, phi = rng.uniform(0, 2 * np.pi, (2, 80000))
    major, minor = 0.4, 0.12
    ring = np.stack([np.cos(theta), np.zeros_like(theta), np.sin(theta)], axis=1)
    normals = np.cos(phi)[:, None] * ring + np.sin(phi)[:, None] * np.array([0.0, 1.0, 0.0])
    surface = major * ring + minor * normals
    masks = splat_masks(surface, normals, np.zeros(len(surface), bool))
    assert sum(enclosed_holes(m)[1] > 0 for m in masks) >= ORBIT.num_frames // 4  # the hole, seen through

    repaired, info = repair_masks(masks, ORBIT.cameras(), estimated=False)
    assert info == {"holes": 0, "views": 0, "pixels": 0} and (repaired == masks).all()
    centre = np.zeros((1, 3))
    assert forgiving_field(repaired, ORBIT.cameras(), estimated=False)(centre)[0] < 0


def test_masks_without_enclosed_holes_are_returned_as_they_are():
    surface, normals = sphere(0.5, 20000)
    masks = splat_masks(surface, normals, np.zeros(len(surface), bool))
    repaired, info = repair_masks(masks, ORBIT.cameras(), estimated=True)
    assert repaired is masks and info["holes"] == 0


def test_bites_into_the_outline_that_other_views_contradict_are_filled():
    surface, normals = sphere(0.5)
    caps = np.array([[1.0, 0.0, 0.5], [-0.5, -1.0, 0.6], [0.0, 1.0, -0.3]])
    caps /= np.linalg.norm(caps, axis=1, keepdims=True)
    patch = (normals @ caps.T).max(axis=1) > np.cos(np.radians(30))
    cameras = ORBIT.cameras()
    masks, outlines = np.zeros((2, ORBIT.num_frames, SIZE, SIZE), bool)
    for k, proj in enumerate(cameras.projections(SIZE, SIZE, index=True)):
        outlines[k] = splat(surface, proj)
        facing = ((cameras.centres()[k] - surface) * normals).sum(axis=1) > 0
        masks[k] = outlines[k] & ~splat(surface[facing & patch], proj)  # the patches reach the outline: bites
    bites = [(outlines[k] & ~masks[k]).sum() - (enclosed_holes(masks[k])[0] > 0).sum() for k in range(len(masks))]
    assert sum(b > 20 for b in bites) >= ORBIT.num_frames // 2  # most views lose part of the outline itself

    repaired, _ = repair_masks(masks, cameras, estimated=False)
    lost, restored = outlines & ~masks, repaired & ~masks
    assert restored.sum() > 0.8 * lost.sum()
    # Some is added beyond the true outline, within two of the check's cells (2–3 pixels each): points a cell
    # outside the surface that other views need are given back with the rest.
    beyond = [cv2.distanceTransform((~outlines[k]).astype(np.uint8), cv2.DIST_L2, 3)[restored[k]]
              for k in range(len(masks))]
    assert sum((d > 0).sum() for d in beyond) < 0.2 * restored.sum() and max(d.max() for d in beyond) < 5.0
    # The bites had carved the ball down to crumbs; with them filled, most of it is back.
    truth = 4 / 3 * np.pi * 0.5**3
    assert hull_volume(masks) < 0.1 * truth and hull_volume(repaired) > 0.7 * truth


def test_an_object_whose_patches_match_the_background_keeps_its_body(tmp_path):
    # "snowy": grey with white patches on white (a tuning object; "pale" is its held-out counterpart).
    folder = rendered("snowy", SNOWY_ORBIT)
    truth = trimesh.load(folder / "truth.ply", force="mesh")
    options = dict(elevation_deg=SNOWY_ORBIT.elevation_deg, fov_deg=SNOWY_ORBIT.fov_deg, radius=SNOWY_ORBIT.radius,
                   direction=SNOWY_ORBIT.direction, closed=False, per_frame=False, texture_size=256)
    scores = {}
    for repair in (True, False):
        result = reconstruct(folder / "frames", tmp_path / str(repair), ReconOptions(**options, repair=repair))
        masks = result.manifest["masks"]
        # Detected either way, and the hull then votes: a point dies only where a fifth of the views see it outside.
        assert masks["hull"]["unexplained"] > 0.2 and masks["hull"]["forgiven_views"] == 5
        assert "masks_inconsistent" in {w["code"] for w in result.warnings}
        assert (masks["repaired"]["pixels"] > 0) if repair else ("repaired" not in masks)
        scores[repair] = surface_scores(load_glb_in_blender_world(result.mesh_path), truth)
    # Measured: the strict hull of these masks scored F@0.02 0.00 (F@0.05 0.03); voting alone 0.12, and with the
    # repair 0.33 (F@0.05 0.62).
    assert scores[True]["f@0.02"] > 0.25 and scores[True]["f@0.05"] > 0.5
    assert scores[True]["f@0.02"] > 2 * scores[False]["f@0.02"]
