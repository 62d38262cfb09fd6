"""Loading an orbit: a folder of frames (PNG/JPG/WebP, optional alpha) or a video file, checked up front."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from .limits import MIN_FRAMES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # what the service's uploads accept
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")


@dataclass
class Frames:
    """An orbit's frames in order: ``rgb (N, H, W, 3) uint8`` and ``alpha (N, H, W) uint8`` or None.

    ``alpha`` is exact only on the frames where ``has_alpha (N,) bool`` holds (all of them by default): the add-on
    may send frame 0 as a cut-out render beside generated frames without one.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    names: list[str]  # source file names (or ``0000.png…`` for a video)
    source_dir: Path | None  # the folder the frames came from (None for a video)
    has_alpha: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.has_alpha is None:
            self.has_alpha = np.full(self.count, self.alpha is not None)

    @property
    def count(self) -> int:
        return self.rgb.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``."""
        return self.rgb.shape[2], self.rgb.shape[1]


def load_frames(source: str | Path) -> Frames:
    """Read every frame of ``source`` (a folder or a video); raise InputError naming the problem."""
    source = Path(source)
    if source.is_dir():
        frames = _load_folder(source)
    elif source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES:
        frames = _load_video(source)
    elif source.exists():
        raise InputError(f"{source.name} is neither a folder of frames nor a video ({', '.join(VIDEO_SUFFIXES)})",
                         field="source")
    else:
        raise InputError(f"{source} does not exist", field="source")
    if frames.count < MIN_FRAMES:
        raise InputError(f"an orbit needs at least {MIN_FRAMES} frames, {source.name} has {frames.count}",
                         field="frames")
    return frames


def _load_folder(folder: Path) -> Frames:
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise InputError(f"{folder} holds no frames (PNG, JPG or WebP files)", field="frames")
    rgb, alpha = [], []
    for path in paths:
        try:
            with Image.open(path) as im:
                im.load()
                has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
                im = im.convert("RGBA" if has_alpha else "RGB")
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise InputError(f"cannot read frame {path.name}: {exc}", field="frames") from exc
        array = np.asarray(im)
        if rgb and array.shape[:2] != rgb[0].shape[:2]:
            raise InputError(f"frames differ in size: {paths[0].name} is {rgb[0].shape[1]}x{rgb[0].shape[0]}, "
                             f"{path.name} is {array.shape[1]}x{array.shape[0]}", field="frames")
        rgb.append(array[..., :3])
        alpha.append(array[..., 3] if array.shape[2] == 4 else None)
    # A frame's alpha counts when it actually cuts something out (an opaque RGBA export carries no mask).
    has_alpha = np.array([a is not None and bool((a < 255).any()) for a in alpha])
    stacked = np.stack([a if a is not None else np.full(rgb[0].shape[:2], 255, np.uint8) for a in alpha])
    return Frames(np.stack(rgb), stacked if has_alpha.any() else None, [p.name for p in paths], folder,
                  has_alpha)


def _load_video(path: Path) -> Frames:
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        width, height = meta["size"]
        rgb = [np.frombuffer(buf, np.uint8).reshape(height, width, 3) for buf in reader]
    except (OSError, RuntimeError, StopIteration, KeyError) as exc:
        raise InputError(f"cannot decode video {path.name}: {exc}", field="source") from exc
    if not rgb:
        raise InputError(f"video {path.name} has no frames", field="source")
    return Frames(np.stack(rgb), None, [f"{k:04d}.png" for k in range(len(rgb))], None)


def with_frame0_alpha(frames: Frames, path: Path) -> Frames:
    """``frames`` with frame 0's alpha read from ``path``: an exact 8-bit cut-out of the frames' size (an orbit
    generated from a cut-out render starts from that render)."""
    try:
        with Image.open(path) as im:
            alpha = np.asarray(im.convert("L"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InputError(f"cannot read frame 0's cut-out {path.name}: {exc}", field="frame0_alpha") from exc
    height, width = frames.rgb.shape[1:3]
    if alpha.shape != (height, width):
        raise InputError(f"frame 0's cut-out {path.name} is {alpha.shape[1]}x{alpha.shape[0]}, the frames are "
                         f"{width}x{height}", field="frame0_alpha")
    stacked = np.full(frames.rgb.shape[:3], 255, np.uint8) if frames.alpha is None else frames.alpha.copy()
    stacked[0] = alpha
    has_alpha = frames.has_alpha.copy()
    has_alpha[0] = True
    return replace(frames, alpha=stacked, has_alpha=has_alpha)

