"""Orbit frames → calibrated cameras, masks and a textured mesh.

``reconstruct`` runs everything; ``calibrate`` only the masks and the orbit estimate. Both are
weight-free and run on a CPU; see ``pipeline.py`` for the stages. The names load lazily so that
``droplet3d --help`` (which imports ``droplet3d.recon.cli``) stays instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pipeline import ReconOptions, ReconResult, calibrate, orbit_cameras, reconstruct, write_nominal_transforms

__all__ = ["ReconOptions", "ReconResult", "calibrate", "orbit_cameras", "reconstruct", "write_nominal_transforms"]


def __getattr__(name: str):
    if name in __all__:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
