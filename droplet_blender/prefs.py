"""Add-on preferences: server, token, timeouts, download folder (touches ``bpy``)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import bpy

from .client import DEFAULT_URL, DropletClient

ADDON = __package__  # "droplet_blender", or "bl_ext.<repo>.droplet_blender" once installed as an extension


@dataclass
class Settings:
    """What the client and the job workers need, read on the main thread (workers never read bpy)."""

    url: str = DEFAULT_URL
    token: str = ""
    timeout: float = 10.0
    upload_timeout: float = 120.0
    poll_interval: float = 0.5
    download_dir: str = ""

    def client(self) -> DropletClient:
        return DropletClient(self.url, self.token, timeout=self.timeout, upload_timeout=self.upload_timeout,
                             online_access=bpy.app.online_access)

    def downloads(self) -> Path:
        path = Path(bpy.path.abspath(self.download_dir)) if self.download_dir else default_download_dir()
        path.mkdir(parents=True, exist_ok=True)
        return path


def default_download_dir() -> Path:
    """Next to the saved .blend (``//droplet``), else the temp folder."""
    if bpy.data.filepath:
        return Path(bpy.path.abspath("//droplet"))
    return Path(tempfile.gettempdir()) / "droplet"


def settings(context: bpy.types.Context | None = None) -> Settings:
    """The preferences when the add-on is enabled, else defaults (``DROPLET_URL``/``DROPLET_TOKEN`` env vars)."""
    context = context or bpy.context
    addons = context.preferences.addons
    # Scripts may import the repository copy while the installed extension holds the preferences.
    addon = addons.get(ADDON) or next((a for name, a in addons.items() if name.rpartition(".")[2] == "droplet_blender"),
                                      None)
    if addon is None:
        return Settings(url=os.environ.get("DROPLET_URL", DEFAULT_URL), token=os.environ.get("DROPLET_TOKEN", ""))
    p = addon.preferences
    return Settings(p.server_url, p.token, p.timeout, p.upload_timeout, p.poll_interval, p.download_dir)


class DropletPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON

    server_url: bpy.props.StringProperty(
        name="Server URL", default=DEFAULT_URL,
        description="Where `droplet3d serve` listens (scheme and trailing slash optional)")
    token: bpy.props.StringProperty(
        name="Token", subtype="PASSWORD", default="",
        description="Bearer token, when the server was started with --token")
    timeout: bpy.props.FloatProperty(
        name="Request Timeout", default=10.0, min=0.5, max=600.0, unit="TIME_ABSOLUTE",
        description="Longest wait for any answer from the server")
    upload_timeout: bpy.props.FloatProperty(
        name="Upload Timeout", default=120.0, min=1.0, max=3600.0, unit="TIME_ABSOLUTE",
        description="Longest wait when submitting a job with its image")
    poll_interval: bpy.props.FloatProperty(
        name="Poll Interval", default=0.5, min=0.05, max=10.0, unit="TIME_ABSOLUTE",
        description="How often a running job's progress is fetched")
    download_dir: bpy.props.StringProperty(
        name="Download Folder", subtype="DIR_PATH", default="",
        description="Where job folders are written (empty: //droplet next to the .blend, else the temp folder)")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "server_url")
        layout.prop(self, "token")
        row = layout.row()
        row.prop(self, "timeout")
        row.prop(self, "upload_timeout")
        layout.prop(self, "poll_interval")
        layout.prop(self, "download_dir")
        draw_online_access_note(layout, self.server_url)


def draw_online_access_note(layout, url: str) -> None:
    """Explain what Blender's "Allow Online Access" switch means for this add-on."""
    from .client import DropletClientError, is_loopback

    if bpy.app.online_access:
        return
    try:
        local = is_loopback(url)
    except DropletClientError:
        return
    box = layout.box()
    if local:
        box.label(text="Online access is off: only a server on this machine is used.", icon="INFO")
    else:
        box.label(text="Online access is off: this remote server will not be contacted.", icon="ERROR")
        box.label(text="Enable Preferences > System > Network > Allow Online Access.")


def register() -> None:
    bpy.utils.register_class(DropletPreferences)


def unregister() -> None:
    bpy.utils.unregister_class(DropletPreferences)
