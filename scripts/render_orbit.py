"""Render a known mesh into an orbit with Blender, for reconstruction tests and benchmarks.

Two halves in one file so the orbit maths stays in ``droplet3d.orbit``:

- under the server venv, :func:`render` computes the cameras with ``droplet3d.orbit``, writes a JSON
  spec and runs this file under Blender's venv (``.venv-blender/bin/python render_orbit.py SPEC``);
- under Blender's venv, :func:`main` builds the scene (one of ``OBJECTS``), renders every camera with Cycles
  on the CPU and exports the true mesh as PLY (world coordinates, Blender's +Z up).

The first seven objects are the ones reconstruction is tuned on; the other five are held out (never tune on
them): a black-and-white panda on black, a pale object with white patches on white, a body of revolution
with and without a texture, and a chair with thin legs and concavities.

Renders are cached under ``.cache/renders/<object>-<size>-<hash of the spec>`` (ignored by git;
``DROPLET_RENDER_CACHE`` moves it).

``render(..., perturbation=Perturbation())`` renders a generated-like orbit instead of a perfect turntable
(issue 9's measurements of generated videos): uneven angular speed, per-frame azimuth and elevation jitter,
zoom wobble, brightness flicker and pixel noise. The true per-frame poses go to ``truth.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BLENDER_PYTHON = REPO / ".venv-blender" / "bin" / "python"
CACHE = Path(os.environ.get("DROPLET_RENDER_CACHE", REPO / ".cache" / "renders"))
TUNE_OBJECTS = ("suzanne", "torus", "cup", "textured", "marker", "snowy", "ring", "penguin", "bottle")
HELD_OUT_OBJECTS = ("panda", "pale", "vase", "vase_textured", "frame", "duck")
OBJECTS = TUNE_OBJECTS + HELD_OUT_OBJECTS
GREY = (0.8, 0.8, 0.8)
# The background each object is meant to be seen on: parts of the panda and the penguin (its tune-side counterpart)
# match black, patches of "pale" and "snowy" (its tune-side counterpart) white.
BACKGROUNDS = {"panda": (0.0, 0.0, 0.0), "pale": (1.0, 1.0, 1.0), "snowy": (1.0, 1.0, 1.0),
               "penguin": (0.0, 0.0, 0.0)}
MARKER = (0.3, -0.2, 0.25)  # centre of the "marker" object's small emissive sphere (world, metres)
SPEC_VERSION = 6  # bump when every scene changes so cached renders are redone
SCENE_VERSIONS = {"cup": 3}  # bump one object's entry when only that scene changes


@dataclass(frozen=True)
class Perturbation:
    """How a generated orbit departs from a perfect turntable (defaults: issue 9's measurements)."""

    drift_deg: float = 12.0  # the angular speed drifts: up to this far ahead of or behind uniform over the turn
    azimuth_jitter_deg: float = 0.6  # per-frame standard deviations
    elevation_jitter_deg: float = 0.4
    zoom: float = 0.015  # ± relative change of the field of view
    flicker: float = 0.04  # ± relative brightness
    noise: float = 3.0  # pixel noise standard deviation, in 8-bit levels
    seed: int = 0

    def poses(self, orbit) -> dict:
        """Per-frame ``azimuth_deg``, ``elevation_deg``, ``fov_deg`` and brightness ``gain`` (lists) for ``orbit``."""
        import numpy as np

        rng = np.random.default_rng(self.seed)
        n = orbit.num_frames
        t = np.arange(n) / orbit.period
        # Smooth drift: two random harmonics, zero at frame 0 and scaled so its largest excursion is drift_deg. The
        # end of the turn lands off 360° too.
        drift = sum(rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * h * t + rng.uniform(0, 2 * np.pi)) for h in (1, 2))
        drift = drift - drift[0]
        drift *= self.drift_deg / max(float(np.abs(drift).max()), 1e-9)
        jitter = rng.normal(0.0, self.azimuth_jitter_deg, n)
        jitter[0] = 0.0  # frame 0 keeps the start azimuth (the heading gauge)
        azimuth = orbit.azimuths_deg() + orbit.direction * drift + jitter
        elevation = orbit.elevation_deg + rng.normal(0.0, self.elevation_jitter_deg, n)
        fov = orbit.fov_deg * (1.0 + self.zoom * np.sin(2 * np.pi * rng.uniform(1.5, 3.0) * t + rng.uniform(0, 6.3)))
        gain = 1.0 + self.flicker * np.clip(rng.normal(0.0, 0.5, n), -1.0, 1.0)
        return {"azimuth_deg": azimuth.tolist(), "elevation_deg": elevation.tolist(), "fov_deg": fov.tolist(),
                "gain": gain.tolist()}


