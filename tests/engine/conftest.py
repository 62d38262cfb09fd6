"""Tiny checkpoints, each built once per session and layout, and engines loaded once per checkpoint.

Every checkpoint fixture is parametrised over both layouts ("diffusers" and "authors", vocabulary.py), so each test
that uses one runs on both.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from droplet3d.engine.vocabulary import LAYOUTS
from PIL import Image


def _flip_flag(src: Path, dst: Path, key: str, value) -> Path:
    """A copy of ``src`` with one transformer config value changed (same weights)."""
    shutil.copytree(src, dst)
    cfg_path = dst / "transformer" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg[key] = value
    cfg_path.write_text(json.dumps(cfg))
    return dst


@pytest.fixture(scope="session", params=LAYOUTS)
def layout(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory, layout) -> Path:
    return tmp_path_factory.mktemp(f"tiny-{layout}")


@pytest.fixture(scope="session")
def ckpt_3d(tiny_root, layout) -> Path:
    from droplet3d.engine import make_tiny_checkpoint

    return make_tiny_checkpoint(tiny_root / "droplet3d", layout=layout)


@pytest.fixture(scope="session")
def ckpt_rotary(tiny_root, layout) -> Path:
    from droplet3d.engine import make_tiny_checkpoint

    return make_tiny_checkpoint(tiny_root / "rotary", rotary=True, layout=layout)


@pytest.fixture(scope="session")
def ckpt_video(tiny_root, layout) -> Path:
    from droplet3d.engine import make_tiny_checkpoint

    return make_tiny_checkpoint(tiny_root / "video", kind="dropletvideo", layout=layout)


@pytest.fixture(scope="session")
def ckpt_align(tiny_root, layout) -> Path:
    from droplet3d.engine import make_tiny_checkpoint

    return make_tiny_checkpoint(tiny_root / "with_align", with_align=True, layout=layout)


@pytest.fixture(scope="session")
def ckpt_noise(tiny_root, ckpt_3d) -> Path:
    return _flip_flag(ckpt_3d, tiny_root / "noise", "add_noise_in_inpaint_model", True)


def _cpu_engine(ckpt: Path):
    from droplet3d.engine import DropletEngine

    engine = DropletEngine.load(str(ckpt), device="cpu")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def engine_3d(ckpt_3d):
    yield from _cpu_engine(ckpt_3d)


@pytest.fixture(scope="session")
def engine_rotary(ckpt_rotary):
    yield from _cpu_engine(ckpt_rotary)


@pytest.fixture(scope="session")
def engine_video(ckpt_video):
    yield from _cpu_engine(ckpt_video)


@pytest.fixture(scope="session")
def engine_noise(ckpt_noise):
    yield from _cpu_engine(ckpt_noise)


@pytest.fixture(scope="session")
def picture() -> Image.Image:
    """A structured test picture (a bright square on black, as the model's inputs look)."""
    arr = np.zeros((48, 40, 3), dtype=np.uint8)
    arr[10:38, 8:30] = (220, 120, 40)
    arr[20:28, 14:22] = (30, 200, 90)
    return Image.fromarray(arr)
