"""Import a finished job folder into one collection per job (touches ``bpy``).

Orbit jobs become a rig: an empty at the source's bounds centre, scaled to its size (unless the job was
reconstructed from the capture camera's distance, in world units already), a camera per
frame (poses from ``transforms.json``), a plane per frame exactly filling its camera's view at the
depth of the rig centre (emission + alpha), a turntable camera keyed to camera k's pose on frame k
while only plane k is visible, and ``mesh.glb`` (Blender's glTF importer) parented to the rig.
Video jobs become an image sequence on a camera-aligned plane and as that camera's background.

Every datablock made here carries ``["droplet_job"]`` so a re-import first removes exactly the
previous import of the same job and nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path

import bpy
from mathutils import Matrix, Vector

from . import geometry
from .jobs import JOB_FILE

TAG = "droplet_job"
MESH_REFERENCE_SIZE = 1.0  # orbit-frame size assumed for the object when the job has no mesh to measure


def job_record(folder: Path) -> dict:
    path = Path(folder) / JOB_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def collection_name(job_id: str) -> str:
    return f"Droplet {job_id}"


def import_job(
    folder: str | Path,
    *,
    source: dict | None = None,
    scene: bpy.types.Scene | None = None,
    set_scene: bool = True,
    with_mesh: bool = True,
) -> bpy.types.Collection:
    """Import (or re-import) the job in ``folder``; returns its collection.

    ``source`` (``{"centre": [x, y, z], "size": s}``, and ``"placement": "camera"`` for a job reconstructed
    with its capture camera's hints) places and scales the rig; by default the one
    recorded when the job was submitted, else the world origin at scale 1. ``set_scene`` sets the
    scene's frame range, render size and camera to the job's.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise geometry.JobFolderError(f"Job folder not found: {folder}")
    scene = scene or bpy.context.scene
    record = job_record(folder)
    job_id = record.get("job_id") or folder.name
    source = source if source is not None else record.get("source") or {}
    remove_job(job_id)
    coll = bpy.data.collections.new(collection_name(job_id))
    coll[TAG] = job_id
    coll["droplet_folder"] = str(folder)
    scene.collection.children.link(coll)
    try:
        mode = record.get("mode") or ("orbit" if (folder / "transforms.json").exists() else "video")
        if mode == "video":
            _import_video(folder, coll, job_id, scene, record, set_scene)
        else:
            _import_orbit(folder, coll, job_id, scene, source, set_scene, with_mesh)
    except Exception:
        remove_job(job_id)  # never leave half an import behind
        raise
    return coll


def remove_job(job_id: str) -> None:
    """Delete everything a previous import of ``job_id`` created (objects, data, images)."""
    doomed = []
    for coll in (bpy.data.collections, bpy.data.objects, bpy.data.meshes, bpy.data.cameras, bpy.data.materials,
                 bpy.data.images, bpy.data.actions, bpy.data.textures):
        doomed += [idb for idb in coll if idb.get(TAG) == job_id]
    if doomed:
        bpy.data.batch_remove(doomed)


def _frames(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / "frames").glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def _tag(idb, job_id: str):
    idb[TAG] = job_id
    return idb


def _new_object(name: str, data, coll, job_id: str, parent=None) -> bpy.types.Object:
    obj = _tag(bpy.data.objects.new(name, data), job_id)
    coll.objects.link(obj)
    if parent is not None:
        obj.parent = parent
    return obj


def _camera_data(name: str, fov: float, job_id: str) -> bpy.types.Camera:
    cam = _tag(bpy.data.cameras.new(name), job_id)
    cam.sensor_fit = "AUTO"  # the fov spans the larger image side, as in transforms.json
    cam.lens_unit = "FOV"
    cam.angle = fov
    cam.clip_start, cam.clip_end = 0.01, 1000.0
    return cam


def _plane_mesh(name: str, size: tuple[float, float], job_id: str) -> bpy.types.Mesh:
    hw, hh = size[0] / 2.0, size[1] / 2.0
    mesh = _tag(bpy.data.meshes.new(name), job_id)
    mesh.from_pydata([(-hw, -hh, 0.0), (hw, -hh, 0.0), (hw, hh, 0.0), (-hw, hh, 0.0)], [], [(0, 1, 2, 3)])
    uv = mesh.uv_layers.new(name="UVMap")
    uv.data.foreach_set("uv", (0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0))
    return mesh


def _image_material(name: str, image: bpy.types.Image, job_id: str) -> bpy.types.Material:
    """Emission of the image colour, its alpha mixed with Transparent: unlit, so frames look as generated."""
    mat = _tag(bpy.data.materials.new(name), job_id)
    if bpy.app.version < (5, 0, 0):
        mat.use_nodes = True  # always on (and deprecated) from Blender 5.0
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    tex = nodes.new("ShaderNodeTexImage")
    tex.name = "Frame"
    tex.image = image
    emission = nodes.new("ShaderNodeEmission")
    transparent = nodes.new("ShaderNodeBsdfTransparent")
    mix = nodes.new("ShaderNodeMixShader")
    out = nodes.new("ShaderNodeOutputMaterial")
    links.new(tex.outputs["Color"], emission.inputs["Color"])
    links.new(tex.outputs["Alpha"], mix.inputs["Fac"])
    links.new(transparent.outputs[0], mix.inputs[1])
    links.new(emission.outputs[0], mix.inputs[2])
    links.new(mix.outputs[0], out.inputs["Surface"])
    if hasattr(mat, "surface_render_method"):  # EEVEE Next (4.2+)
        mat.surface_render_method = "BLENDED"
    else:
        mat.blend_method = "BLEND"
    return mat


def _load_image(path: Path, job_id: str) -> bpy.types.Image:
    image = _tag(bpy.data.images.load(str(path), check_existing=False), job_id)
    image.alpha_mode = "STRAIGHT"
    return image


def _key_hidden(obj: bpy.types.Object, keys: list[tuple[int, bool]]) -> None:
    for frame, visible in keys:
        obj.hide_render = obj.hide_viewport = not visible
        obj.keyframe_insert("hide_render", frame=frame)
        obj.keyframe_insert("hide_viewport", frame=frame)
    obj.hide_render = obj.hide_viewport = False  # the un-animated value; the action drives it


def _constant_interpolation(obj: bpy.types.Object) -> None:
    for fcurve in _fcurves(obj):
        for point in fcurve.keyframe_points:
            point.interpolation = "CONSTANT"


def _fcurves(obj: bpy.types.Object):
    action = obj.animation_data.action
    if hasattr(action, "fcurves"):  # legacy actions (before 4.4; removed in 5.0)
        return list(action.fcurves)
    return [fc for layer in action.layers for strip in layer.strips for bag in strip.channelbags for fc in bag.fcurves]


def _import_orbit(folder, coll, job_id, scene, source, set_scene, with_mesh) -> None:
    cams = geometry.read_orbit(folder)
    missing = [p for p in cams.file_paths if not (folder / p).is_file()]
    if missing:
        raise geometry.JobFolderError(
            f"{len(missing)} frame(s) listed in transforms.json are missing, e.g. {missing[0]}")
    name = coll.name
    rig = _new_object(f"{name} Rig", None, coll, job_id)
    rig.empty_display_type = "SPHERE"
    rig["droplet_folder"] = str(folder)

    sub_cams = _tag(bpy.data.collections.new(f"{name} Cameras"), job_id)
    sub_planes = _tag(bpy.data.collections.new(f"{name} Planes"), job_id)
    coll.children.link(sub_cams)
    coll.children.link(sub_planes)

    cam_data = _camera_data(f"{name} Frame Camera", cams.fov, job_id)
    plane_mats = []
    template = None
    for k, (c2w, rel) in enumerate(zip(cams.matrices, cams.file_paths, strict=True)):
        cam = _new_object(f"{name} Camera {k:04d}", cam_data, sub_cams, job_id, rig)
        cam.matrix_basis = Matrix(c2w)
        depth = geometry.view_depth(c2w, (0.0, 0.0, 0.0))
        size = geometry.plane_size(cams.fov, cams.width, cams.height, depth)
        plane = _new_object(f"{name} Plane {k:04d}", _plane_mesh(f"{name} Plane {k:04d}", size, job_id),
                            sub_planes, job_id, rig)
        plane.matrix_basis = Matrix(geometry.plane_matrix(c2w, depth))
        image = _load_image(folder / rel, job_id)
        if template is None:
            template = mat = _image_material(f"{name} Frame {k:04d}", image, job_id)
        else:  # copying one node tree is much faster than building 85
            mat = template.copy()
            mat.name = f"{name} Frame {k:04d}"
            mat.node_tree.nodes["Frame"].image = image
        plane.data.materials.append(mat)
        plane_mats.append(mat)
        plane["droplet_frame"] = k
        _key_hidden(plane, geometry.visibility_keys(k, cams.num_frames, scene.frame_start))

    turntable = _new_object(f"{name} Turntable", _camera_data(f"{name} Turntable", cams.fov, job_id), coll, job_id, rig)
    turntable.rotation_mode = "QUATERNION"
    for k, c2w in enumerate(cams.matrices):
        turntable.matrix_basis = Matrix(c2w)
        turntable.keyframe_insert("location", frame=scene.frame_start + k)
        turntable.keyframe_insert("rotation_quaternion", frame=scene.frame_start + k)
    turntable.matrix_basis = Matrix(cams.matrices[0])
    _constant_interpolation(turntable)
    _tag(turntable.animation_data.action, job_id)
    for plane in sub_planes.objects:
        _tag(plane.animation_data.action, job_id)

    extent = MESH_REFERENCE_SIZE
    mesh_path = folder / "mesh.glb"
    if with_mesh and mesh_path.is_file():
        extent = _import_mesh(mesh_path, coll, rig, job_id) or extent
    centre = source.get("centre") or (0.0, 0.0, 0.0)
    # Reconstructed from the capture camera's distance, the job is in world units already; else it is fitted
    # to the source's size by the mesh's largest extent.
    camera_scale = source.get("placement") == "camera"
    scale = float(source["size"]) / extent if source.get("size") and not camera_scale else 1.0
    rig.location = centre
    rig.scale = (scale, scale, scale)

    if set_scene:
        scene.frame_end = scene.frame_start + cams.num_frames - 1
        scene.render.resolution_x, scene.render.resolution_y = cams.width, cams.height
        scene.render.resolution_percentage = 100
        scene.camera = turntable


def _import_mesh(path: Path, coll, rig, job_id: str) -> float | None:
    """glTF import into the job collection, roots parented to the rig; returns the mesh's largest extent."""
    before = {kind: set(getattr(bpy.data, kind)) for kind in ("objects", "meshes", "materials", "images")}
    layer_coll = _find_layer_collection(bpy.context.view_layer.layer_collection, coll)
    previous = bpy.context.view_layer.active_layer_collection
    bpy.context.view_layer.active_layer_collection = layer_coll
    try:
        result = bpy.ops.import_scene.gltf(filepath=str(path))
    finally:
        bpy.context.view_layer.active_layer_collection = previous
    if "FINISHED" not in result:
        raise geometry.JobFolderError(f"Blender's glTF importer could not read {path}")
    new = {kind: set(getattr(bpy.data, kind)) - ids for kind, ids in before.items()}
    for ids in new.values():
        for idb in ids:
            _tag(idb, job_id)
    points = []
    for obj in new["objects"]:
        # Blender 4.2's importer links to the scene collection whatever the active layer collection: move it.
        if coll not in obj.users_collection:
            coll.objects.link(obj)
        for other in [c for c in obj.users_collection if c != coll]:
            other.objects.unlink(obj)
        if obj.parent is None:
            obj.parent = rig  # identity parent inverse: the glTF's orbit-frame placement becomes rig-relative
        if obj.type == "MESH":
            obj.name = f"{coll.name} Mesh"
            points += [tuple(obj.matrix_basis @ Vector(c)) for c in obj.bound_box]
    if not points:
        return None
    return geometry.bounds(points)[1] or None


def _find_layer_collection(layer_coll, coll):
    if layer_coll.collection == coll:
        return layer_coll
    for child in layer_coll.children:
        found = _find_layer_collection(child, coll)
        if found is not None:
            return found
    return None


def _import_video(folder, coll, job_id, scene, record, set_scene) -> None:
    frames = _frames(folder)
    if not frames:
        raise geometry.JobFolderError(f"{folder / 'frames'} holds no frames to import")
    name = coll.name
    image = _load_image(frames[0], job_id)
    image.source = "SEQUENCE"
    width, height = image.size
    count = len(frames)
    fov = 0.6981317  # 40°: any fov works, the plane is sized to fill it
    cam = _new_object(f"{name} Camera", _camera_data(f"{name} Camera", fov, job_id), coll, job_id)
    source = record.get("source") or {}
    centre = source.get("centre") or (0.0, 0.0, 0.0)
    cam.location = (centre[0], centre[1] - 2.0 * source.get("size", 1.0), centre[2])
    cam.rotation_euler = (1.5707963, 0.0, 0.0)  # looking along +Y, +Z up
    bg = cam.data.background_images.new()
    bg.image = image
    bg.image_user.frame_duration = count
    bg.image_user.frame_start = scene.frame_start
    bg.image_user.use_auto_refresh = True
    cam.data.show_background_images = True

    depth = 1.0
    size = geometry.plane_size(fov, width, height, depth)
    plane = _new_object(f"{name} Plane", _plane_mesh(f"{name} Plane", size, job_id), coll, job_id, cam)
    plane.matrix_basis = Matrix.Translation((0.0, 0.0, -depth))
    mat = _image_material(f"{name} Clip", image, job_id)
    tex = mat.node_tree.nodes["Frame"]
    tex.image_user.frame_duration = count
    tex.image_user.frame_start = scene.frame_start
    tex.image_user.use_auto_refresh = True
    plane.data.materials.append(mat)

    if set_scene:
        scene.frame_end = scene.frame_start + count - 1
        scene.render.resolution_x, scene.render.resolution_y = width, height
        scene.render.resolution_percentage = 100
        manifest = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").is_file() else {}
        fps = manifest.get("video_fps") or (manifest.get("params") or {}).get("fps")  # playback rate of the clip
        if fps:
            scene.render.fps = int(fps)
        scene.camera = cam
