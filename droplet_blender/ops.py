"""Operators of the Droplet panel (touches ``bpy``). None of them waits on the network."""

from __future__ import annotations

import uuid
from pathlib import Path

import bpy

from . import capture, runtime
from .client import DropletClientError
from .params import ParamError, with_capture_hints
from .prefs import settings


def _fail(op, context, message: str) -> set[str]:
    context.window_manager.droplet_last_error = message
    op.report({"ERROR"}, message)
    return {"CANCELLED"}


def _job_item(context, key: str):
    return runtime.find_item(context.window_manager, key)


class DROPLET_OT_check_server(bpy.types.Operator):
    """Ask the server for its health: device, models, queue"""

    bl_idname = "droplet.check_server"
    bl_label = "Check Server"

    def execute(self, context):
        wm = context.window_manager
        try:
            client = settings(context).client()
        except DropletClientError as exc:
            wm.droplet_server_ok, wm.droplet_server_status = False, exc.message
            return _fail(self, context, exc.message)
        wm.droplet_server_status = f"Checking {client.url} …"

        def done(health, error):
            wm.droplet_server_ok = error is None
            wm.droplet_server_status = health_summary(health) if error is None else str(error)
            if error is not None:
                runtime.report("WARNING", f"Droplet server: {error}")

        runtime.run_async(client.health, done)
        return {"FINISHED"}


def health_summary(health: dict) -> str:
    models = ", ".join(f"{m.get('role')}{'' if m.get('present') else ' (missing)'}" for m in health.get("models", []))
    gpu = (health.get("gpu") or {}).get("name")
    queue = health.get("queue_length", 0)
    device = gpu or health.get("device") or "cpu"
    return f"OK {health.get('version', '')} · {device} · {models or 'no models'} · queue {queue}"


class DROPLET_OT_preview_input(bpy.types.Operator):
    """Make the input image from the chosen source and show it in the panel"""

    bl_idname = "droplet.preview_input"
    bl_label = "Preview Input"

    def execute(self, context):
        try:
            path, _ = capture.capture(context, context.scene.droplet, _staging(context))
        except (capture.CaptureError, RuntimeError) as exc:
            return _fail(self, context, str(exc))
        context.window_manager.droplet_preview = capture.show_preview(path).name
        return {"FINISHED"}


def _staging(context) -> Path:
    return settings(context).downloads() / "inputs" / uuid.uuid4().hex[:8]


class DROPLET_OT_generate(bpy.types.Operator):
    """Send the input and prompt to the server; returns at once, the job runs in the background"""

    bl_idname = "droplet.generate"
    bl_label = "Generate"

    def execute(self, context):
        wm, props, prefs = context.window_manager, context.scene.droplet, settings(context)
        try:
            client = prefs.client()  # a bad URL or online access off: say so before rendering anything
            params = props.job_params()
            params.validate()
            inputs, source = capture.job_inputs(context, props, _staging(context))
            if props.orbit_hints == "CAPTURE":
                source = with_capture_hints(params, source)
        except (DropletClientError, ParamError, capture.CaptureError, RuntimeError) as exc:
            return _fail(self, context, str(exc))
        state = runtime.manager.submit(client, params, inputs, prefs.downloads(), source=source,
                                       poll_interval=prefs.poll_interval)
        runtime.auto_import.add(state.key)
        runtime.apply_state(wm, state)  # listed at once, as "submitting"
        wm.droplet_job_index = 0
        wm.droplet_last_error = ""
        if "image" in inputs:
            wm.droplet_preview = capture.show_preview(inputs["image"]).name
        runtime.ensure_timer()
        self.report({"INFO"}, f"Droplet: {params.mode} job submitted to {client.url}")
        return {"FINISHED"}


class DROPLET_OT_cancel(bpy.types.Operator):
    """Cancel the job on the server (it stops at the next denoising step)"""

    bl_idname = "droplet.cancel"
    bl_label = "Cancel Job"
    key: bpy.props.StringProperty()

    def execute(self, context):
        if not runtime.manager.cancel(self.key):
            return _fail(self, context, "That job is not running.")
        item = _job_item(context, self.key)
        if item is not None:
            item.stage = "cancelling"
        return {"FINISHED"}


