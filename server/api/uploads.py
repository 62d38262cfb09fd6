"""Checking uploaded files before a job is queued: type sniffing, pixel caps, zip-bomb guards.

Everything here runs on the HTTP side in a thread pool and costs at most a decode per image,
so a bad upload is a 4xx at once instead of a failed job later. Uploaded names are never used
as paths: frames are stored as ``frames/0000.<ext>`` in the order given.
"""

from __future__ import annotations

import io
import re
import shutil
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from ..recon.limits import MIN_FRAMES
from .http_errors import ApiError

IMAGE_TYPES = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpg"}
MAX_ZIP_RATIO = 200  # image files barely compress; a higher ratio is a bomb, not a frame
_CHUNK = 1 << 20


def sniff_image(head: bytes) -> str | None:
    """``"png"``, ``"jpg"`` or ``"webp"`` from the first bytes, or None."""
    for magic, ext in IMAGE_TYPES.items():
        if head.startswith(magic):
            return ext
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def sniff_video(head: bytes) -> str | None:
    """``"mp4"`` (MP4/MOV), ``"webm"`` (WebM/Matroska) or ``"avi"`` from the first bytes, or None."""
    if head[4:8] == b"ftyp":
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def is_zip(head: bytes) -> bool:
    return head.startswith((b"PK\x03\x04", b"PK\x05\x06"))


def read_head(fh: BinaryIO, n: int = 16) -> bytes:
    fh.seek(0)
    head = fh.read(n)
    fh.seek(0)
    return head


def check_image_bytes(data: bytes, field: str, max_pixels: int) -> tuple[str, tuple[int, int]]:
    """Sniff, check the pixel count from the header, then decode fully. Returns ``(ext, (w, h))``."""
    ext = sniff_image(data[:16])
    if ext is None:
        raise ApiError(415, "not a PNG, JPEG or WebP image", field=field, code="unsupported_media_type")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width < 1 or height < 1:
                raise ApiError(400, "image has no pixels", field=field, code="invalid_upload")
            if width * height > max_pixels:
                raise ApiError(413, f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
                               field=field, code="image_too_large")
            img.load()
    except ApiError:
        raise
    except Image.DecompressionBombError as exc:
        raise ApiError(413, str(exc), field=field, code="image_too_large") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ApiError(400, f"broken {ext} image: {exc}", field=field, code="invalid_upload") from exc
    return ext, (width, height)


def save_image(src: BinaryIO, dest_stem: Path, field: str, max_pixels: int) -> Path:
    """Check an uploaded image and store it as ``dest_stem.<ext>``."""
    data = src.read()
    ext, _size = check_image_bytes(data, field, max_pixels)
    dest = dest_stem.with_suffix(f".{ext}")
    dest.write_bytes(data)
    return dest


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _write_frames(blobs: list[tuple[str, bytes]], frames_dir: Path, field: str, max_pixels: int) -> int:
    if len(blobs) < MIN_FRAMES:
        raise ApiError(422, f"{len(blobs)} frame(s) given; at least {MIN_FRAMES} are needed", field=field,
                       code="invalid_upload")
    first_size, exts = None, []
    for label, data in blobs:  # check every frame before writing any
        ext, size = check_image_bytes(data, f"{field}[{label}]", max_pixels)
        if first_size is None:
            first_size = size
        elif size != first_size:
            raise ApiError(422, f"frame {label} is {size[0]}x{size[1]}, the first is {first_size[0]}x{first_size[1]}",
                           field=f"{field}[{label}]", code="invalid_upload")
        exts.append(ext)
    frames_dir.mkdir(parents=True, exist_ok=True)
    for index, ((_label, data), ext) in enumerate(zip(blobs, exts, strict=True)):
        (frames_dir / f"{index:04d}.{ext}").write_bytes(data)
    return len(blobs)


