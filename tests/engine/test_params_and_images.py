"""Every bad parameter and image is rejected with an InputError naming the field, before model work."""

from __future__ import annotations

import io

import numpy as np
import pytest
from droplet3d.engine import GenerationParams, load_input_image
from droplet3d.errors import InputError
from PIL import Image


@pytest.mark.parametrize(
    ("kind", "overrides", "field"),
    [
        ("droplet3d", {"prompt": "  "}, "prompt"),
        ("droplet3d", {"width": 500}, "width"),
        ("droplet3d", {"height": 8}, "height"),
        ("droplet3d", {"width": 4096}, "width"),
        ("droplet3d", {"width": 64.0}, "width"),
        ("droplet3d", {"num_frames": 0}, "num_frames"),
        ("droplet3d", {"num_frames": -3}, "num_frames"),
        ("droplet3d", {"steps": 0}, "steps"),
        ("droplet3d", {"steps": True}, "steps"),
        ("droplet3d", {"guidance_scale": -0.5}, "guidance_scale"),
        ("droplet3d", {"guidance_scale": float("nan")}, "guidance_scale"),
        ("droplet3d", {"seed": -1}, "seed"),
        ("droplet3d", {"fps": 8}, "fps"),
        ("dropletvideo", {"fps": 0}, "fps"),
        ("dropletvideo", {"view_align": True}, "view_align"),
        ("droplet3d", {"negative_prompt": 3}, "negative_prompt"),
    ],
)
def test_bad_params_name_their_field(kind, overrides, field):
    params = GenerationParams(**{"prompt": "a cup", **overrides})
    with pytest.raises(InputError) as err:
        params.validate(kind)
    assert err.value.field == field


def test_defaults_resolve_per_model():
    d3 = GenerationParams(prompt="a cup").validate("droplet3d")
    assert (d3.width, d3.height, d3.num_frames, d3.fps, d3.seed) == (512, 512, 85, None, 42)
    dv = GenerationParams(prompt="a cup", seed=None).validate("dropletvideo")
    assert (dv.width, dv.height, dv.num_frames, dv.fps) == (672, 384, 85, 16)
    assert isinstance(dv.seed, int) and dv.seed >= 0


def test_bad_params_fail_before_model_work(engine_3d, picture):
    stages = []
    with pytest.raises(InputError):
        engine_3d.generate(picture, GenerationParams(prompt="x", width=33), progress=lambda *e: stages.append(e))
    assert stages == []


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing.png", "not found"),
        (lambda tmp: b"", "empty"),
        (lambda tmp: b"this is not an image at all", "not an image"),
        (lambda tmp: _png(Image.new("RGB", (64, 64), (9, 9, 9)))[:120], "truncated"),
    ],
)
def test_bad_images_are_rejected(tmp_path, make, message):
    with pytest.raises(InputError) as err:
        load_input_image(make(tmp_path))
    assert err.value.field == "image"
    assert message in str(err.value)


def test_truncated_jpeg_is_rejected():
    buf = io.BytesIO()
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    with pytest.raises(InputError, match="truncated"):
        load_input_image(buf.getvalue()[: len(buf.getvalue()) // 2])


def test_images_over_the_pixel_cap_are_rejected():
    with pytest.raises(InputError, match="cap") as err:
        load_input_image(_png(Image.new("RGB", (100, 100))), max_pixels=99 * 100)
    assert err.value.field == "image"


def test_exif_orientation_is_honoured():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90° clockwise turn
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif, quality=95)
    out = load_input_image(buf.getvalue())
    assert out.size == (20, 40)
    top = np.asarray(out)[2, 10]
    assert top[2] > 200 and top[0] < 60  # the blue left edge is now at the top


def test_rgba_is_composited_on_black():
    rgba = Image.new("RGBA", (8, 8), (255, 255, 255, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 255, 0, 128))
    out = np.asarray(load_input_image(_png(rgba)))
    assert out.dtype == np.uint8 and out.shape == (8, 8, 3)
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[5, 5]) == (0, 0, 0)
    assert 120 <= out[0, 1, 1] <= 135 and out[0, 1, 0] == 0


def test_la_grayscale_16bit_and_palette_are_converted():
    la = Image.new("LA", (4, 4), (200, 0))
    assert tuple(np.asarray(load_input_image(_png(la)))[0, 0]) == (0, 0, 0)
    gray = Image.new("L", (4, 4), 77)
    assert tuple(np.asarray(load_input_image(_png(gray)))[0, 0]) == (77, 77, 77)
    deep = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert tuple(np.asarray(load_input_image(_png(deep)))[0, 0]) == (255, 255, 255)
    mid = Image.fromarray(np.full((4, 4), 257 * 100, dtype=np.uint16))
    assert tuple(np.asarray(load_input_image(_png(mid)))[0, 0]) == (100, 100, 100)
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    assert tuple(np.asarray(load_input_image(_png(pal)))[0, 0]) == (10, 20, 30)
    pal.info["transparency"] = 1
    assert tuple(np.asarray(load_input_image(_png(pal)))[0, 0]) == (0, 0, 0)