class DROPLET_OT_reimport(bpy.types.Operator):
    """Import the job's folder again (replaces the previous import of the same job)"""

    bl_idname = "droplet.reimport"
    bl_label = "Import"
    key: bpy.props.StringProperty()

    def execute(self, context):
        item = _job_item(context, self.key)
        if item is None or not item.folder:
            return _fail(self, context, "That job has no downloaded folder.")
        coll = runtime.import_item(item)
        if coll is None:
            return {"CANCELLED"}
        self.report({"INFO"}, f"Imported {coll.name}")
        return {"FINISHED"}


class DROPLET_OT_open_folder(bpy.types.Operator):
    """Open the job's folder in the file browser"""

    bl_idname = "droplet.open_folder"
    bl_label = "Open Folder"
    key: bpy.props.StringProperty()

    def execute(self, context):
        item = _job_item(context, self.key)
        if item is None or not Path(item.folder).is_dir():
            return _fail(self, context, "That job's folder does not exist.")
        bpy.ops.wm.path_open(filepath=item.folder)
        return {"FINISHED"}


class DROPLET_OT_remove_job(bpy.types.Operator):
    """Remove the job from the list (its folder stays on disk)"""

    bl_idname = "droplet.remove_job"
    bl_label = "Remove From List"
    key: bpy.props.StringProperty()

    def execute(self, context):
        jobs = context.window_manager.droplet_jobs
        index = next((i for i, item in enumerate(jobs) if item.key == self.key), None)
        if index is None:
            return _fail(self, context, "That job is not in the list.")
        if runtime.manager.running(self.key):
            return _fail(self, context, "Cancel the job before removing it.")
        jobs.remove(index)
        return {"FINISHED"}


class DROPLET_OT_refresh_history(bpy.types.Operator):
    """List the finished jobs found in the download folder"""

    bl_idname = "droplet.refresh_history"
    bl_label = "Refresh History"

    def execute(self, context):
        runtime.refresh_history(context.window_manager, settings(context).downloads())
        return {"FINISHED"}


class DROPLET_OT_server_jobs(bpy.types.Operator):
    """List the server's jobs (yours only, unless Mine Only is off), whoever's session submitted them"""

    bl_idname = "droplet.server_jobs"
    bl_label = "List Server Jobs"

    def execute(self, context):
        from .jobs import default_owner

        wm = context.window_manager
        try:
            client = settings(context).client()
        except DropletClientError as exc:
            return _fail(self, context, str(exc))
        owner = default_owner() if wm.droplet_server_mine else None

        def done(jobs, error):
            if error is not None:
                runtime.report("ERROR", f"Droplet: could not list the server's jobs: {error}")
                return
            runtime.list_server_jobs(bpy.context.window_manager, jobs)

        runtime.run_async(lambda: client.jobs(owner=owner), done)
        return {"FINISHED"}


class DROPLET_OT_fetch_job(bpy.types.Operator):
    """Download the server's job and import it when its files are here"""

    bl_idname = "droplet.fetch_job"
    bl_label = "Download and Import"
    job_id: bpy.props.StringProperty()

    def execute(self, context):
        try:
            state = runtime.fetch_server_job(self.job_id)
        except DropletClientError as exc:
            return _fail(self, context, str(exc))
        self.report({"INFO"}, f"Droplet: fetching job {state.job_id}")
        return {"FINISHED"}


class DROPLET_OT_report(bpy.types.Operator):
    """Put a message in the info log (used by the timer, which cannot report itself)"""

    bl_idname = "droplet.report"
    bl_label = "Droplet Report"
    bl_options = {"INTERNAL"}  # noqa: RUF012  (Blender reads a plain set)
    kind: bpy.props.EnumProperty(items=[(k, k, "") for k in ("INFO", "WARNING", "ERROR")])
    message: bpy.props.StringProperty()

    def execute(self, context):
        self.report({self.kind}, self.message)
        return {"FINISHED"}


CLASSES = (DROPLET_OT_check_server, DROPLET_OT_preview_input, DROPLET_OT_generate, DROPLET_OT_cancel,
           DROPLET_OT_reimport, DROPLET_OT_open_folder, DROPLET_OT_remove_job, DROPLET_OT_refresh_history,
           DROPLET_OT_server_jobs, DROPLET_OT_fetch_job, DROPLET_OT_report)

register, unregister = bpy.utils.register_classes_factory(CLASSES)
