import json
import math

import numpy as np
import pytest
from droplet3d.errors import InputError
from droplet3d.orbit import Orbit, look_at, project, read_transforms, write_transforms


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
        uv, depth = project(np.zeros((1, 3)), np.array(frame["transform_matrix"]), K)
        np.testing.assert_allclose(uv[0], [w / 2, h / 2], atol=1e-9)
        assert depth[0] == pytest.approx(2.5)
    # The world +Z axis tip appears above the centre (smaller v) in frame 0; fov spans the larger side.
    uv, _ = project(np.array([[0.0, 0.0, 0.1]]), np.array(data["frames"][0]["transform_matrix"]), K)
    assert uv[0, 1] < h / 2
    assert data["camera_angle_x"] == pytest.approx(math.radians(50.0))
    again, _ = read_transforms(tmp_path / "transforms.json")
    assert again == orbit


def test_point_right_of_centre_in_front_view_projects_right():
    orbit = Orbit(num_frames=1, radius=2.0)
    uv, _ = project(np.array([[0.1, 0.0, 0.0]]), orbit.camera_to_world()[0], orbit.intrinsics(100, 100))
    assert uv[0, 0] > 50


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"num_frames": 0}, "num_frames"), ({"num_frames": 4, "elevation_deg": 95}, "elevation"),
     ({"num_frames": 4, "fov_deg": 0}, "fov"), ({"num_frames": 4, "direction": 2}, "direction")],
)
def test_bad_orbit_parameters_name_the_field(kwargs, field):
    with pytest.raises(InputError) as info:
        Orbit(**kwargs)
    assert info.value.field == field
