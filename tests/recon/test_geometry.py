"""Geometry on Blender-rendered orbits: concavities carved by photo-consistency, through-holes kept."""

import pytest
import trimesh
from conftest import load_glb_in_blender_world, rendered
from droplet3d.orbit import Orbit
from droplet3d.recon import ReconOptions, reconstruct
from droplet3d.recon.metrics import scale_aligned_f, surface_scores, volume_iou
from PIL import Image


@pytest.fixture(scope="module")
def cup():
    orbit = Orbit(num_frames=36, elevation_deg=45.0, fov_deg=40.0, radius=2.5)
    return rendered("cup", orbit, size=160), ReconOptions(elevation_deg=45.0, fov_deg=40.0, radius=2.5, direction=1,
                                                          closed=False, texture_size=256)


def test_photo_consistency_carves_the_inside_of_a_cup_that_the_visual_hull_fills(tmp_path, cup):
    folder, options = cup
    truth = trimesh.load(folder / "truth.ply")
    scores = {}
    for carve in (False, True):
        options = ReconOptions(**{**options.__dict__, "carve": carve})
        result = reconstruct(folder / "frames", tmp_path / str(carve), options)
        mesh = load_glb_in_blender_world(result.mesh_path)
        scores[carve] = (surface_scores(mesh, truth, samples=20000)["f@0.02"], volume_iou(mesh, truth))
    assert scores[True][0] > 0.7
    assert scores[True][0] > scores[False][0] + 0.15
    assert scores[True][1] > scores[False][1]


def test_torus_keeps_its_through_hole(tmp_path):
    orbit = Orbit(num_frames=24, elevation_deg=30.0, fov_deg=35.0, radius=2.5, direction=-1)
    folder = rendered("torus", orbit, transparent=True)
    options = ReconOptions(elevation_deg=30.0, fov_deg=35.0, radius=2.5, direction="cw", closed=False,
                           texture_size=256)
    mesh = load_glb_in_blender_world(reconstruct(folder / "frames", tmp_path / "job", options).mesh_path)
    mesh.merge_vertices(merge_tex=True, merge_norm=True)
    assert mesh.is_watertight and mesh.euler_number == 0  # genus one: the hole goes through
    assert surface_scores(mesh, trimesh.load(folder / "truth.ply"), samples=20000)["f@0.05"] > 0.95


def test_wide_frames_use_the_fov_across_the_larger_side(tmp_path, suzanne):
    # Cropping rows keeps the cameras (fov spans the width, principal point stays centred); calibrate too.
    (tmp_path / "frames").mkdir()
    for path in sorted((suzanne / "frames").iterdir()):
        Image.open(path).crop((0, 12, 128, 116)).save(tmp_path / "frames" / path.name)
    result = reconstruct(tmp_path / "frames", tmp_path, ReconOptions(radius=2.5, texture_size=256))
    assert abs(result.orbit.elevation_deg - 25.0) <= 2.0 and abs(result.orbit.fov_deg - 40.0) <= 2.0
    mesh = load_glb_in_blender_world(result.mesh_path)
    assert surface_scores(mesh, trimesh.load(suzanne / "truth.ply"), samples=20000)["f@0.02"] > 0.8


def test_scale_aligned_f_scores_the_shape_whatever_its_scale_but_not_a_wrong_shape():
    truth = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    grown = truth.copy().apply_scale(1.15)  # a field-of-view error: the right shape, the wrong size
    assert surface_scores(grown, truth, samples=20000)["f@0.02"] < 0.1
    f, scale = scale_aligned_f(grown, truth, samples=20000)
    assert f > 0.97 and scale == pytest.approx(1 / 1.15, rel=0.01)
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))  # a wrong shape stays wrong at every scale
    assert scale_aligned_f(box, truth, samples=20000)[0] < 0.5
