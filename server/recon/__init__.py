"""Orbit frames → calibrated cameras, masks and a textured mesh.

``reconstruct`` runs everything; ``calibrate`` only the masks and the orbit estimate. Both are
weight-free and run on a CPU; see ``pipeline.py`` for the stages.
"""

from .pipeline import ReconOptions, ReconResult, calibrate, reconstruct

__all__ = ["ReconOptions", "ReconResult", "calibrate", "reconstruct"]
