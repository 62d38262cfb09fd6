"""Importing job folders in real Blender: rig, cameras, camera-mapped planes, turntable, mesh, video, re-import."""

import json
import shutil

import bpy
import pytest
from bpy_extras.object_utils import world_to_camera_view
from make_job_fixture import MESH_CENTRE, MESH_SIZE, ORBIT
from mathutils import Matrix, Vector

from droplet_blender import geometry, importer

SOURCE = {"centre": [1.0, -2.0, 0.5], "size": 1.2}


def same_rotation(a, b):
    return abs(a.to_quaternion().dot(b.to_quaternion())) > 1 - 1e-6  # q and -q are the same rotation


def objects(coll, word):
    return sorted((o for o in coll.all_objects if f" {word} " in o.name + " "), key=lambda o: o.name)


def test_orbit_import_places_a_camera_per_frame_at_the_transforms_pose(empty_scene, orbit_job):
    coll = importer.import_job(orbit_job, source=SOURCE)
    bpy.context.view_layer.update()
    frames = json.loads((orbit_job / "transforms.json").read_text())["frames"]
    cams = objects(coll, "Camera")
    rig = objects(coll, "Rig")[0]
    scale = SOURCE["size"] / max(MESH_SIZE)
    assert len(cams) == len(frames) == 8
    assert tuple(rig.matrix_world.to_translation()) == pytest.approx(SOURCE["centre"], abs=1e-5)
    assert tuple(rig.scale) == pytest.approx((scale,) * 3, abs=1e-5)
    for cam, frame in zip(cams, frames, strict=True):
        c2w = Matrix(frame["transform_matrix"])
        assert tuple(cam.matrix_world.to_translation()) == pytest.approx(
            tuple(Vector(SOURCE["centre"]) + scale * c2w.to_translation()), abs=1e-4)
        assert same_rotation(cam.matrix_world, c2w)
        # Blender's own projection puts the rig centre (the orbit's look-at point) in the middle of the frame.
        assert tuple(world_to_camera_view(empty_scene, cam, rig.matrix_world.to_translation()))[:2] == pytest.approx(
            (0.5, 0.5), abs=1e-4)
    assert cams[0].data.angle == pytest.approx(geometry.read_orbit(orbit_job).fov)
    assert geometry.read_orbit(orbit_job).fov == pytest.approx(0.785398, abs=1e-5)  # 45° across the larger side


def test_each_plane_shows_its_frame_and_exactly_fills_its_cameras_view(empty_scene, orbit_job):
    coll = importer.import_job(orbit_job, source=SOURCE)
    bpy.context.view_layer.update()
    assert (empty_scene.render.resolution_x, empty_scene.render.resolution_y) == (64, 48)
    for k, (cam, plane) in enumerate(zip(objects(coll, "Camera"), objects(coll, "Plane"), strict=True)):
        image = plane.active_material.node_tree.nodes["Frame"].image
        assert image.filepath.endswith(f"frames/{k:04d}.png") and tuple(image.size) == (64, 48)
        corners = [tuple(world_to_camera_view(empty_scene, cam, plane.matrix_world @ v.co))
                   for v in plane.data.vertices]
        expected = [(0, 0), (1, 0), (1, 1), (0, 1)]  # bottom-left, bottom-right, top-right, top-left
        for (u, v, depth), (eu, ev) in zip(corners, expected, strict=True):
            assert (u, v) == pytest.approx((eu, ev), abs=1e-4)
            assert depth > 0
        uv = [tuple(d.uv) for d in plane.data.uv_layers.active.data]
        assert uv == [pytest.approx(e) for e in expected]  # image bottom-left on the frame's bottom-left
        nodes = {n.bl_idname for n in plane.active_material.node_tree.nodes}
        assert {"ShaderNodeEmission", "ShaderNodeBsdfTransparent", "ShaderNodeMixShader"} <= nodes


def test_turntable_frame_k_looks_through_camera_k_and_shows_plane_k_only(empty_scene, orbit_job):
    coll = importer.import_job(orbit_job, source=SOURCE)
    turntable = objects(coll, "Turntable")[0]
    cams, planes = objects(coll, "Camera"), objects(coll, "Plane")
    assert empty_scene.camera == turntable
    assert (empty_scene.frame_start, empty_scene.frame_end) == (1, 8)
    for k in (0, 3, 7, 4):  # out of order, as scrubbing does
        empty_scene.frame_set(1 + k)
        bpy.context.view_layer.update()
        shown = [p.name for p in planes if not p.hide_render and not p.hide_viewport]
        assert shown == [planes[k].name]
        assert (turntable.matrix_world.to_translation() - cams[k].matrix_world.to_translation()).length < 1e-4
        assert same_rotation(turntable.matrix_world, cams[k].matrix_world)


