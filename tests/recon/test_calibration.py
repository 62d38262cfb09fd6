"""Orbit calibration from silhouettes, and the camera conventions of transforms.json against Blender."""

import json

import imageio_ffmpeg
import numpy as np
from conftest import SUZANNE_ORBIT, render_orbit, rendered
from droplet3d.orbit import Orbit, project, projection_matrices, read_transforms
from droplet3d.recon import ReconOptions, calibrate
from droplet3d.recon.calibration import detect_closed_loop
from droplet3d.recon.frames import load_frames
from droplet3d.recon.masks import compute_masks
from PIL import Image


def test_calibration_recovers_elevation_fov_and_a_clockwise_direction(tmp_path):
    truth = Orbit(num_frames=24, elevation_deg=15.0, fov_deg=45.0, radius=2.5, direction=-1)
    frames = rendered("suzanne", truth) / "frames"
    orbit = calibrate(frames, tmp_path / "job", ReconOptions(radius=2.5))
    assert abs(orbit.elevation_deg - 15.0) <= 2.0
    assert abs(orbit.fov_deg - 45.0) <= 2.0
    assert orbit.direction == -1 and orbit.closed is False
    again, data = read_transforms(tmp_path / "job" / "transforms.json")
    assert again == orbit and len(data["frames"]) == 24
    assert len(list((tmp_path / "job" / "masks").iterdir())) == 24


def test_a_closed_loop_is_detected_and_an_open_one_is_not():
    closed = Orbit(num_frames=12, elevation_deg=20.0, fov_deg=40.0, radius=2.5, closed=True)
    frames = load_frames(rendered("textured", closed) / "frames")
    assert detect_closed_loop(compute_masks(frames.rgb), frames.rgb)
    frames = load_frames(rendered("suzanne", SUZANNE_ORBIT) / "frames")
    assert not detect_closed_loop(compute_masks(frames.rgb), frames.rgb)


def test_given_parameters_are_used_as_given(tmp_path, suzanne):
    options = ReconOptions(elevation_deg=31.0, fov_deg=33.0, radius=4.0, direction="cw", start_azimuth_deg=12.0,
                           closed=True)
    orbit = calibrate(suzanne / "frames", tmp_path / "job", options)
    assert orbit == Orbit(num_frames=24, elevation_deg=31.0, fov_deg=33.0, radius=4.0, direction=-1,
                          start_azimuth_deg=12.0, closed=True)


def test_transforms_json_camera_reprojects_a_known_point_onto_blenders_render(tmp_path):
    orbit = Orbit(num_frames=8, elevation_deg=20.0, fov_deg=40.0, radius=2.5, start_azimuth_deg=30.0)
    folder = rendered("marker", orbit)
    options = ReconOptions(elevation_deg=20.0, fov_deg=40.0, radius=2.5, direction="ccw", start_azimuth_deg=30.0,
                           closed=False)
    calibrate(folder / "frames", tmp_path / "job", options)
    data = json.loads((tmp_path / "job" / "transforms.json").read_text())
    K = np.array([[data["fl_x"], 0, data["cx"]], [0, data["fl_y"], data["cy"]], [0, 0, 1]])
    for frame in data["frames"]:
        image = np.asarray(Image.open(tmp_path / "job" / frame["file_path"]), np.float64)
        red = (image[..., 0] > 200) & (image[..., 1] < 120)
        ys, xs = np.nonzero(red)
        # Pixel (0, 0)'s centre is at (0.5, 0.5) in the conventions of droplet3d.orbit.
        centroid = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
        proj = projection_matrices(np.array(frame["transform_matrix"]), K)
        uv, depth = project(np.array([render_orbit.MARKER]), proj)
        assert depth[0] > 0
        np.testing.assert_allclose(uv[0], centroid, atol=0.75)


def test_a_video_orbit_is_calibrated_and_its_frames_written_for_transforms_json(tmp_path, suzanne):
    frames = load_frames(suzanne / "frames")
    video = tmp_path / "orbit.mp4"
    writer = imageio_ffmpeg.write_frames(str(video), (128, 128), fps=16, quality=9, macro_block_size=16)
    writer.send(None)
    for image in frames.rgb:
        writer.send(np.ascontiguousarray(image))
    writer.close()
    options = ReconOptions(elevation_deg=25.0, fov_deg=40.0, radius=2.5, direction="ccw", closed=False)
    orbit = calibrate(video, tmp_path / "job", options)
    assert orbit.num_frames == 24
    _, data = read_transforms(tmp_path / "job" / "transforms.json")
    assert data["frames"][5]["file_path"] == "frames/0005.png"
    assert Image.open(tmp_path / "job" / "frames" / "0005.png").size == (128, 128)
    video_masks = np.stack([np.asarray(Image.open(tmp_path / "job" / "masks" / f"{k:04d}.png")) > 0
                            for k in range(24)])
    png_masks = compute_masks(frames.rgb)
    assert (video_masks & png_masks).sum() / (video_masks | png_masks).sum() > 0.95
