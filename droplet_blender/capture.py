"""Make the input image for a job from the panel's source setting (touches ``bpy``).

Every capture returns the image path and the *source* the importer places the rig on: the world
bounds centre and largest side of the selected objects (or of nothing: the world origin, size 1), and
``camera``: the orbit hints of the camera that rendered them (the generated orbit starts from its view).
Whatever is changed in the scene to render is restored afterwards, also on failure.
"""

from __future__ import annotations

import math
from array import array
from contextlib import contextmanager
from pathlib import Path

import bpy
from mathutils import Vector

from . import geometry, params

PREVIEW = "Droplet Input Preview"


class CaptureError(ValueError):
    """The chosen source cannot produce an image; the message says what to do."""


def selection_source(objects) -> dict:
    bpy.context.view_layer.update()  # scripts may have just moved them: matrix_world must be current
    points = [tuple(o.matrix_world @ Vector(c)) for o in objects if o.type not in ("CAMERA", "LIGHT")
              for c in o.bound_box]
    if not points:
        return {}
    centre, size = geometry.bounds(points)
    return {"name": ", ".join(o.name for o in objects), "centre": list(centre), "size": size or 1.0}


VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def job_inputs(context: bpy.types.Context, settings, out_dir: Path) -> tuple[dict, dict]:
    """``(files for DropletClient.submit, source)``: the captured image, or an orbit to reconstruct."""
    if settings.mode != "reconstruct":
        image, source = capture(context, settings, out_dir)
        return {"image": image}, source
    path = Path(bpy.path.abspath(settings.frames_path))
    source = selection_source(list(context.selected_objects))
    if path.is_dir():
        frames = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
        if len(frames) < params.MIN_FRAMES:
            raise CaptureError(f"{path} holds {len(frames)} frame image(s); an orbit needs at least "
                               f"{params.MIN_FRAMES}.")
        return {"frames": frames}, source
    if path.is_file() and path.suffix.lower() == ".zip":
        return {"frames": [path]}, source
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        return {"video": path}, source
    raise CaptureError(f"Choose a folder of orbit frames, a zip of them or a video (got {settings.frames_path!r}).")


