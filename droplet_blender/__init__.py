"""Droplet for Blender: turn an object, a render or an image plus a dense prompt into a 360° orbit
(and a textured mesh) with a local Droplet3D sidecar, and import it as a camera rig.

Like Blender's glTF add-on, the package splits pure-Python logic from Blender code:

- ``client`` (HTTP), ``params``, ``jobs`` (worker threads) and ``geometry`` import without ``bpy``;
- ``prefs``, ``props``, ``capture``, ``importer``, ``runtime``, ``ops``, ``ui`` and ``api`` need Blender
  and are imported by :func:`register` (or by whoever uses them inside Blender).

Scripting (Python console or ``blender -b -P``)::

    import droplet_blender as droplet            # or the installed ``bl_ext.user_default.droplet_blender``
    job = droplet.submit(prompt="A red ceramic teapot ...", image="/tmp/teapot.png")
    job = droplet.wait(job)                      # blocks, raises DropletJobFailed with the reason
    collection = droplet.import_job(job)        # the orbit rig, planes, cameras and mesh

``submit`` also takes ``object=bpy.data.objects["Teapot"]`` (rendered alone) or ``camera=True``
(the active camera's render); see :mod:`droplet_blender.api`.
"""

from __future__ import annotations

_API = ("submit", "attach", "wait", "import_job", "DropletJobFailed")
_MODULES = ("prefs", "props", "runtime", "ops", "ui")


def __getattr__(name: str):
    if name in _API:  # the scripting API needs bpy: import it only when asked for
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register() -> None:
    import importlib

    for name in _MODULES:
        importlib.import_module(f".{name}", __name__).register()


def unregister() -> None:
    import importlib

    for name in reversed(_MODULES):
        importlib.import_module(f".{name}", __name__).unregister()
