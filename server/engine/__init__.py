"""Droplet3D and DropletVideo generation on diffusers components.

The public names load lazily so that ``droplet3d --help`` and the CLI modules stay free of torch imports.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DropletEngine": ".engine",
    "GenerationParams": ".engine",
    "Generation": ".engine",
    "GenerationResult": ".engine",
    "write_orbit_folder": ".engine",
    "load_input_image": ".images",
    "make_tiny_checkpoint": ".tiny",
    "DropletInpaintPipeline": ".pipeline",
    "DropletTransformer3DModel": ".transformer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value
