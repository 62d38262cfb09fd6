"""Every bad input gets an InputError naming the problem, and nothing is written."""

import numpy as np
import pytest
from droplet3d.errors import InputError, ReconstructionError
from droplet3d.recon import ReconOptions, calibrate, reconstruct
from PIL import Image

GIVEN = ReconOptions(elevation_deg=20.0, fov_deg=40.0, direction="ccw", closed=False)


def _frames(folder, count=10, size=(64, 64), draw=True, fill=None):
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        image = np.full((size[1], size[0], 3), 230, np.uint8)
        if draw:
            image[20:44, 16 + k % 4:40 + k % 4] = (200, 40, 30)
        if fill is not None:
            image[:] = fill(k, image.shape)
        Image.fromarray(image).save(folder / f"{k:04d}.png")
    return folder


def _too_close(k, shape):
    """A disc a little wider than the frame: the object is cut off on all four sides."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    image = np.full(shape, 230, np.uint8)
    image[np.hypot(xx - shape[1] / 2, yy - shape[0] / 2) < 0.52 * shape[1]] = (200, 40, 30)
    return image


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda d: (d / "frames").mkdir() or d / "frames", "no frames"),
        (lambda d: _frames(d / "frames", count=5), "at least 8 frames"),
        (lambda d: d / "missing", "does not exist"),
    ],
    ids=["empty-folder", "too-few-frames", "missing-source"],
)
def test_bad_frame_sets_are_refused_with_the_reason_and_nothing_written(tmp_path, make, words):
    source = make(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=words) as info:
        reconstruct(source, out, GIVEN)
    assert info.value.field in ("frames", "source")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


@pytest.mark.parametrize(
    ("fill", "code", "words"),
    [(None, "no_foreground", "no foreground"), (_too_close, "foreground_clipped", "touches every border")],
    ids=["no-foreground", "foreground-everywhere"],
)
def test_frames_without_a_usable_object_fail_as_reconstruction_not_as_input(tmp_path, fill, code, words):
    source = _frames(tmp_path / "frames", draw=False, fill=fill)
    out = tmp_path / "out"
    with pytest.raises(ReconstructionError, match=words) as info:
        reconstruct(source, out, GIVEN)
    assert info.value.code == code and not isinstance(info.value, InputError)
    assert not out.exists()


def test_unreadable_frame_is_named(tmp_path):
    folder = _frames(tmp_path / "frames")
    (folder / "0003.png").write_bytes(b"not a png at all")
    with pytest.raises(InputError, match=r"cannot read frame 0003\.png"):
        calibrate(folder, tmp_path / "out", GIVEN)


def test_mixed_frame_sizes_are_named(tmp_path):
    folder = _frames(tmp_path / "frames")
    Image.new("RGB", (80, 64), (230, 230, 230)).save(folder / "0009.png")
    with pytest.raises(InputError, match=r"differ in size.*0009\.png is 80x64"):
        calibrate(folder, tmp_path / "out", GIVEN)


def test_a_file_that_is_neither_frames_nor_video_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(InputError, match="neither a folder of frames nor a video") as info:
        calibrate(path, tmp_path / "out", GIVEN)
    assert info.value.field == "source"


def test_undecodable_video_is_refused(tmp_path):
    path = tmp_path / "orbit.mp4"
    path.write_bytes(b"\x00" * 1000)
    with pytest.raises(InputError, match="video") as info:
        calibrate(path, tmp_path / "out", GIVEN)
    assert info.value.field == "source"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"direction": "up"}, "direction"), ({"resolution": 8}, "resolution"), ({"face_budget": 3}, "face_budget"),
     ({"texture_size": 1000}, "texture_size"), ({"formats": ("fbx",)}, "formats"), ({"elevation_deg": 95.0}, None)],
)
def test_bad_options_name_the_field(tmp_path, kwargs, field):
    with pytest.raises(InputError) as info:
        calibrate(_frames(tmp_path / "frames"), tmp_path / "out", ReconOptions(**kwargs))
    assert info.value.field == (field or "elevation")
    assert not (tmp_path / "out").exists()
