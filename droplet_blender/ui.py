"""The "Droplet" tab of the 3D viewport sidebar (touches ``bpy``). Drawing reads state only."""

from __future__ import annotations

import bpy

from . import runtime
from .params import word_count
from .prefs import draw_online_access_note, settings

STATUS_ICONS = {"submitting": "EXPORT", "queued": "SORTTIME", "running": "PLAY", "downloading": "IMPORT",
                "succeeded": "CHECKMARK", "failed": "ERROR", "cancelled": "CANCEL"}


def progress_text(item) -> str:
    """``denoising 12/50 · 38 % · ETA 41 s`` (or the queue position / final state)."""
    if item.status == "queued" and item.queue_position >= 0:
        return f"queued · position {item.queue_position}"
    if item.status in ("submitting", "downloading", "succeeded", "cancelled"):
        return item.status
    if item.status == "failed":
        return "failed"
    parts = [item.stage or item.status]
    if item.total:
        parts[0] += f" {item.step}/{item.total}"
    parts.append(f"{item.progress * 100:.0f} %")
    if item.eta >= 0:
        parts.append(f"ETA {item.eta:.0f} s")
    return " · ".join(parts)


class _DropletPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Droplet"


class DROPLET_PT_main(_DropletPanel, bpy.types.Panel):
    bl_label = "Droplet"

    def draw(self, context):
        layout, wm = self.layout, context.window_manager
        url = settings(context).url
        row = layout.row(align=True)
        row.label(text=url, icon="WORLD" if not wm.droplet_server_status else
                  ("CHECKMARK" if wm.droplet_server_ok else "ERROR"))
        row.operator("droplet.check_server", text="", icon="FILE_REFRESH")
        if wm.droplet_server_status:
            _wrapped(layout, wm.droplet_server_status)
        draw_online_access_note(layout, url)
        if wm.droplet_last_error:
            box = layout.box()
            box.alert = True
            _wrapped(box, wm.droplet_last_error, icon="ERROR")
        props = context.scene.droplet
        layout.prop(props, "mode", expand=True)
        label = {"text": "Reconstruct"} if props.mode == "reconstruct" else {}
        layout.operator("droplet.generate", icon="PLAY", **label)


class DROPLET_PT_input(_DropletPanel, bpy.types.Panel):
    bl_label = "Input"
    bl_parent_id = "DROPLET_PT_main"

    def draw(self, context):
        layout, props, wm = self.layout, context.scene.droplet, context.window_manager
        if props.mode == "reconstruct":
            layout.prop(props, "frames_path")
            layout.label(text="The rig lands on the selected objects, if any.", icon="INFO")
            return
        layout.prop(props, "source", text="")
        if props.source == "OBJECTS":
            layout.prop(props, "view", expand=True)
            layout.prop(props, "background")
            names = [o.name for o in context.selected_objects if o.type not in ("CAMERA", "LIGHT")]
            layout.label(text=", ".join(names) if names else "Nothing selected", icon="RESTRICT_SELECT_OFF")
        elif props.source == "CAMERA":
            cam = context.scene.camera
            layout.label(text=cam.name if cam else "No active camera", icon="CAMERA_DATA" if cam else "ERROR")
        elif props.source == "IMAGE":
            layout.template_ID(props, "image", open="image.open")
        else:
            layout.prop(props, "filepath", text="")
        layout.operator("droplet.preview_input", icon="HIDE_OFF")
        preview = bpy.data.images.get(wm.droplet_preview) if wm.droplet_preview else None
        if preview is not None and preview.preview is not None:
            layout.template_icon(icon_value=preview.preview.icon_id, scale=8.0)


class DROPLET_PT_prompt(_DropletPanel, bpy.types.Panel):
    bl_label = "Prompt"
    bl_parent_id = "DROPLET_PT_main"

    def draw(self, context):
        layout, props = self.layout, context.scene.droplet
        layout.prop(props, "use_text")
        if props.use_text:
            layout.template_ID(props, "prompt_text", new="text.new", open="text.open")
        else:
            layout.prop(props, "prompt", text="")
        words = word_count(props.prompt_value())
        layout.label(text=f"{words} words" + (" (dense prompts run to ~260)" if words < 40 else ""))
        layout.prop(props, "negative_prompt")
        if props.mode == "orbit":
            row = layout.row()
            row.prop(props, "add_orbit_sentence")
            row.prop(props, "orbit_direction", text="")


class DROPLET_PT_settings(_DropletPanel, bpy.types.Panel):
    bl_label = "Settings"
    bl_parent_id = "DROPLET_PT_main"
    bl_options = {"DEFAULT_CLOSED"}  # noqa: RUF012  (Blender reads a plain set)

    def draw(self, context):
        layout, props = self.layout, context.scene.droplet
        if props.mode == "reconstruct":
            _draw_recon(layout, props)
            return
        row = layout.row(align=True)
        row.prop(props, "random_seed", text="", icon="FILE_REFRESH")
        sub = row.row(align=True)
        sub.enabled = not props.random_seed
        sub.prop(props, "seed")
        layout.prop(props, "quality", expand=True)
        sub = layout.row()
        sub.enabled = props.quality == "faithful"
        sub.prop(props, "steps")
        layout.prop(props, "guidance")
        layout.prop(props, "custom_size")
        if props.custom_size:
            row = layout.row(align=True)
            row.prop(props, "width")
            row.prop(props, "height")
        layout.prop(props, "frames")
        if props.mode == "video":
            layout.prop(props, "fps")
        elif props.mode == "orbit":
            layout.prop(props, "view_align")
            layout.prop(props, "reconstruct")
            if props.reconstruct:
                _draw_recon(layout, props)


