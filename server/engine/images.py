"""Input images: whatever PIL reads, made into the RGB picture the model expects."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

# 64 MP: far above any useful input (the model sees 512x512) yet below Pillow's decompression-bomb guard.
DEFAULT_MAX_PIXELS = 64_000_000
# Transparent pixels become black: the published Droplet3D example input is a front view on a black background,
# and the training renders put objects on a plain dark backdrop.
BACKGROUND_RGB = (0, 0, 0)

ImageSource = str | Path | bytes | bytearray | Image.Image


def load_input_image(
    src: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, background: tuple[int, int, int] = BACKGROUND_RGB
) -> Image.Image:
    """Open ``src`` (path, bytes or PIL image) as an upright 8-bit RGB image.

    EXIF orientation is applied; alpha (RGBA, LA, palette transparency) is composited on ``background``;
    16-bit, float, grayscale, palette and CMYK images are converted. Raises :class:`InputError` (field
    ``image``) for a missing, non-image, truncated or oversized file.
    """
    return load_input(src, max_pixels, background)[0]


def load_input(
    src: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, background: tuple[int, int, int] = BACKGROUND_RGB
) -> tuple[Image.Image, Image.Image | None]:
    """:func:`load_input_image`'s picture, and the source's transparency as an upright 8-bit ``L`` image (None when
    it has none or is fully opaque): a cut-out render of the object (the add-on's) is frame 0's exact mask."""
    img = _open(src)
    width, height = img.size
    if width < 1 or height < 1:
        raise InputError(f"image has no pixels ({width}x{height})", field="image")
    if width * height > max_pixels:
        raise InputError(f"image is {width}x{height} = {width * height} pixels, above the cap of {max_pixels}",
                         field="image")
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"image file is truncated or corrupt: {exc}", field="image") from None
    img = _rgb_or_rgba(img)
    if img.mode != "RGBA":
        return img, None
    alpha = img.getchannel("A")
    base = Image.new("RGBA", img.size, (*background, 255))
    return Image.alpha_composite(base, img).convert("RGB"), alpha if alpha.getextrema()[0] < 255 else None


def _open(src: ImageSource) -> Image.Image:
    if isinstance(src, Image.Image):
        return src.copy()
    if isinstance(src, (bytes, bytearray)):
        if not src:
            raise InputError("image is empty (0 bytes)", field="image")
        stream, name = io.BytesIO(bytes(src)), "uploaded image"
    else:
        path = Path(src)
        if not path.is_file():
            raise InputError(f"image file not found: {path}", field="image")
        stream, name = io.BytesIO(path.read_bytes()), str(path)
    try:
        return Image.open(stream)
    except UnidentifiedImageError:
        raise InputError(f"{name} is not an image PIL can read", field="image") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"{name} is too large: {exc}", field="image") from None
    except OSError as exc:
        raise InputError(f"{name} cannot be read as an image: {exc}", field="image") from None


def _rgb_or_rgba(img: Image.Image) -> Image.Image:
    """8-bit RGBA when the image carries transparency, else 8-bit RGB."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        # Integer modes hold 16-bit samples; float images are taken as 0..1.
        arr = arr * 255.0 if img.mode == "F" else arr / 257.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "La", "PA", "RGBa") or (img.mode == "L" and "transparency" in img.info):
        img = img.convert("RGBA")
    return img if img.mode == "RGBA" else img.convert("RGB")
