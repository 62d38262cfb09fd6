"""Droplet for Blender's GPU sidecar: generation engine, reconstruction and the HTTP service.

Installed as the import package ``droplet3d`` (the source folder is ``server/``).
"""

__version__ = "0.1.0"
