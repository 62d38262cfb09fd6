import json
import math

import numpy as np
import pytest
from droplet3d.errors import InputError
from droplet3d.orbit import (
    Cameras,
    Orbit,
    look_at,
    project,
    projection_matrices,
    read_transforms,
    spread_views,
    write_transforms,
)


def test_azimuth_zero_is_blender_front_view_and_90_is_plus_x():
    orbit = Orbit(num_frames=4, elevation_deg=0.0, radius=3.0)
    pos = orbit.positions()
    np.testing.assert_allclose(pos[0], [0, -3, 0], atol=1e-12)
    np.testing.assert_allclose(pos[1], [3, 0, 0], atol=1e-12)  # ccw seen from above: front → +X side


def test_clockwise_orbit_goes_to_minus_x_first():
    pos = Orbit(num_frames=4, direction=-1, radius=1.0).positions()
    np.testing.assert_allclose(pos[1], [-1, 0, 0], atol=1e-12)


def test_closed_loop_repeats_first_frame():
    orbit = Orbit(num_frames=5, closed=True)
    np.testing.assert_allclose(orbit.camera_to_world()[0], orbit.camera_to_world()[-1], atol=1e-12)
    assert orbit.azimuths_deg()[1] == pytest.approx(90.0)


def test_camera_looks_down_minus_z_with_up_near_plus_z():
    c2w = look_at(np.array([0.0, -2.0, 1.0]))
    forward = -c2w[:3, 2]
    np.testing.assert_allclose(forward, -c2w[:3, 3] / np.linalg.norm(c2w[:3, 3]), atol=1e-12)
    assert c2w[2, 1] > 0  # camera +Y has a positive world Z component
    np.testing.assert_allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3), atol=1e-12)
    assert np.linalg.det(c2w[:3, :3]) == pytest.approx(1.0)


def test_transforms_json_camera_reprojects_a_known_point(tmp_path):
    orbit = Orbit(num_frames=8, elevation_deg=20.0, fov_deg=50.0, radius=2.5, start_azimuth_deg=10.0)
    w, h = 640, 480
    write_transforms(tmp_path / "transforms.json", orbit, w, h, [f"frames/{k:04d}.png" for k in range(8)])
    data = json.loads((tmp_path / "transforms.json").read_text())
    # The origin projects to the image centre in every frame.
    K = np.array([[data["fl_x"], 0, data["cx"]], [0, data["fl_y"], data["cy"]], [0, 0, 1]])
    for frame in data["frames"]:
        uv, depth = project(np.zeros((1, 3)), projection_matrices(np.array(frame["transform_matrix"]), K))
        np.testing.assert_allclose(uv[0], [w / 2, h / 2], atol=1e-9)
        assert depth[0] == pytest.approx(2.5)
    # The world +Z axis tip appears above the centre (smaller v) in frame 0; fov spans the larger side.
    front = projection_matrices(np.array(data["frames"][0]["transform_matrix"]), K)
    uv, _ = project(np.array([[0.0, 0.0, 0.1]]), front)
    assert uv[0, 1] < h / 2
    assert data["camera_angle_x"] == pytest.approx(math.radians(50.0))
    again, _ = read_transforms(tmp_path / "transforms.json")
    assert again == orbit


def test_point_right_of_centre_in_front_view_projects_right():
    orbit = Orbit(num_frames=1, radius=2.0)
    uv, _ = project(np.array([[0.1, 0.0, 0.0]]), orbit.cameras().projections(100, 100)[0])
    assert uv[0, 0] > 50


def test_index_coordinates_put_pixel_centres_on_integers():
    cameras = Orbit(num_frames=3, elevation_deg=10.0, radius=2.0).cameras()
    points = np.array([[0.1, 0.2, -0.1], [0.0, 0.0, 0.0]])
    for corner, index in zip(cameras.projections(64, 48), cameras.projections(64, 48, index=True), strict=True):
        np.testing.assert_allclose(project(points, index)[0], project(points, corner)[0] - 0.5, atol=1e-12)


def test_per_frame_cameras_round_trip_through_their_angles_and_transforms_json(tmp_path):
    azimuth = np.array([0.0, 95.0, 170.0, 281.0])
    elevation = np.array([10.0, 12.0, 9.5, 11.0])
    distance = np.array([2.5, 2.46, 2.53, 2.5])
    cameras = Cameras.on_sphere(azimuth, elevation, distance, 35.0)
    a, e, d = cameras.spherical()
    np.testing.assert_allclose(a, azimuth, atol=1e-9)
    np.testing.assert_allclose(e, elevation, atol=1e-9)
    np.testing.assert_allclose(d, distance, atol=1e-12)
    orbit = Orbit(num_frames=4, elevation_deg=10.0, fov_deg=35.0, radius=2.5)
    write_transforms(tmp_path / "t.json", orbit, 64, 64, [f"{k}.png" for k in range(4)], cameras,
                     {"confidence": {"elevation_deg": 0.5}})
    data = json.loads((tmp_path / "t.json").read_text())
    np.testing.assert_allclose([f["transform_matrix"] for f in data["frames"]], cameras.c2w, atol=1e-12)
    assert data["confidence"] == {"elevation_deg": 0.5}
    with pytest.raises(InputError):
        write_transforms(tmp_path / "t.json", orbit, 64, 64, ["a.png"] * 4, cameras.subset([0, 1]))


def test_spread_views_keeps_the_ends_and_never_repeats():
    assert spread_views(4, 10).tolist() == [0, 3, 6, 9]
    assert spread_views(32, 5).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"num_frames": 0}, "num_frames"), ({"num_frames": 4, "elevation_deg": 95}, "elevation"),
     ({"num_frames": 4, "fov_deg": 0}, "fov"), ({"num_frames": 4, "direction": 2}, "direction")],
)
def test_bad_orbit_parameters_name_the_field(kwargs, field):
    with pytest.raises(InputError) as info:
        Orbit(**kwargs)
    assert info.value.field == field


def test_cameras_on_the_sphere_match_look_at():
    orbit = Orbit(num_frames=7, elevation_deg=-35.0, radius=1.7, start_azimuth_deg=20.0, direction=-1)
    cameras = Cameras.on_sphere(orbit.azimuths_deg(), orbit.elevation_deg, orbit.radius, orbit.fov_deg)
    np.testing.assert_allclose(cameras.c2w, orbit.camera_to_world(), atol=1e-12)