def _draw_recon(layout, props) -> None:
    layout.prop(props, "orbit_hints")
    uncaptured = props.mode == "reconstruct" or props.source in ("FILE", "IMAGE") or props.view_align
    if props.orbit_hints == "CAPTURE" and uncaptured:
        layout.label(text="No capture camera: estimated from the frames", icon="INFO")
    if props.orbit_hints == "MANUAL":
        row = layout.row(align=True)
        row.prop(props, "hint_elevation")
        row.prop(props, "hint_fov")
    row = layout.row(align=True)
    row.prop(props, "mesh_resolution", text="Resolution")
    row.prop(props, "face_budget", text="Faces")


class DROPLET_UL_jobs(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        row = layout.row(align=True)
        row.label(text=item.job_id or item.key, icon=STATUS_ICONS.get(item.status, "QUESTION"))
        row.label(text=progress_text(item))


class DROPLET_PT_jobs(_DropletPanel, bpy.types.Panel):
    bl_label = "Jobs"
    bl_parent_id = "DROPLET_PT_main"

    def draw(self, context):
        layout, wm = self.layout, context.window_manager
        for item in wm.droplet_jobs:
            if runtime.manager.running(item.key):
                box = layout.box()
                row = box.row(align=True)
                row.label(text=f"{item.mode} {item.job_id or '…'}", icon=STATUS_ICONS.get(item.status, "QUESTION"))
                row.operator("droplet.cancel", text="", icon="CANCEL").key = item.key
                box.progress(factor=item.progress, type="BAR", text=progress_text(item))
        row = layout.row()
        row.template_list("DROPLET_UL_jobs", "", wm, "droplet_jobs", wm, "droplet_job_index", rows=3)
        row.operator("droplet.refresh_history", text="", icon="FILE_REFRESH")
        if not 0 <= wm.droplet_job_index < len(wm.droplet_jobs):
            return
        item = wm.droplet_jobs[wm.droplet_job_index]
        if item.error:
            box = layout.box()
            box.alert = True
            _wrapped(box, item.error, icon="ERROR")
        for warning in filter(None, item.warnings.splitlines()):
            _wrapped(layout.box(), warning, icon="INFO")
        if item.prompt:
            _wrapped(layout, item.prompt[:160] + ("…" if len(item.prompt) > 160 else ""))
        row = layout.row(align=True)
        sub = row.row(align=True)
        sub.enabled = item.status == "succeeded" and bool(item.folder)
        sub.operator("droplet.reimport", icon="IMPORT").key = item.key
        sub.operator("droplet.open_folder", text="", icon="FILE_FOLDER").key = item.key
        row.operator("droplet.remove_job", text="", icon="X").key = item.key


class DROPLET_UL_server_jobs(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        row = layout.row(align=True)
        row.label(text=item.job_id, icon=STATUS_ICONS.get(item.status, "QUESTION"))
        row.label(text=item.worker or item.status)


class DROPLET_PT_server_jobs(_DropletPanel, bpy.types.Panel):
    """The server's own list: jobs from any session or script (a shared studio server), to import here."""

    bl_label = "Server Jobs"
    bl_parent_id = "DROPLET_PT_main"
    bl_options = {"DEFAULT_CLOSED"}  # noqa: RUF012  (Blender reads a plain set)

    def draw(self, context):
        layout, wm = self.layout, context.window_manager
        row = layout.row(align=True)
        row.prop(wm, "droplet_server_mine")
        row.operator("droplet.server_jobs", text="", icon="FILE_REFRESH")
        layout.template_list("DROPLET_UL_server_jobs", "", wm, "droplet_server_jobs", wm, "droplet_server_job_index",
                             rows=3)
        if not 0 <= wm.droplet_server_job_index < len(wm.droplet_server_jobs):
            return
        item = wm.droplet_server_jobs[wm.droplet_server_job_index]
        if item.prompt:
            _wrapped(layout, item.prompt[:160] + ("…" if len(item.prompt) > 160 else ""))
        if item.owner:
            layout.label(text=item.owner, icon="USER")
        row = layout.row()
        row.enabled = item.status == "succeeded"
        row.operator("droplet.fetch_job", icon="IMPORT").job_id = item.job_id


def _wrapped(layout, text: str, icon: str = "NONE", width: int = 42) -> None:
    """A label per line: the sidebar does not wrap text."""
    col = layout.column(align=True)
    line, first = "", True
    for word in text.split():
        if line and len(line) + len(word) + 1 > width:
            col.label(text=line, icon=icon if first else "BLANK1")
            line, first = word, False
        else:
            line = f"{line} {word}".strip()
    if line:
        col.label(text=line, icon=icon if first else "BLANK1")


CLASSES = (DROPLET_PT_main, DROPLET_PT_input, DROPLET_PT_prompt, DROPLET_PT_settings, DROPLET_UL_jobs,
           DROPLET_PT_jobs, DROPLET_UL_server_jobs, DROPLET_PT_server_jobs)

register, unregister = bpy.utils.register_classes_factory(CLASSES)