def capture(context: bpy.types.Context, settings, out_dir: Path) -> tuple[Path, dict]:
    """``(image path, source)`` for the panel's source setting, written into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "input.png"
    size = (settings.width, settings.height) if settings.custom_size else (512, 512)
    if settings.source == "FILE":
        path = Path(bpy.path.abspath(settings.filepath))
        if not settings.filepath or not path.is_file():
            raise CaptureError(f"Choose an image file (not found: {settings.filepath or 'nothing chosen'}).")
        return path, {}
    if settings.source == "IMAGE":
        image = settings.image or editor_image(context)
        if image is None:
            raise CaptureError("Open an image in the Image Editor or pick one in the panel.")
        return save_image(image, out), {}
    selected = list(context.selected_objects)
    if settings.source == "CAMERA":
        if context.scene.camera is None:
            raise CaptureError("The scene has no active camera to render from.")
        render_scene(context.scene, out, size)
        source = selection_source(selected)
        return out, with_camera(source, camera_orbit(context.scene.camera, source.get("centre"), size))
    if not any(o.type not in ("CAMERA", "LIGHT") for o in selected):
        raise CaptureError("Select the object(s) to send.")
    return out, render_alone(context.scene, selected, out, size, front=settings.view == "FRONT")


def with_camera(source: dict, camera: dict | None) -> dict:
    """``source`` with ``"camera"``: the orbit hints of the camera the input was rendered from."""
    return {**source, "camera": camera} if source and camera else source


def camera_orbit(cam: bpy.types.Object | None, centre, size: tuple[int, int]) -> dict | None:
    """The orbit hints of ``cam`` (``geometry.capture_orbit``) for an image of ``size``; None unless it is a
    perspective camera aimed level at ``centre``."""
    if cam is None or centre is None or cam.type != "CAMERA" or cam.data.type != "PERSP":
        return None
    bpy.context.view_layer.update()
    fov = geometry.fov_across_larger(cam.data.angle, cam.data.sensor_fit, *size)
    return geometry.capture_orbit([list(row) for row in cam.matrix_world], tuple(centre), fov)


def editor_image(context) -> bpy.types.Image | None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR" and area.spaces.active.image is not None:
                return area.spaces.active.image
    return None


def save_image(image: bpy.types.Image, out: Path) -> Path:
    """The image as a PNG: its own file when saved and unchanged, else a copy of its pixels."""
    src = Path(bpy.path.abspath(image.filepath)) if image.filepath else None
    if src and src.is_file() and not image.is_dirty and image.source == "FILE" and image.packed_file is None:
        return src
    if image.type != "IMAGE":  # Render Result / Viewer: pixels only reachable through save_render
        image.save_render(str(out))
        return out
    width, height = image.size
    if width == 0 or height == 0:
        raise CaptureError(f"Image {image.name!r} has no pixels (render it or load it first).")
    pixels = array("f", bytes(4 * width * height * 4))
    image.pixels.foreach_get(pixels)
    copy = bpy.data.images.new("Droplet Input", width, height, alpha=True)
    try:
        copy.pixels.foreach_set(pixels)
        copy.filepath_raw, copy.file_format = str(out), "PNG"
        copy.save()
    finally:
        bpy.data.images.remove(copy)
    return out

def render_scene(scene: bpy.types.Scene, out: Path, size: tuple[int, int], *, transparent: bool = False) -> None:
    render = scene.render
    saved = (render.filepath, render.resolution_x, render.resolution_y, render.resolution_percentage,
             render.image_settings.file_format, render.film_transparent, render.image_settings.color_mode)
    try:
        render.filepath = str(out)
        render.resolution_x, render.resolution_y = size
        render.resolution_percentage = 100
        render.image_settings.file_format = "PNG"
        render.film_transparent = transparent
        render.image_settings.color_mode = "RGBA" if transparent else "RGB"
        bpy.ops.render.render(write_still=True, scene=scene.name)
    finally:
        (render.filepath, render.resolution_x, render.resolution_y, render.resolution_percentage,
         render.image_settings.file_format, render.film_transparent, render.image_settings.color_mode) = saved
    if not out.is_file():
        raise CaptureError(f"The render did not produce {out}.")


def front_camera(objects, fov: float = math.radians(40.0)) -> bpy.types.Object:
    """A temporary camera on −Y (the orbit's azimuth 0) framing the objects' bounding sphere."""
    bpy.context.view_layer.update()
    points = [o.matrix_world @ Vector(c) for o in objects for c in o.bound_box]
    centre, _ = geometry.bounds([tuple(p) for p in points])
    radius = max((p - Vector(centre)).length for p in points) or 1.0
    distance = radius / math.sin(fov / 2.0) * 1.1
    data = bpy.data.cameras.new("Droplet Capture")
    data.sensor_fit, data.lens_unit, data.angle = "AUTO", "FOV", fov
    data.clip_end = distance + radius * 4
    cam = bpy.data.objects.new("Droplet Capture", data)
    cam.location = Vector(centre) + Vector((0.0, -distance, 0.0))
    cam.rotation_euler = (math.pi / 2, 0.0, 0.0)
    return cam


@contextmanager
def _isolated(scene, keep):
    """Hide every renderable object but ``keep`` (lights stay, so the artist's lighting is kept)."""
    hidden = [o for o in scene.objects if o not in keep and o.type != "LIGHT" and not o.hide_render]
    try:
        for o in hidden:
            o.hide_render = True
        yield
    finally:
        for o in hidden:
            o.hide_render = False


def render_alone(scene, objects, out: Path, size, *, front: bool) -> dict:
    """Render ``objects`` with nothing else, as a cut-out (RGBA). The job sends the panel's background colour with
    it: the server composites the cut-out on it and keeps its alpha as frame 0's exact mask. Returns their source
    with the orbit hints of the camera it rendered from (``camera_orbit``)."""
    cam = None
    saved_camera = scene.camera
    try:
        if front or scene.camera is None:
            cam = front_camera([o for o in objects if o.type not in ("CAMERA", "LIGHT")])
            scene.collection.objects.link(cam)
            scene.camera = cam
        with _isolated(scene, set(objects) | {scene.camera}):
            render_scene(scene, out, size, transparent=True)
        source = selection_source(objects)
        return with_camera(source, camera_orbit(scene.camera, source.get("centre"), size))
    finally:
        scene.camera = saved_camera
        if cam is not None:
            data = cam.data
            bpy.data.objects.remove(cam)
            bpy.data.cameras.remove(data)


def show_preview(path: Path) -> bpy.types.Image:
    """Load ``path`` into the panel's preview image (replacing the previous one)."""
    image = bpy.data.images.get(PREVIEW)
    if image is not None:
        bpy.data.images.remove(image)
    image = bpy.data.images.load(str(path), check_existing=False)
    image.name = PREVIEW
    image.preview_ensure()
    return image
