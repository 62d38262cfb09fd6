"""reconstruct() on a Blender-rendered orbit: outputs, manifest merge, quality, GLB, atomic write, CLI."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import trimesh
from conftest import SUZANNE_ORBIT, load_glb_in_blender_world, render_orbit
from droplet3d.cli import main as droplet3d_main
from droplet3d.errors import Cancelled
from droplet3d.files import is_staging
from droplet3d.orbit import read_transforms
from droplet3d.recon import ReconOptions, reconstruct
from droplet3d.recon.metrics import surface_scores
from PIL import Image, ImageFilter

GIVEN = ReconOptions(elevation_deg=SUZANNE_ORBIT.elevation_deg, fov_deg=SUZANNE_ORBIT.fov_deg,
                     radius=SUZANNE_ORBIT.radius, direction="ccw", closed=False, texture_size=512)


@pytest.fixture(scope="module")
def job(tmp_path_factory, suzanne):
    """A generation job folder (frames + manifest) reconstructed in place; the progress calls it made."""
    folder = tmp_path_factory.mktemp("job")
    shutil.copytree(suzanne / "frames", folder / "frames")
    (folder / "manifest.json").write_text(json.dumps({"mode": "orbit", "seed": 7}))
    calls = []
    result = reconstruct(folder / "frames", folder, GIVEN, progress=lambda *a: calls.append(a))
    return folder, result, calls


def test_job_folder_gets_mesh_transforms_masks_and_a_merged_manifest(job):
    folder, result, _ = job
    assert result.mesh_path == folder / "mesh.glb" and result.mesh_path.stat().st_size > 10_000
    assert sorted(p.name for p in (folder / "masks").iterdir()) == [f"{k:04d}.png" for k in range(24)]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["mode"] == "orbit"  # the generation's record survives
    recon = manifest["reconstruction"]
    assert recon["orbit"]["elevation_deg"] == 25.0 and recon["calibration"]["estimated"] == []
    assert recon["mesh"]["watertight"] and recon["mesh"]["winding_consistent"]
    assert set(recon["timings_s"]) >= {"load", "masks", "orbit", "hull", "carving", "surface", "texture", "total"}
    orbit, data = read_transforms(folder / "transforms.json")
    assert orbit == result.orbit
    assert data["frames"][3]["file_path"] == "frames/0003.png"  # the job's own frames, not a copy
    assert not any(is_staging(p) for p in folder.parent.iterdir())


def test_progress_reports_every_stage_in_order(job):
    _, _, calls = job
    assert [c[0] for c in calls] == ["reconstructing"] * 8
    assert [c[1] for c in calls] == list(range(1, 9)) and all(c[2] == 8 for c in calls)
    assert [c[3] for c in calls] == sorted(c[3] for c in calls)


def test_suzanne_reconstruction_scores_against_the_true_mesh(job, suzanne):
    folder, _, _ = job
    scores = surface_scores(load_glb_in_blender_world(folder / "mesh.glb"), trimesh.load(suzanne / "truth.ply"),
                            samples=20000)
    # 24 frames of 128² only: the benchmark's 85 frames of 512² do better (docs/benchmarks.md).
    assert scores["f@0.05"] > 0.95
    assert scores["f@0.02"] > 0.8


def test_glb_round_trips_through_trimesh_with_texture_uvs_and_vertex_colours(job):
    folder, _, _ = job
    scene = trimesh.load(folder / "mesh.glb")
    mesh = next(iter(scene.geometry.values()))
    material = mesh.visual.material
    assert material.baseColorTexture.size == (512, 512)
    uv = mesh.visual.uv
    assert uv.shape == (len(mesh.vertices), 2) and (uv >= 0).all() and (uv <= 1).all()
    colours = mesh.vertex_attributes["_COLOR"]
    assert colours.shape == (len(mesh.vertices), 4)
    texture = np.asarray(material.baseColorTexture.convert("RGB"), np.float64)
    assert texture.std() > 5  # a real bake, not a flat fill
    mesh.merge_vertices(merge_tex=True, merge_norm=True)  # UV seams split vertices in the file
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0


def test_glb_imported_by_blender_sits_z_up_where_the_orbit_expects_it(job):
    folder, _, _ = job
    script = (
        "import bpy, json, sys; bpy.ops.wm.read_factory_settings(use_empty=True);"
        f"bpy.ops.import_scene.gltf(filepath={str(folder / 'mesh.glb')!r});"
        "o = [o for o in bpy.context.scene.objects if o.type == 'MESH'][0];"
        "v = [o.matrix_world @ p.co for p in o.data.vertices];"
        "print('BOUNDS', json.dumps([[min(p[i] for p in v) for i in range(3)],"
        " [max(p[i] for p in v) for i in range(3)]]))"
    )
    proc = subprocess.run([str(render_orbit.BLENDER_PYTHON), "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    bounds = json.loads(proc.stdout.split("BOUNDS", 1)[1].strip().splitlines()[0])
    expected = json.loads((folder / "manifest.json").read_text())["reconstruction"]["mesh"]["bounds_m"]
    np.testing.assert_allclose(bounds, expected, atol=2e-3)
    # Suzanne faces the front camera (−Y) and is taller than deep: Blender's Z is our up.
    assert bounds[1][2] - bounds[0][2] > bounds[1][1] - bounds[0][1]


def test_cancel_leaves_the_output_folder_as_it_was(tmp_path, suzanne):
    out = tmp_path / "job"
    out.mkdir()
    (out / "manifest.json").write_text('{"seed": 1}')
    checks = []

    def cancel_at_the_hull():
        checks.append(1)
        return len(checks) >= 4

    with pytest.raises(Cancelled):
        reconstruct(suzanne / "frames", out, GIVEN, should_cancel=cancel_at_the_hull)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    assert (out / "manifest.json").read_text() == '{"seed": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job"]  # the staging folder is gone


def test_cli_reconstructs_a_frames_folder_into_a_new_folder_with_extra_formats(tmp_path, suzanne, capsys):
    out = tmp_path / "cli"
    code = droplet3d_main(["reconstruct", str(suzanne / "frames"), "--out", str(out), "--elevation", "25", "--fov",
                           "40", "--radius", "2.5", "--direction", "ccw", "--open", "--texture-size", "256",
                           "--resolution", "64", "--no-carve", "--format", "obj", "--format", "ply"])
    assert code == 0
    assert "elevation 25.00°" in capsys.readouterr().out
    assert {"mesh.glb", "mesh.obj", "mesh.ply", "transforms.json", "manifest.json", "masks", "frames"} <= {
        p.name for p in out.iterdir()}
    # Frames from elsewhere are copied in so that transforms.json's paths resolve inside the folder.
    assert Image.open(out / "frames" / "0000.png").size == (128, 128)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "reconstruction" and manifest["mesh"]["carved_voxels"] == 0
    ply = trimesh.load(out / "mesh.ply")
    assert len(ply.faces) == manifest["mesh"]["faces"]


def test_cli_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert droplet3d_main(["reconstruct", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert "no frames" in capsys.readouterr().err


def test_nominal_transforms_use_the_given_orbit_and_defaults_for_the_rest(tmp_path):
    from droplet3d.recon import write_nominal_transforms

    (tmp_path / "frames").mkdir()
    for k in range(5):
        Image.new("RGB", (48, 32)).save(tmp_path / "frames" / f"{k:04d}.png")
    orbit = write_nominal_transforms(tmp_path, ReconOptions(elevation_deg=15.0, direction="cw"))
    saved, data = read_transforms(tmp_path / "transforms.json")
    assert saved == orbit and orbit.num_frames == 5
    assert (orbit.elevation_deg, orbit.direction, orbit.fov_deg) == (15.0, -1, 40.0)
    assert (data["w"], data["h"]) == (48, 32)
    assert data["frames"][4]["file_path"] == "frames/0004.png"


def test_an_orbit_jobs_frame0_alpha_is_frame_0s_mask(tmp_path, suzanne):
    # An orbit folder as a generation from a cut-out writes it: frames/ and frame0_alpha.png. The cut-out is the
    # colour mask grown by 3 px, so that its use shows.
    from droplet3d.recon import orbit_cameras
    from droplet3d.recon.frames import load_frames
    from droplet3d.recon.masks import compute_masks

    job = tmp_path / "job"
    shutil.copytree(suzanne / "frames", job / "frames")
    colour = compute_masks(load_frames(job / "frames").rgb[:1])[0]
    grown = np.asarray(Image.fromarray(colour.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(7)))
    Image.fromarray(grown).save(job / "frame0_alpha.png")
    (job / "manifest.json").write_text(json.dumps({"kind": "droplet3d"}))
    options = ReconOptions(elevation_deg=SUZANNE_ORBIT.elevation_deg, fov_deg=SUZANNE_ORBIT.fov_deg,
                           radius=SUZANNE_ORBIT.radius, direction=1, closed=False, per_frame=False,
                           matting="colour", texture_size=256)
    _, warnings = orbit_cameras(job, options, mesh=True)
    assert [w["code"] for w in warnings] == []
    manifest = json.loads((job / "manifest.json").read_text())
    assert manifest["reconstruction"]["masks"]["exact_alpha_frames"] == 1
    mask0 = np.asarray(Image.open(job / "masks" / "0000.png")) > 127
    assert (mask0 == (grown > 127)).all() and mask0.sum() > colour.sum()
    mask1 = np.asarray(Image.open(job / "masks" / "0001.png")) > 127
    assert (mask1 == compute_masks(load_frames(job / "frames").rgb[1:2])[0]).all()  # the others: colour

    Image.fromarray(grown[:-1]).save(job / "frame0_alpha.png")  # a cut-out of the wrong size: the mesh is lost,
    _, warnings = orbit_cameras(job, options, mesh=True)  # never the generation, and the warning says why
    assert [w["code"] for w in warnings] == ["reconstruction_failed"] and "frame0_alpha.png" in warnings[0]["message"]