def test_mesh_is_parented_to_the_rig_and_lands_on_the_source_at_its_size(empty_scene, orbit_job):
    coll = importer.import_job(orbit_job, source=SOURCE)
    bpy.context.view_layer.update()
    mesh = objects(coll, "Mesh")[0]
    assert mesh.parent == objects(coll, "Rig")[0]
    corners = [mesh.matrix_world @ Vector(c) for c in mesh.bound_box]
    centre, largest = geometry.bounds([tuple(c) for c in corners])
    scale = SOURCE["size"] / max(MESH_SIZE)
    expected = [c + scale * m for c, m in zip(SOURCE["centre"], MESH_CENTRE, strict=True)]
    assert centre == pytest.approx(expected, abs=1e-4)
    assert largest == pytest.approx(SOURCE["size"], abs=1e-4)
    sides = [max(c[i] for c in corners) - min(c[i] for c in corners) for i in range(3)]
    assert sides == pytest.approx([scale * s for s in MESH_SIZE], abs=1e-4)  # Z-up kept: not lying on its side


def test_a_job_reconstructed_from_the_capture_camera_stays_at_world_scale_on_the_source(empty_scene, orbit_job):
    coll = importer.import_job(orbit_job, source={**SOURCE, "placement": "camera"})
    bpy.context.view_layer.update()
    rig = objects(coll, "Rig")[0]
    assert tuple(rig.location) == pytest.approx(SOURCE["centre"]) and tuple(rig.scale) == (1, 1, 1)
    cam0 = objects(coll, "Camera")[0]
    assert (cam0.matrix_world.to_translation() - Vector(SOURCE["centre"])).length == pytest.approx(ORBIT["radius"])
    mesh = objects(coll, "Mesh")[0]
    corners = [mesh.matrix_world @ Vector(c) for c in mesh.bound_box]
    assert geometry.bounds([tuple(c) for c in corners])[1] == pytest.approx(max(MESH_SIZE), abs=1e-4)  # not refitted


def test_plain_image_job_without_source_sits_at_the_origin_at_unit_scale(empty_scene, orbit_job):
    coll = importer.import_job(orbit_job, source={})
    rig = objects(coll, "Rig")[0]
    assert tuple(rig.location) == (0, 0, 0) and tuple(rig.scale) == (1, 1, 1)
    cam0 = objects(coll, "Camera")[0]
    assert cam0.location.length == pytest.approx(ORBIT["radius"], abs=1e-5)


def test_reimport_is_idempotent_and_leaves_other_data_alone(empty_scene, orbit_job):
    bystander = bpy.data.objects.new("Bystander", bpy.data.meshes.new("Bystander"))
    empty_scene.collection.objects.link(bystander)
    importer.import_job(orbit_job, source=SOURCE)
    kinds = ("objects", "meshes", "materials", "images", "cameras", "collections", "actions")
    counts = {k: len(getattr(bpy.data, k)) for k in kinds}
    coll = importer.import_job(orbit_job, source=SOURCE)
    assert {k: len(getattr(bpy.data, k)) for k in kinds} == counts
    assert bpy.data.objects.get("Bystander") == bystander and bystander.name in empty_scene.collection.objects
    assert [c.name for c in empty_scene.collection.children] == [coll.name]


def test_video_job_is_an_image_sequence_on_a_camera_aligned_plane_and_the_background(empty_scene, video_job):
    coll = importer.import_job(video_job)
    bpy.context.view_layer.update()
    cam = objects(coll, "Camera")[0]
    plane = objects(coll, "Plane")[0]
    tex = plane.active_material.node_tree.nodes["Frame"]
    assert tex.image.source == "SEQUENCE" and tex.image_user.frame_duration == 6
    assert cam.data.background_images[0].image == tex.image and cam.data.show_background_images
    corners = [tuple(world_to_camera_view(empty_scene, cam, plane.matrix_world @ v.co))[:2]
               for v in plane.data.vertices]
    assert corners == [pytest.approx(c, abs=1e-4) for c in [(0, 0), (1, 0), (1, 1), (0, 1)]]
    assert (empty_scene.frame_end, empty_scene.render.fps, empty_scene.camera) == (6, 8, cam)
    assert (empty_scene.render.resolution_x, empty_scene.render.resolution_y) == (48, 32)


def test_broken_job_folder_raises_a_clear_error_and_leaves_nothing(empty_scene, orbit_job, tmp_path):
    broken = tmp_path / "droplet-broken"
    shutil.copytree(orbit_job, broken)
    (broken / "frames" / "0005.png").unlink()
    with pytest.raises(geometry.JobFolderError, match="missing"):
        importer.import_job(broken)
    (broken / "transforms.json").unlink()
    with pytest.raises(geometry.JobFolderError, match=r"transforms\.json is missing"):
        importer.import_job(broken)
    assert len(bpy.data.objects) == 0 and len(bpy.data.collections) == 0
