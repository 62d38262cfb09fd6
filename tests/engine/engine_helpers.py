"""Shared by the engine tests (a plain module: ``conftest`` names collide across test folders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
# Small enough for two busy CPU cores: 4x4 latents, 3 latent frames.
SIZE = {"width": 32, "height": 32, "num_frames": 9}


def read_frames(paths) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in paths])