def render(obj: str | Path, orbit, size: int = 128, samples: int = 8, transparent: bool = False,
           background: tuple[float, float, float] | None = None, cache: Path = CACHE,
           width: int | None = None, perturbation: Perturbation | None = None) -> Path:
    """Render ``obj`` along ``orbit`` (a ``droplet3d.orbit.Orbit``); returns the cached render folder.

    ``obj`` is one of ``OBJECTS`` (lit by a sun and the world) or the path of a ``.glb`` to show
    unlit (its base colour as emission, for comparing a baked texture with the true frames).
    ``background`` defaults to the object's own (``BACKGROUNDS``, else grey).
    The folder holds ``frames/0000.png…`` (RGB, or RGBA when ``transparent``) and ``truth.ply``; with a
    ``perturbation``, also ``truth.json`` (every frame's true azimuth, elevation, fov and camera matrix).
    """
    if background is None:
        background = BACKGROUNDS.get(str(obj), GREY)
    if not BLENDER_PYTHON.exists():
        raise RuntimeError(f"Blender's venv is missing: {BLENDER_PYTHON} (run `make setup`)")
    glb = Path(obj) if str(obj).endswith(".glb") else None
    if glb is None and obj not in OBJECTS:
        raise ValueError(f"unknown object {obj!r}; choose from {OBJECTS} or a .glb path")
    spec = {
        "version": SPEC_VERSION, "object": str(obj),
        "width": width or size, "height": size, "samples": samples,
        "transparent": transparent, "background": list(background), "fov_deg": orbit.fov_deg,
        "cameras": orbit.camera_to_world().round(12).tolist(),
    }
    if perturbation is not None:
        from droplet3d.orbit import Cameras

        poses = perturbation.poses(orbit)
        cameras = Cameras.on_sphere(poses["azimuth_deg"], poses["elevation_deg"], orbit.radius, orbit.fov_deg)
        spec.update(cameras=cameras.c2w.round(12).tolist(), fovs=poses["fov_deg"],
                    perturbation=asdict(perturbation))
    if str(obj) in SCENE_VERSIONS:
        spec["scene"] = SCENE_VERSIONS[str(obj)]
    if glb is not None:
        spec["glb_sha256"] = hashlib.sha256(glb.read_bytes()).hexdigest()
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache / f"{glb.stem if glb else obj}-{size}-{key}"
    if (folder / "done").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([str(BLENDER_PYTHON), __file__, str(folder / "spec.json")], capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"Blender render failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    if perturbation is not None:
        _flicker_and_noise(folder / "frames", poses["gain"], perturbation)
        (folder / "truth.json").write_text(json.dumps({**poses, "radius": orbit.radius, "direction": orbit.direction,
                                                       "closed": orbit.closed, "cameras": spec["cameras"]}))
    (folder / "done").write_text("ok")
    return folder


def _flicker_and_noise(frames: Path, gain: list[float], perturbation: Perturbation) -> None:
    """Scale each frame's brightness by its gain and add Gaussian pixel noise (alpha, if any, untouched)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(perturbation.seed + 1)
    for k, g in enumerate(gain):
        path = frames / f"{k:04d}.png"
        image = np.asarray(Image.open(path)).astype(np.float32)
        rgb = image[..., :3] * g + rng.normal(0.0, perturbation.noise, image[..., :3].shape)
        image[..., :3] = rgb
        Image.fromarray(np.clip(image.round(), 0, 255).astype(np.uint8)).save(path)


def slip_mattes(render_folder: Path, views: int = 3, seed: int = 0, size: float = 0.15) -> Path:
    """A copy of an alpha render in which ``views`` frames' alpha lost a disc of radius ``size`` times the object's
    extent, centred on a random pixel of the object: a learned matte that slipped in a few frames (a part missing
    there, inside the outline or at it). Cached beside the render."""
    import shutil

    import cv2
    import numpy as np
    from PIL import Image

    folder = render_folder.with_name(f"{render_folder.name}-slip{views}-{seed}")
    if (folder / "done").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(render_folder, folder)
    (folder / "done").unlink()
    rng = np.random.default_rng(seed)
    paths = sorted((folder / "frames").glob("*.png"))
    for k in sorted(rng.choice(len(paths), views, replace=False)):
        image = np.array(Image.open(paths[k]))
        ys, xs = np.nonzero(image[..., 3] >= 128)
        i = rng.integers(len(ys))
        radius = round(size * max(np.ptp(ys), np.ptp(xs)))
        lost = cv2.circle(np.zeros(image.shape[:2], np.uint8), (int(xs[i]), int(ys[i])), radius, 1, -1)
        image[..., 3][lost > 0] = 0
        Image.fromarray(image).save(paths[k])
    (folder / "slipped.json").write_text(json.dumps({"views": views, "seed": seed, "size": size}))
    (folder / "done").write_text("ok")
    return folder


# ---------------------------------------------------------------------------------------------------------------
# Blender side (bpy only below this line)


def _material(bpy, name: str, colour=(0.8, 0.8, 0.8), pattern: str | None = None):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes["Principled BSDF"]
    bsdf.inputs["Roughness"].default_value = 1.0
    bsdf.inputs["Base Color"].default_value = (*colour, 1.0)
    if pattern == "checker":
        tex = nodes.new("ShaderNodeTexChecker")
        tex.inputs["Scale"].default_value = 6.0
        tex.inputs["Color1"].default_value = (0.9, 0.25, 0.05, 1.0)
        tex.inputs["Color2"].default_value = (0.05, 0.3, 0.8, 1.0)
        coords = nodes.new("ShaderNodeTexCoord")
        links.new(coords.outputs["Object"], tex.inputs["Vector"])
        links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    elif pattern == "noise":
        tex = nodes.new("ShaderNodeTexNoise")
        tex.inputs["Scale"].default_value = 9.0
        ramp = nodes.new("ShaderNodeValToRGB")
        ramp.color_ramp.elements[0].color = (0.7, 0.1, 0.05, 1.0)
        ramp.color_ramp.elements[1].color = (0.95, 0.85, 0.3, 1.0)
        coords = nodes.new("ShaderNodeTexCoord")
        links.new(coords.outputs["Object"], tex.inputs["Vector"])
        links.new(tex.outputs["Fac"], ramp.inputs["Fac"])
        links.new(ramp.outputs["Color"], bsdf.inputs["Base Color"])
    elif pattern in ("patches", "paint"):
        # Hard-edged blotches: light patches on a pale body, or a three-colour paint that no rotation repeats.
        tex = nodes.new("ShaderNodeTexNoise")
        tex.inputs["Scale"].default_value = 3.0 if pattern == "patches" else 4.5
        tex.inputs["Detail"].default_value = 1.0
        ramp = nodes.new("ShaderNodeValToRGB")
        ramp.color_ramp.interpolation = "CONSTANT"
        stops = ([(0.0, colour), (0.52, (0.97, 0.97, 0.96))] if pattern == "patches" else
                 [(0.0, (0.08, 0.15, 0.45)), (0.45, colour), (0.58, (0.85, 0.4, 0.08))])
        elements = ramp.color_ramp.elements
        elements[0].position, elements[0].color = stops[0][0], (*stops[0][1], 1.0)
        elements[1].position, elements[1].color = stops[1][0], (*stops[1][1], 1.0)
        for position, rgb in stops[2:]:
            elements.new(position).color = (*rgb, 1.0)
        coords = nodes.new("ShaderNodeTexCoord")
        links.new(coords.outputs["Object"], tex.inputs["Vector"])
        links.new(tex.outputs["Fac"], ramp.inputs["Fac"])
        links.new(ramp.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def _build_object(bpy, name: str):
    ops = bpy.ops
    if name == "suzanne":
        ops.mesh.primitive_monkey_add(size=1.0)
        obj = bpy.context.active_object
        obj.modifiers.new("subsurf", "SUBSURF").levels = 2
        obj.data.materials.append(_material(bpy, "clay", (0.75, 0.55, 0.4), "noise"))
    elif name in ("torus", "ring"):
        # Tilted so that its silhouettes change around the orbit (a torus about +Z looks the same from every azimuth).
        # The ring is the torus without texture: nothing to track, only its silhouettes tell the frames' poses.
        ops.mesh.primitive_torus_add(major_radius=0.5, minor_radius=0.18, major_segments=64, minor_segments=32,
                                     rotation=(math.radians(60), 0.0, math.radians(20)))
        obj = bpy.context.active_object
        obj.data.materials.append(_material(bpy, "torus", (0.2, 0.6, 0.3), "checker") if name == "torus" else
                                  _material(bpy, "ring", (0.25, 0.45, 0.7)))
    elif name == "cup":
        obj = _build_cup(bpy)
        obj.data.materials.append(_material(bpy, "cup", (0.8, 0.8, 0.8), "checker"))
    elif name == "marker":
        ops.mesh.primitive_uv_sphere_add(radius=0.04, location=MARKER)
        obj = bpy.context.active_object
        mat = bpy.data.materials.new("marker")
        mat.use_nodes = True
        nodes = mat.node_tree.nodes
        nodes.remove(nodes["Principled BSDF"])
        emit = nodes.new("ShaderNodeEmission")
        emit.inputs["Color"].default_value = (1.0, 0.0, 0.0, 1.0)
        emit.inputs["Strength"].default_value = 5.0
        mat.node_tree.links.new(emit.outputs[0], nodes["Material Output"].inputs["Surface"])
        obj.data.materials.append(mat)
    elif name == "textured":
        ops.mesh.primitive_cube_add(size=0.8, rotation=(0.0, 0.0, math.radians(25)))
        obj = bpy.context.active_object
        obj.scale = (1.0, 0.7, 1.2)
        bevel = obj.modifiers.new("bevel", "BEVEL")
        bevel.width, bevel.segments = 0.08, 3
        obj.data.materials.append(_material(bpy, "painted", (0.8, 0.8, 0.8), "checker"))
    elif name == "panda":
        obj = _build_panda(bpy)
    elif name == "pale":
        obj = _build_pale(bpy)
    elif name == "snowy":
        obj = _build_snowy(bpy)
    elif name == "penguin":
        obj = _build_penguin(bpy)
    elif name in ("vase", "vase_textured"):
        obj = _lathe(bpy, "vase", VASE_PROFILE)
        obj.data.materials.append(_material(bpy, "glaze", (0.55, 0.3, 0.2)) if name == "vase" else
                                  _material(bpy, "painted", (0.9, 0.85, 0.7), "paint"))
    elif name == "bottle":  # the tune objects' textured body of revolution (vase_textured is the held-out one)
        obj = _lathe(bpy, "bottle", BOTTLE_PROFILE)
        obj.data.materials.append(_material(bpy, "label", (0.3, 0.55, 0.25), "noise"))
    elif name == "frame":
        obj = _build_chair(bpy)
    elif name == "duck":
        obj = _build_duck(bpy)
    else:
        raise ValueError(name)
    for poly in obj.data.polygons:
        poly.use_smooth = name not in ("textured", "frame")
    return obj


# Outline (radius, height) of the vase from the bottom centre to the top centre: foot, belly, neck, lip.
VASE_PROFILE = [(0.0, -0.45), (0.17, -0.45), (0.19, -0.43), (0.16, -0.36), (0.22, -0.26), (0.29, -0.14),
                (0.33, -0.02), (0.32, 0.08), (0.27, 0.18), (0.19, 0.27), (0.13, 0.34), (0.115, 0.41),
                (0.13, 0.47), (0.16, 0.5), (0.15, 0.52), (0.0, 0.52)]
# A wine bottle: straight body, shoulder, long neck, lip.
BOTTLE_PROFILE = [(0.0, -0.5), (0.2, -0.5), (0.21, -0.48), (0.21, 0.05), (0.17, 0.16), (0.09, 0.26),
                  (0.075, 0.36), (0.075, 0.46), (0.09, 0.48), (0.085, 0.5), (0.0, 0.5)]


def _part(bpy, kind: str, location, scale=(1.0, 1.0, 1.0), rotation=(0.0, 0.0, 0.0), material=None):
    """A primitive (a unit ``sphere`` or ``cube`` of half-size 1) placed, scaled and given ``material``."""
    if kind == "sphere":
        bpy.ops.mesh.primitive_uv_sphere_add(radius=1.0, segments=48, ring_count=24, location=location,
                                             rotation=rotation)
    else:
        bpy.ops.mesh.primitive_cube_add(size=2.0, location=location, rotation=rotation)
    obj = bpy.context.active_object
    obj.scale = scale
    if material is not None:
        obj.data.materials.append(material)
    for poly in obj.data.polygons:
        poly.use_smooth = kind == "sphere"
    return obj


def _union(bpy, base, parts: list):
    """``base`` ∪ ``parts`` as one closed surface (exact boolean, the parts' materials transferred).

    Overlapping primitives would leave faces inside the solid, which no camera sees and the score would count.
    """
    collection = bpy.data.collections.new(f"{base.name}-parts")
    bpy.context.scene.collection.children.link(collection)
    for part in parts:
        for owner in list(part.users_collection):
            owner.objects.unlink(part)
        collection.objects.link(part)
        part.hide_render = True
    union = base.modifiers.new("parts", "BOOLEAN")
    union.operation, union.solver, union.operand_type = "UNION", "EXACT", "COLLECTION"
    union.collection = collection
    union.material_mode = "TRANSFER"
    return base


def _build_panda(bpy):
    """A sitting panda facing the front camera (−Y): white body and head; black ears, eye patches, nose and limbs,
    which vanish into a black background."""
    white = _material(bpy, "fur-white", (0.85, 0.85, 0.82))
    black = _material(bpy, "fur-black", (0.012, 0.012, 0.012))
    body = _part(bpy, "sphere", (0.0, 0.0, -0.12), (0.3, 0.26, 0.33), material=white)
    # Head and nose turned a little so that their edges never coincide with the body's (exact-boolean slivers).
    parts = [_part(bpy, "sphere", (0.0, -0.02, 0.3), (0.23, 0.21, 0.2), (0.0, 0.0, 0.07), material=white)]
    for side in (-1.0, 1.0):
        parts += [
            _part(bpy, "sphere", (side * 0.16, 0.0, 0.47), (0.075, 0.045, 0.075), material=black),  # ear
            _part(bpy, "sphere", (side * 0.08, -0.2, 0.33), (0.05, 0.03, 0.065), (0.0, side * 0.4, 0.0),
                  material=black),  # eye patch
            _part(bpy, "sphere", (side * 0.28, -0.06, -0.04), (0.09, 0.09, 0.19), (0.0, side * 0.35, 0.0),
                  material=black),  # arm
            _part(bpy, "sphere", (side * 0.15, -0.13, -0.41), (0.11, 0.15, 0.1), material=black),  # leg
        ]
    parts.append(_part(bpy, "sphere", (0.0, -0.235, 0.27), (0.03, 0.02, 0.022), (0.1, 0.0, 0.2),
                       material=black))  # nose
    return _union(bpy, body, parts)


def _build_pale(bpy):
    """A pale, lying animal-like shape (body, head to one side, tail) with near-white patches, shown on white."""
    pale = _material(bpy, "pale", (0.78, 0.72, 0.6), "patches")
    body = _part(bpy, "sphere", (0.0, 0.0, -0.1), (0.4, 0.27, 0.26), material=pale)
    parts = [_part(bpy, "sphere", (0.36, -0.08, 0.14), (0.17, 0.15, 0.16), material=pale),  # head
             _part(bpy, "sphere", (0.5, -0.12, 0.12), (0.08, 0.07, 0.06), material=pale),  # snout
             _part(bpy, "sphere", (-0.42, 0.05, 0.0), (0.12, 0.05, 0.05), (0.0, -0.6, 0.3), material=pale)]  # tail
    for x in (-0.22, 0.2):
        for y in (-0.13, 0.13):
            parts.append(_part(bpy, "sphere", (x, y, -0.32), (0.07, 0.07, 0.12), material=pale))  # legs
    return _union(bpy, body, parts)


def _build_snowy(bpy):
    """An upright figure (body, head, arms, a flat hat) in cool grey with white patches, shown on white: the tune
    objects' case of parts that match the background ("pale" is the held-out one)."""
    grey = _material(bpy, "snowy", (0.62, 0.66, 0.72), "patches")
    body = _part(bpy, "sphere", (0.0, 0.0, -0.2), (0.3, 0.28, 0.3), material=grey)
    parts = [_part(bpy, "sphere", (0.02, 0.0, 0.22), (0.2, 0.19, 0.19), (0.0, 0.0, 0.3), material=grey),  # head
             _part(bpy, "cube", (0.02, 0.0, 0.42), (0.17, 0.17, 0.03), (0.0, 0.0, 0.5), material=grey)]  # hat
    for side in (-1.0, 1.0):
        parts.append(_part(bpy, "sphere", (side * 0.33, 0.04, -0.08), (0.16, 0.06, 0.06), (0.0, side * 0.5, 0.2),
                           material=grey))  # arm
    return _union(bpy, body, parts)


def _build_penguin(bpy):
    """A standing penguin: black back, head and flippers that vanish into a black background, a white belly and
    face, orange beak and feet; few corners to track, as on the panda (the held-out one)."""
    black = _material(bpy, "feathers-black", (0.015, 0.015, 0.018))
    white = _material(bpy, "feathers-white", (0.88, 0.88, 0.86))
    orange = _material(bpy, "beak", (0.9, 0.45, 0.05))
    body = _part(bpy, "sphere", (0.0, 0.0, -0.1), (0.24, 0.22, 0.36), material=black)
    parts = [_part(bpy, "sphere", (0.0, -0.07, -0.14), (0.19, 0.17, 0.3), (0.0, 0.0, 0.05), material=white),  # belly
             _part(bpy, "sphere", (0.0, 0.01, 0.33), (0.15, 0.14, 0.14), (0.0, 0.0, 0.1), material=black),  # head
             _part(bpy, "sphere", (0.0, -0.13, 0.26), (0.06, 0.16, 0.03), (-0.5, 0.0, 0.0), material=orange)]
    for side in (-1.0, 1.0):
        parts += [
            _part(bpy, "sphere", (side * 0.07, -0.1, 0.36), (0.045, 0.04, 0.05), material=white),  # cheek
            _part(bpy, "sphere", (side * 0.25, 0.02, -0.05), (0.04, 0.1, 0.24), (0.0, side * 0.3, 0.1),
                  material=black),  # flipper
            _part(bpy, "sphere", (side * 0.1, -0.08, -0.46), (0.08, 0.12, 0.025), (0.0, 0.0, side * 0.3),
                  material=orange),  # foot
        ]
    return _union(bpy, body, parts)


def _build_duck(bpy):
    """A painted toy duck: a textured, rounded, asymmetric object whose paint can be tracked (held out: added after
    the tracked poses' smooth correction was tuned on the torus, cup and textured box)."""
    paint = _material(bpy, "toy-paint", (0.95, 0.75, 0.1), "paint")
    orange = _material(bpy, "toy-beak", (0.9, 0.4, 0.05))
    body = _part(bpy, "sphere", (0.0, 0.0, -0.15), (0.42, 0.27, 0.22), material=paint)
    parts = [_part(bpy, "sphere", (0.2, 0.0, 0.17), (0.15, 0.14, 0.15), material=paint),  # head
             _part(bpy, "sphere", (0.37, 0.0, 0.14), (0.1, 0.06, 0.025), (0.0, -0.2, 0.0), material=orange),  # beak
             _part(bpy, "sphere", (-0.38, 0.0, -0.02), (0.1, 0.08, 0.12), (0.0, 0.6, 0.0), material=paint)]  # tail
    for side in (-1.0, 1.0):
        parts.append(_part(bpy, "sphere", (-0.05, side * 0.24, -0.1), (0.22, 0.06, 0.1), (side * 0.2, 0.0, 0.0),
                           material=paint))  # wing
    return _union(bpy, body, parts)


def _build_chair(bpy):
    """A chair: thin legs, stretchers and a slatted back (thin parts, and concavities only some views see into)."""
    wood = _material(bpy, "wood", (0.5, 0.3, 0.15))
    seat = _part(bpy, "cube", (0.0, 0.0, -0.02), (0.25, 0.24, 0.03), material=wood)
    parts = []
    for x in (-0.22, 0.22):
        for y in (-0.21, 0.21):
            parts.append(_part(bpy, "cube", (x, y, -0.26), (0.025, 0.025, 0.22), material=wood))  # legs
        parts.append(_part(bpy, "cube", (x, 0.0, -0.36), (0.015, 0.21, 0.015), material=wood))  # side stretcher
        parts.append(_part(bpy, "cube", (x, 0.21, 0.26), (0.025, 0.025, 0.26), material=wood))  # back post
    parts.append(_part(bpy, "cube", (0.0, 0.21, 0.46), (0.22, 0.02, 0.05), material=wood))  # top rail
    parts.append(_part(bpy, "cube", (0.0, 0.21, 0.27), (0.22, 0.015, 0.015), material=wood))  # middle rail
    return _union(bpy, seat, parts)


def _build_cup(bpy):
    """A cup as a lathed profile: outer wall, rim, inner wall down to a thick floor (closed, manifold).

    Wide enough for the floor to be visible from an orbit at 45° elevation: what no camera sees
    cannot be carved.
    """
    height, r_out, wall, floor_z = 0.7, 0.5, 0.05, 0.0
    profile = [(0.0, -0.35), (r_out - 0.05, -0.35), (r_out, -0.3), (r_out, height / 2),
               (r_out - wall, height / 2), (r_out - wall, floor_z + 0.03), (r_out - wall - 0.03, floor_z),
               (0.0, floor_z)]
    obj = _lathe(bpy, "cup", profile)
    # A handle (boolean union, so the surface stays one closed manifold): without it every silhouette of
    # the lathed cup would be the same and no orbit could be calibrated from them.
    bpy.ops.mesh.primitive_torus_add(major_radius=0.2, minor_radius=0.045, major_segments=48, minor_segments=16,
                                     location=(r_out + 0.1, 0.0, 0.0), rotation=(math.radians(90), 0.0, 0.0))
    handle = bpy.context.active_object
    handle.scale = (0.6, 1.0, 1.0)  # squashed so that its inner side ends inside the wall
    handle.hide_render = True
    union = obj.modifiers.new("handle", "BOOLEAN")
    union.operation, union.solver, union.object = "UNION", "EXACT", handle
    return obj


def _lathe(bpy, name: str, profile: list[tuple[float, float]], segments: int = 64):
    """A closed surface of revolution about +Z from ``profile`` ``[(radius, z), …]``, which starts and ends on
    the axis."""
    import bmesh

    mesh = bpy.data.meshes.new(name)
    bm = bmesh.new()
    rings = []
    for k in range(segments):
        a = 2 * math.pi * k / segments
        rings.append([bm.verts.new((r * math.cos(a), r * math.sin(a), z)) if r > 0 else None for r, z in profile])
    bottom = bm.verts.new((0.0, 0.0, profile[0][1]))
    top = bm.verts.new((0.0, 0.0, profile[-1][1]))
    for k in range(segments):
        a, b = rings[k], rings[(k + 1) % segments]
        for i in range(1, len(profile) - 2):
            bm.faces.new((a[i], b[i], b[i + 1], a[i + 1]))
        bm.faces.new((bottom, b[1], a[1]))
        bm.faces.new((top, a[-2], b[-2]))
    bmesh.ops.recalc_face_normals(bm, faces=bm.faces)
    bm.to_mesh(mesh)
    bm.free()
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.collection.objects.link(obj)
    return obj


def _import_unlit(bpy, path: str):
    """Import a GLB with Blender's glTF importer and show its base colour texture as emission."""
    bpy.ops.import_scene.gltf(filepath=path)
    obj = next(o for o in bpy.context.scene.objects if o.type == "MESH")
    for slot in obj.material_slots:
        nodes, links = slot.material.node_tree.nodes, slot.material.node_tree.links
        image = next(n for n in nodes if n.type == "TEX_IMAGE")
        emit = nodes.new("ShaderNodeEmission")
        links.new(image.outputs["Color"], emit.inputs["Color"])
        output = next(n for n in nodes if n.type == "OUTPUT_MATERIAL")
        links.new(emit.outputs[0], output.inputs["Surface"])
    return obj


def main(spec_path: str) -> None:
    import bpy
    from mathutils import Matrix

    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec_path).parent
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    build = _import_unlit if spec["object"].endswith(".glb") else _build_object
    obj = build(bpy, spec["object"])

    world = bpy.data.worlds.new("world")
    scene.world = world
    world.use_nodes = True
    nodes, links = world.node_tree.nodes, world.node_tree.links
    seen = nodes["Background"]
    seen.inputs["Color"].default_value = (*spec["background"], 1.0)
    if not spec["object"].endswith(".glb"):
        # The camera sees the background; the object is always lit by a grey world, so that a black background
        # leaves the far side of the panda lit as a generated orbit would show it.
        light = nodes.new("ShaderNodeBackground")
        light.inputs["Color"].default_value = (*GREY, 1.0)
        path, mix = nodes.new("ShaderNodeLightPath"), nodes.new("ShaderNodeMixShader")
        links.new(path.outputs["Is Camera Ray"], mix.inputs["Fac"])
        links.new(light.outputs[0], mix.inputs[1])
        links.new(seen.outputs[0], mix.inputs[2])
        links.new(mix.outputs[0], nodes["World Output"].inputs["Surface"])
        sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
        sun.data.energy = 2.0
        sun.rotation_euler = (math.radians(40), math.radians(10), math.radians(30))
        scene.collection.objects.link(sun)
    else:
        seen.inputs["Strength"].default_value = 0.0  # unlit: emission only

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = spec["samples"]
    scene.cycles.use_denoising = True
    scene.cycles.max_bounces = 2
    scene.render.threads_mode = "FIXED"
    scene.render.threads = max(1, min(2, os.cpu_count() or 1))
    scene.render.resolution_x, scene.render.resolution_y = spec["width"], spec["height"]
    scene.render.resolution_percentage = 100
    scene.render.use_persistent_data = True  # keep the BVH between frames
    scene.render.film_transparent = spec["transparent"]
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA" if spec["transparent"] else "RGB"
    scene.view_settings.view_transform = "Standard"

    cam = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    scene.collection.objects.link(cam)
    scene.camera = cam
    cam.data.sensor_fit = "AUTO"
    cam.data.angle = math.radians(spec["fov_deg"])
    cam.data.clip_start, cam.data.clip_end = 0.01, 100.0

    frames = out / "frames"
    frames.mkdir(exist_ok=True)
    fovs = spec.get("fovs") or [spec["fov_deg"]] * len(spec["cameras"])
    for k, c2w in enumerate(spec["cameras"]):
        cam.matrix_world = Matrix(c2w)
        cam.data.angle = math.radians(fovs[k])
        scene.render.filepath = str(frames / f"{k:04d}.png")
        bpy.ops.render.render(write_still=True)

    # The true surface in world coordinates, modifiers applied.
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    mesh.transform(obj.matrix_world)
    mesh.calc_loop_triangles()
    verts = [tuple(v.co) for v in mesh.vertices]
    tris = [tuple(t.vertices) for t in mesh.loop_triangles]
    with open(out / "truth.ply", "w") as fh:
        fh.write(f"ply\nformat ascii 1.0\nelement vertex {len(verts)}\nproperty float x\nproperty float y\n"
                 f"property float z\nelement face {len(tris)}\nproperty list uchar int vertex_indices\nend_header\n")
        fh.writelines(f"{x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in verts)
        fh.writelines(f"3 {a} {b} {c}\n" for a, b, c in tris)


if __name__ == "__main__":
    main(sys.argv[1])
