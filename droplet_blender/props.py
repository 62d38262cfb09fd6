"""Scene settings of the panel and the session's job list (touches ``bpy``).

Generation settings live on the scene (saved with the .blend); jobs live on the window manager
(runtime only; the history is rebuilt from the download folder's ``droplet_job.json`` files).
"""

from __future__ import annotations

import bpy

from .params import MAX_RESOLUTION, JobParams, hex_colour, orbit_sentence

SOURCES = [
    ("CAMERA", "Camera Render", "Render the scene from the active camera", "SCENE", 0),
    ("OBJECTS", "Selected Objects", "Render the selected objects alone on a plain background", "OBJECT_DATA", 1),
    ("IMAGE", "Image", "An image open in the Image Editor (or picked here)", "IMAGE_DATA", 2),
    ("FILE", "File", "An image file on disk", "FILE_IMAGE", 3),
]


class DropletSettings(bpy.types.PropertyGroup):
    source: bpy.props.EnumProperty(name="Source", items=SOURCES, default="OBJECTS")
    view: bpy.props.EnumProperty(
        name="View", default="FRONT",
        items=[("CAMERA", "Active Camera", "Render the selection through the scene's camera"),
               ("FRONT", "Auto Front", "A camera on −Y framing the selection (the orbit's azimuth 0)")])
    background: bpy.props.FloatVectorProperty(name="Background", subtype="COLOR", size=3, min=0, max=1,
                                              default=(1.0, 1.0, 1.0))
    image: bpy.props.PointerProperty(name="Image", type=bpy.types.Image)
    filepath: bpy.props.StringProperty(name="File", subtype="FILE_PATH")

    use_text: bpy.props.BoolProperty(name="Use Text Block", description="Read the prompt from a Text datablock")
    prompt: bpy.props.StringProperty(name="Prompt", description="Dense description of the object")
    prompt_text: bpy.props.PointerProperty(name="Text", type=bpy.types.Text)
    negative_prompt: bpy.props.StringProperty(name="Negative")
    add_orbit_sentence: bpy.props.BoolProperty(
        name="Describe Orbit", description="Append a sentence describing the 360° camera move to the prompt")
    orbit_direction: bpy.props.EnumProperty(
        name="Direction", items=[("ccw", "Counter-clockwise", ""), ("cw", "Clockwise", "")], default="ccw")

    mode: bpy.props.EnumProperty(
        name="Mode", default="orbit",
        items=[("orbit", "Orbit", "Droplet3D: a 360° orbit of the object (and a mesh)"),
               ("video", "Video", "DropletVideo: a clip with FPS motion control"),
               ("reconstruct", "Reconstruct", "An existing orbit (frames or a video) → cameras and a mesh")])
    frames_path: bpy.props.StringProperty(
        name="Orbit", subtype="FILE_PATH",
        description="Reconstruct mode: a folder of orbit frames (PNG/JPG, in order), a zip of them, or a video")
    random_seed: bpy.props.BoolProperty(name="Random Seed")
    seed: bpy.props.IntProperty(name="Seed", default=42, min=0)
    quality: bpy.props.EnumProperty(
        name="Quality", default="faithful",
        items=[("faithful", "Faithful", "The published inference: DDIM, 50 steps"),
               ("fast", "Fast", "About twice as fast: 25 DPM-Solver++ steps, step caching, CFG truncation; "
                "slightly different frames")])
    steps: bpy.props.IntProperty(name="Steps", default=50, min=1, max=500, description="Faithful quality only")
    guidance: bpy.props.FloatProperty(name="Guidance", default=6.0, min=0.0, max=50.0)
    custom_size: bpy.props.BoolProperty(name="Custom Size", description="Off: the model's default size")
    width: bpy.props.IntProperty(name="Width", default=512, min=16, max=2048, step=16)
    height: bpy.props.IntProperty(name="Height", default=512, min=16, max=2048, step=16)
    frames: bpy.props.IntProperty(name="Frames", default=0, min=0, max=257, description="0: the model's default")
    fps: bpy.props.IntProperty(name="FPS", default=0, min=0, max=120, description="Video motion speed (0: default)")
    view_align: bpy.props.BoolProperty(name="View Alignment",
                                       description="Turn the input to the canonical front view first")
    reconstruct: bpy.props.BoolProperty(name="Reconstruct Mesh", default=True)
    orbit_hints: bpy.props.EnumProperty(
        name="Orbit", default="CAPTURE",
        items=[("CAPTURE", "From Capture", "The camera the objects or the scene were rendered from: its elevation, "
                "field of view and distance (the mesh then comes back at the objects' true size); estimated from "
                "the frames for an image or file input, in reconstruct mode, or with View Alignment"),
               ("ESTIMATE", "Estimate", "Elevation and field of view estimated from the generated frames"),
               ("MANUAL", "Manual", "Give the orbit elevation and field of view")])
    hint_elevation: bpy.props.FloatProperty(name="Elevation", default=0.0, min=-89.0, max=89.0,
                                            description="Camera elevation of the orbit in degrees")
    hint_fov: bpy.props.FloatProperty(name="FOV", default=40.0, min=1.0, max=170.0,
                                      description="Field of view across the larger image side, degrees")
    mesh_resolution: bpy.props.IntProperty(name="Mesh Resolution", default=0, min=0, max=MAX_RESOLUTION,
                                           description="Voxel grid resolution of the mesh (0: the server's default)")
    face_budget: bpy.props.IntProperty(name="Face Budget", default=0, min=0, max=2_000_000,
                                       description="Faces of the mesh (0: the server's default)")

    def prompt_value(self) -> str:
        text = self.prompt_text.as_string() if self.use_text and self.prompt_text else self.prompt
        text = " ".join(text.split())
        if self.add_orbit_sentence and self.mode == "orbit":
            text = f"{text} {orbit_sentence(self.orbit_direction)}".strip()
        return text

    def job_params(self) -> JobParams:
        return JobParams(
            mode=self.mode, prompt=self.prompt_value(), negative_prompt=self.negative_prompt.strip(),
            seed=None if self.random_seed else self.seed, guidance_scale=self.guidance, profile=self.quality,
            steps=self.steps if self.quality == "faithful" else None,  # fast: the profile's step count
            width=self.width if self.custom_size else None, height=self.height if self.custom_size else None,
            num_frames=self.frames or None, fps=(self.fps or None) if self.mode == "video" else None,
            view_align=self.view_align if self.mode == "orbit" else False,
            reconstruct=self.reconstruct if self.mode == "orbit" else False,
            orbit={"elevation": self.hint_elevation, "fov": self.hint_fov} if self.orbit_hints == "MANUAL" else None,
            mesh={k: v for k, v in (("resolution", self.mesh_resolution), ("face_budget", self.face_budget)) if v}
            or None,
            # Selected objects are sent as a cut-out: the server composites it on this colour and keeps its alpha
            background=hex_colour(self.background) if self.source == "OBJECTS" and self.mode != "reconstruct"
            else None)


