"""The surface of revolution that unchanging outlines describe."""

import numpy as np
from conftest import BALL_RADIUS, sphere_masks
from droplet3d.orbit import Orbit
from droplet3d.recon.revolution import revolution_profile

SIZE = 128


def test_the_profile_of_a_ball_is_its_radius_at_each_height():
    orbit = Orbit(num_frames=24, elevation_deg=15.0, fov_deg=40.0, radius=2.5)
    profile = revolution_profile(sphere_masks(orbit, SIZE), orbit.cameras())
    middle = np.abs(profile.z) < 0.35  # the poles' radius changes too fast for a pixel's accuracy
    # From above, the hull reaches a little below the ball (the cone under it that no view sees).
    assert middle.sum() > 40 and -0.6 < profile.z.min() < -0.45 and abs(profile.z.max() - 0.5) < 0.03
    truth = np.sqrt(BALL_RADIUS**2 - profile.z[middle] ** 2)
    error = profile.radius[middle] / truth - 1.0  # the masks' edge pixels and the hull's polygon add a little
    assert np.abs(error).max() < 0.05 and np.abs(error).mean() < 0.03
    # A point's offset from the surface, and its gradient: outward along the radius, against the profile's slope.
    points = np.array([[0.6, 0.0, 0.0], [0.0, 0.3, 0.0], [0.0, 0.45, 0.2]])
    offset, gradient = profile.offset(points)
    assert abs(offset[0] - 0.1) < 0.01 and abs(offset[1] + 0.2) < 0.01
    assert np.allclose(gradient[0, :2], [1.0, 0.0]) and abs(gradient[0, 2]) < 0.1  # flat at the equator
    assert gradient[2, 2] > 0.2  # above it the radius shrinks: rising takes a point further out


def test_a_mask_set_with_no_common_hull_gives_no_profile():
    orbit = Orbit(num_frames=12, elevation_deg=15.0, fov_deg=40.0, radius=2.5)
    masks = np.zeros((12, SIZE, SIZE), bool)
    masks[:6, :8, :8] = True  # a corner speck in half the views, nothing in the others
    assert revolution_profile(masks, orbit.cameras()) is None