def save_frame_files(files: list[tuple[str, BinaryIO]], frames_dir: Path, field: str, *, max_frames: int,
                     max_pixels: int) -> int:
    """Store several uploaded frame images, in the order given."""
    if len(files) > max_frames:
        raise ApiError(413, f"{len(files)} frames; the limit is {max_frames}", field=field, code="too_many_frames")
    blobs = [(str(i), fh.read()) for i, (_name, fh) in enumerate(files)]
    return _write_frames(blobs, frames_dir, field, max_pixels)


def save_frames_zip(src: BinaryIO, frames_dir: Path, field: str, *, max_frames: int, max_pixels: int,
                    max_unpacked: int) -> int:
    """Unpack a zip of frame images (ordered by name, numbers compared as numbers) with bomb guards:
    entry count, declared and actual unpacked size, compression ratio, no encrypted or unsafe entries."""
    try:
        archive = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ApiError(400, f"not a readable zip: {exc}", field=field, code="invalid_upload") from exc
    with archive:
        entries = []
        for info in archive.infolist():
            path = PurePosixPath(info.filename.replace("\\", "/"))
            if path.is_absolute() or ".." in path.parts or ":" in info.filename:
                raise ApiError(400, f"unsafe entry name in zip: {info.filename!r}", field=field, code="invalid_upload")
            if info.is_dir() or path.parts[0] == "__MACOSX" or path.name.startswith("."):
                continue
            entries.append(info)
        if len(entries) > max_frames:
            raise ApiError(413, f"zip holds {len(entries)} files; the limit is {max_frames} frames", field=field,
                           code="too_many_frames")
        declared = sum(info.file_size for info in entries)
        if declared > max_unpacked:
            raise ApiError(413, f"zip unpacks to {declared} bytes; the limit is {max_unpacked}", field=field,
                           code="payload_too_large")
        blobs, total = [], 0
        for info in sorted(entries, key=lambda i: _natural_key(i.filename)):
            if info.flag_bits & 0x1:
                raise ApiError(400, f"encrypted zip entry: {info.filename!r}", field=field, code="invalid_upload")
            if info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
                raise ApiError(413, f"zip entry {info.filename!r} expands {info.file_size}/{info.compress_size}x: "
                               "refusing a zip bomb", field=field, code="payload_too_large")
            try:
                with archive.open(info) as member:
                    data = member.read(info.file_size + 1)  # never more than declared, whatever the header says
            except (zipfile.BadZipFile, OSError, RuntimeError, ValueError, EOFError, NotImplementedError) as exc:
                raise ApiError(400, f"cannot read zip entry {info.filename!r}: {exc}", field=field,
                               code="invalid_upload") from exc
            total += len(data)
            if len(data) > info.file_size or total > max_unpacked:
                raise ApiError(413, f"zip entry {info.filename!r} is larger than declared", field=field,
                               code="payload_too_large")
            blobs.append((info.filename, data))
    return _write_frames(blobs, frames_dir, field, max_pixels)


def save_video(src: BinaryIO, dest_stem: Path, field: str, *, max_pixels: int) -> Path:
    """Store an uploaded video after checking that ffmpeg can decode its first frame."""
    head = read_head(src)
    ext = sniff_video(head)
    if ext is None:
        raise ApiError(415, "not an MP4/MOV, WebM/MKV or AVI video", field=field, code="unsupported_media_type")
    dest = dest_stem.with_suffix(f".{ext}")
    with open(dest, "wb") as out:
        shutil.copyfileobj(src, out, _CHUNK)
    import imageio_ffmpeg  # here: only video uploads need it

    reader = imageio_ffmpeg.read_frames(str(dest))
    try:
        meta = next(reader)
        width, height = meta["size"]
        if width * height > max_pixels:
            raise ApiError(413, f"video is {width}x{height}; the limit is {max_pixels} pixels per frame", field=field,
                           code="image_too_large")
        next(reader)
    except ApiError:
        raise
    except (StopIteration, RuntimeError, OSError, KeyError, ValueError, TypeError) as exc:
        raise ApiError(400, f"ffmpeg cannot decode this video: {str(exc)[:300]}", field=field,
                       code="invalid_upload") from exc
    finally:
        reader.close()
    return dest
