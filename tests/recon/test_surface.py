"""The face budget holds: per-component decimation, a coarser remesh when decimation cannot stay closed."""

import numpy as np
import pytest
from droplet3d.errors import ReconstructionError
from droplet3d.recon.hull import Volume, grid_points
from droplet3d.recon.surface import extract_surface


def blobs(centres, radii, n: int = 96) -> Volume:
    """A field (positive inside) of spheres on an ``n³`` grid over [−1, 1]³."""
    spacing = 2.0 / (n - 1)
    origin = np.full(3, -1.0)
    points = grid_points(origin, spacing, (n, n, n))
    values = np.full(len(points), -1e3, np.float32)
    for centre, radius in zip(centres, radii, strict=True):
        values = np.maximum(values, (radius - np.linalg.norm(points - centre, axis=1)) / spacing)
    return Volume(values.reshape(n, n, n).astype(np.float32), origin, spacing)


@pytest.mark.parametrize("budget", [100, 400, 3000])
def test_one_body_comes_back_closed_within_the_budget(budget):
    mesh = extract_surface(blobs([np.zeros(3)], [0.8]), face_budget=budget)
    assert len(mesh.faces) <= budget and mesh.is_watertight and mesh.volume > 0
    assert abs(mesh.volume - 4 / 3 * np.pi * 0.8**3) < 0.1 * 4 / 3 * np.pi * 0.8**3


def test_many_parts_share_the_budget_and_none_is_dropped():
    # A large body and twelve small ones: each part keeps a share proportional to its surface.
    rng = np.random.default_rng(0)
    centres = [np.zeros(3)] + [np.r_[0.8 * np.cos(a), 0.8 * np.sin(a), rng.uniform(-0.5, 0.5)]
                               for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)]
    mesh = extract_surface(blobs(centres, [0.5] + [0.12] * 12, n=128), face_budget=600)
    assert len(mesh.faces) <= 600 and mesh.is_watertight
    assert len(mesh.split(only_watertight=False)) == 13


def test_a_budget_too_small_for_every_part_still_holds():
    # Twenty-four separate beads cannot each stay a closed surface with under two faces apiece: whatever comes
    # back (a coarser remesh, or an open mesh that the manifest marks as such) never exceeds the budget.
    centres = [np.r_[x, y, 0.0] for x in np.linspace(-0.8, 0.8, 6) for y in np.linspace(-0.8, 0.8, 4)]
    mesh = extract_surface(blobs(centres, [0.1] * 24, n=64), face_budget=40)
    assert 0 < len(mesh.faces) <= 40


def test_an_empty_volume_is_a_named_reconstruction_error():
    with pytest.raises(ReconstructionError, match="empty") as info:
        extract_surface(blobs([np.zeros(3)], [-0.1]))
    assert info.value.code == "empty_reconstruction"