class DropletJobItem(bpy.types.PropertyGroup):
    key: bpy.props.StringProperty()
    job_id: bpy.props.StringProperty()
    mode: bpy.props.StringProperty()
    status: bpy.props.StringProperty()
    stage: bpy.props.StringProperty()
    progress: bpy.props.FloatProperty(subtype="FACTOR", min=0.0, max=1.0)
    step: bpy.props.IntProperty()
    total: bpy.props.IntProperty()
    eta: bpy.props.FloatProperty(default=-1.0)
    queue_position: bpy.props.IntProperty(default=-1)
    error: bpy.props.StringProperty()
    warnings: bpy.props.StringProperty()
    folder: bpy.props.StringProperty()
    prompt: bpy.props.StringProperty()
    collection: bpy.props.StringProperty()
    created_at: bpy.props.FloatProperty()


class DropletServerJob(bpy.types.PropertyGroup):
    """A job of the server's list (``GET /v1/jobs``), which may come from any session or script."""

    job_id: bpy.props.StringProperty()
    mode: bpy.props.StringProperty()
    status: bpy.props.StringProperty()
    prompt: bpy.props.StringProperty()
    owner: bpy.props.StringProperty()
    worker: bpy.props.StringProperty()
    created_at: bpy.props.FloatProperty()


CLASSES = (DropletSettings, DropletJobItem, DropletServerJob)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.droplet = bpy.props.PointerProperty(type=DropletSettings)
    wm = bpy.types.WindowManager
    wm.droplet_jobs = bpy.props.CollectionProperty(type=DropletJobItem)
    wm.droplet_job_index = bpy.props.IntProperty(name="Job")
    wm.droplet_server_status = bpy.props.StringProperty(name="Server")
    wm.droplet_server_ok = bpy.props.BoolProperty()
    wm.droplet_last_error = bpy.props.StringProperty(name="Last Error")
    wm.droplet_preview = bpy.props.StringProperty(name="Preview", description="Image of what will be sent")
    wm.droplet_server_jobs = bpy.props.CollectionProperty(type=DropletServerJob)
    wm.droplet_server_job_index = bpy.props.IntProperty(name="Server Job")
    wm.droplet_server_mine = bpy.props.BoolProperty(name="Mine Only", default=True,
                                                    description="List only the jobs submitted as this user@host")


def unregister() -> None:
    wm = bpy.types.WindowManager
    for name in ("droplet_server_mine", "droplet_server_job_index", "droplet_server_jobs", "droplet_last_error",
                 "droplet_preview", "droplet_server_ok", "droplet_server_status",
                 "droplet_job_index", "droplet_jobs"):
        delattr(wm, name)
    del bpy.types.Scene.droplet
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
