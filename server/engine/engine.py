"""The long-lived engine the CLI and the service hold, and one generation job on it."""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import __version__
from ..errors import Cancelled, DropletError, InputError
from ..files import FRAME0_ALPHA, make_staging, write_json_atomic
from ..threads import cpu_threads
from .checkpoint import CheckpointInfo, inspect_checkpoint, load_components, resolve_checkpoint
from .device import (
    apply_memory_profile,
    attention_context,
    check_attention_backend,
    check_offload,
    pick_device,
    pick_dtype,
)
from .images import BACKGROUND_RGB, ImageSource, load_input
from .pipeline import DropletInpaintPipeline, round_frames
from .speed import (
    PROFILES,
    apply_load_switches,
    check_profile,
    check_quantize,
    quantize_aligner,
    resolve_step_switches,
    step_switches,
    uncompile,
)

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int, float], None]
DEFAULTS = {
    "droplet3d": {"width": 512, "height": 512, "num_frames": 85, "fps": None},
    "dropletvideo": {"width": 672, "height": 384, "num_frames": 85, "fps": 16},
}
REFERENCE_VIDEO_FPS = 8  # the reference writes Droplet3D orbits at 8 fps
MAX_SIDE = 2048
MAX_FRAMES = 1025
MAX_STEPS = 1000


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class GenerationParams:
    """One request. ``None`` sizes take the model's defaults; ``validate`` resolves them."""

    prompt: str
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    steps: int | None = None  # None: the profile's (50, or 25 with ``fast``)
    guidance_scale: float = 6.0
    seed: int | None = 42
    fps: int | None = None
    view_align: bool = False
    # "#rrggbb": what the input's transparent pixels are composited on (None: black, as the published example's
    # background). A cut-out sent with its background keeps its alpha for frame 0's mask.
    background: str | None = None
    # Speed (server/engine/speed.py): a profile, and step switches that override it (None: the profile's).
    profile: str | None = None
    solver: str | None = None
    cache_threshold: float | None = None
    cfg_truncation: float | None = None

    def validate(self, kind: str) -> GenerationParams:
        """Raise :class:`InputError` naming the field, before any model work; return the resolved params
        (defaults filled in, frames rounded down to 4k+1, a random seed drawn when ``seed`` is None)."""
        if kind not in DEFAULTS:
            raise InputError(f"unknown model kind {kind!r}", field="kind")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise InputError("prompt must be a non-empty string", field="prompt")
        if self.negative_prompt is not None and not isinstance(self.negative_prompt, str):
            raise InputError("negative_prompt must be a string", field="negative_prompt")
        d = DEFAULTS[kind]
        resolved = {name: d[name] if getattr(self, name) is None else getattr(self, name)
                    for name in ("width", "height", "num_frames")}
        for name in ("width", "height"):
            v = resolved[name]
            if not _is_int(v) or v < 16 or v > MAX_SIDE or v % 16:
                raise InputError(f"{name} must be a multiple of 16 in [16, {MAX_SIDE}], got {v!r}", field=name)
        frames = resolved["num_frames"]
        if not _is_int(frames) or not 1 <= frames <= MAX_FRAMES:
            raise InputError(f"num_frames must be an integer in [1, {MAX_FRAMES}], got {frames!r}", field="num_frames")
        switches = resolve_step_switches(self.profile, self.steps, self.solver, self.cache_threshold,
                                         self.cfg_truncation)
        if not _is_int(switches["steps"]) or not 1 <= switches["steps"] <= MAX_STEPS:
            raise InputError(f"steps must be an integer in [1, {MAX_STEPS}], got {self.steps!r}", field="steps")
        g = self.guidance_scale
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or g < 0:
            raise InputError(f"guidance_scale must be a finite number >= 0, got {g!r}", field="guidance_scale")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed < 2**63):
            raise InputError(f"seed must be an integer in [0, 2^63), got {self.seed!r}", field="seed")
        fps = self.fps
        if kind == "droplet3d":
            if fps is not None:
                raise InputError("fps applies only to DropletVideo; Droplet3D orbits have no FPS input", field="fps")
        else:
            fps = d["fps"] if fps is None else fps
            if not _is_int(fps) or not 1 <= fps <= 120:
                raise InputError(f"fps must be an integer in [1, 120], got {fps!r}", field="fps")
        if not isinstance(self.view_align, bool):
            raise InputError("view_align must be true or false", field="view_align")
        if self.view_align and kind != "droplet3d":
            raise InputError("view alignment exists only for Droplet3D", field="view_align")
        if self.background is not None and not (isinstance(self.background, str)
                                                and re.fullmatch(r"#[0-9a-fA-F]{6}", self.background)):
            raise InputError(f"background must be a colour #rrggbb, got {self.background!r}", field="background")
        return dataclasses.replace(
            self, width=resolved["width"], height=resolved["height"], num_frames=round_frames(frames),
            guidance_scale=float(g), fps=fps, seed=secrets.randbelow(2**31) if self.seed is None else self.seed,
            **switches,
        )

    def background_rgb(self) -> tuple[int, int, int]:
        if self.background is None:
            return BACKGROUND_RGB
        return tuple(int(self.background[i:i + 2], 16) for i in (1, 3, 5))

    def step_switches(self) -> dict:
        """The resolved speed switches of one job (after ``validate``)."""
        return {name: getattr(self, name) for name in ("profile", "steps", "solver", "cache_threshold",
                                                        "cfg_truncation")}


@dataclass
class Generation:
    """One generation in memory, as :meth:`DropletEngine.generate` returns it."""

    frames: np.ndarray  # (F, H, W, 3) uint8
    input_image: Image.Image
    aligned_image: Image.Image | None
    params: GenerationParams  # resolved
    requested: GenerationParams  # as asked
    engine: dict  # what the manifest records of the engine: kind, checkpoint, device, dtype, offload, speed
    timings: dict[str, float]  # seconds per stage
    view_align: dict | None  # shares_text_encoder and its reason, when aligned
    speed: dict  # the step switches as run (speed.step_switches)
    warnings: list[str]  # speed switches that could not run here, or a faithful job on a model loaded for speed
    # The input's transparency when it had one and frame 0 follows the input (not a view-aligned picture)
    input_alpha: Image.Image | None = None


@dataclass
class GenerationResult:
    """What :func:`write_orbit_folder` wrote."""

    frames: list[Path]
    video: Path
    manifest: dict = field(default_factory=dict)


class DropletEngine:
    """Droplet3D or DropletVideo with every component loaded once. ``generate`` is its doorway; it runs one
    generation at a time and refuses a concurrent one as busy."""

    def __init__(self, info: CheckpointInfo, pipe: DropletInpaintPipeline, device: torch.device,
                 dtype: torch.dtype, offload: str, compile: bool | str = False,
                 attention_backend: str | None = None, quantize: str | None = None, profile: str = "faithful",
                 load_warnings: list[str] | None = None, vae_tiling: bool = False) -> None:
        self.info = info
        self.pipe = pipe
        self.device = device
        self.dtype = dtype
        self.offload = offload
        self.compile = compile  # load switches as actually applied (a switch that could not run is off)
        self.quantize = quantize
        self.vae_tiling = vae_tiling
        self.attention_backend = attention_backend
        self.profile = profile  # the default profile of jobs that name none
        self.load_warnings = list(load_warnings or [])
        self.aligner = None
        self._busy = threading.Lock()

    @classmethod
    def load(cls, ckpt: str | Path, device: str | None = None, offload: str = "none",
             compile: bool | str | None = None, attention_backend: str | None = None, quantize: str | None = None,
             profile: str | None = None, warm_up: bool = False, vae_tiling: bool = False) -> DropletEngine:
        """Load every component once.

        ``profile`` (faithful, the default, or fast; server/engine/speed.py) sets the load switches that are left
        None and the step switches of jobs that name no profile. The load switches change bf16 outputs, so the
        faithful profile has none: ``compile`` compiles the repeated transformer block in place (diffusers' regional
        compilation; True means torch.compile's default backend, a string names another, e.g. "eager" to check
        graph capture alone, False turns it off); ``quantize`` ("fp8", "int8" or "none") swaps the blocks' linears
        for torchao's. Each fails soft: what cannot run here is dropped with a warning (``load_warnings``).
        ``vae_tiling`` decodes in overlapping tiles (less memory, small seams; always on with sequential offload).
        ``warm_up`` (with blocks compiled for a GPU) runs a short generation at the model's default size so that
        compilation is paid at load, not by the first job. ``attention_backend`` restricts PyTorch's SDPA to one
        kernel (flash, cudnn, efficient, math); None lets PyTorch pick, as the published inference does.
        """
        profile = check_profile(profile)
        defaults = PROFILES[profile].load_switches()
        compile = defaults["compile"] if compile is None else compile
        quantize = check_quantize(defaults["quantize"] if quantize is None else quantize)
        dev = pick_device(device)
        check_offload(offload, dev)
        attention_backend = check_attention_backend(attention_backend, dev)
        dtype = pick_dtype(dev)
        path, ckpt_id = resolve_checkpoint(ckpt)
        info = inspect_checkpoint(path, ckpt_id)
        t0 = time.perf_counter()
        components = load_components(info, dtype, dev if offload == "none" else "cpu")
        pipe = DropletInpaintPipeline(**components, text_len=info.text_len)
        apply_memory_profile(pipe, offload, dev)
        if vae_tiling:
            pipe.vae.enable_tiling()
        used, warnings = apply_load_switches(pipe, dev, compile, quantize)
        logger.info("loaded %s (%s) on %s in %.1f s", ckpt_id, info.kind, dev, time.perf_counter() - t0)
        engine = cls(info, pipe, dev, dtype, offload, used["compile"], attention_backend, used["quantize"], profile,
                     warnings, vae_tiling=vae_tiling or offload == "sequential")
        if warm_up and engine.compile and dev.type != "cpu":  # CPU compilation only checks graph capture
            engine.warm_up()
        return engine

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def has_view_align(self) -> bool:
        return self.info.has_view_align

    def describe(self) -> dict:
        loaded = [] if self.pipe is None else ["tokenizer", "text_encoder", "vae", "scheduler", "transformer"]
        if self.aligner is not None:
            loaded.append("view_aligner")
        return {
            "ckpt": self.info.ckpt_id, "path": str(self.info.path), "kind": self.kind, "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."), "offload": self.offload,
            "compile": self.compile, "attention_backend": self.attention_backend, "quantize": self.quantize,
            "vae_tiling": self.vae_tiling,
            "profile": self.profile, "load_warnings": self.load_warnings,
            "config_hash": self.info.config_hash, "text_len": self.info.text_len,
            "has_view_align": self.has_view_align, "loaded": loaded,
        }

    def check(self, params: GenerationParams) -> GenerationParams:
        """``params`` resolved for this checkpoint; InputError for what this checkpoint cannot do."""
        params = dataclasses.replace(params, profile=self.profile if params.profile is None else params.profile)
        params = params.validate(self.kind)
        table = self.pipe.transformer.table_latent_frames
        if table is not None and (params.num_frames - 1) // 4 + 1 > table:
            raise InputError(f"this checkpoint's positional table allows at most {(table - 1) * 4 + 1} frames, "
                             f"got {params.num_frames}", field="num_frames")
        if params.view_align and not self.has_view_align:
            raise InputError(f"{self.info.path} has no FLUX.1-Kontext-dev folder and pytorch_lora_weights.safetensors "
                             "for view alignment", field="view_align")
        return params

    def generate(
        self,
        image: ImageSource,
        params: GenerationParams,
        progress: Progress | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> Generation:
        """The engine's doorway: one orbit (Droplet3D) or clip (DropletVideo), in memory.

        ``progress(stage, step, total, elapsed)`` gets stages "aligning" (with view_align), "encoding", "denoising"
        (step 1..total) and "decoding"; ``elapsed`` is seconds since that stage began. ``should_cancel`` is checked
        between stages and after every denoising step; when it returns true, :class:`Cancelled` is raised after
        memory is freed. One generation at a time: a second concurrent call gets a "busy" DropletError.
        :func:`write_orbit_folder` puts the result on disk.
        """
        if self.pipe is None:
            raise DropletError("the engine is closed")
        requested = params
        params = self.check(params)
        picture, alpha = load_input(image, background=params.background_rgb())
        if params.view_align:  # frame 0 then follows the aligned picture, not the cut-out
            alpha = None
        if not self._busy.acquire(blocking=False):
            raise DropletError("the engine is busy with another generation", code="busy")
        stage_start: dict[str, float] = {}
        timings: dict[str, float] = {}

        def report(stage: str, step: int, total: int) -> None:
            now = time.perf_counter()
            stage_start.setdefault(stage, now)
            timings[stage] = round(now - stage_start[stage], 4)
            if progress is not None:
                progress(stage, step, total, now - stage_start[stage])
            # Denoising steps stop through the pipeline's interrupt (on_step); every other stage stops here.
            if (stage != "denoising" or step == 0) and should_cancel is not None and should_cancel():
                raise Cancelled("cancelled by the caller")

        def on_step(pipe: DropletInpaintPipeline, i: int, t, tensors: dict) -> dict:
            if should_cancel is not None and should_cancel():
                pipe._interrupt = True  # diffusers' way to end the loop after this step
            return tensors

        try:
            aligned = None
            if params.view_align:
                report("aligning", 0, 1)
                aligned = self.view_aligner().align(picture, params.width, params.height,
                                                    progress=lambda step, total: report("aligning", step, total))
            generator = torch.Generator(device=self.pipe._execution_device).manual_seed(params.seed)
            warnings = [*self.load_warnings, *_profile_warnings(self, params)]
            with attention_context(self.attention_backend), \
                    step_switches(self.pipe, params.step_switches(), warnings) as speed:
                frames = self.pipe(
                    aligned or picture, params.prompt, negative_prompt=params.negative_prompt, height=params.height,
                    width=params.width, num_frames=params.num_frames, num_inference_steps=params.steps,
                    guidance_scale=params.guidance_scale, generator=generator, fps=params.fps,
                    stage_callback=report, callback_on_step_end=on_step, cfg_truncation=params.cfg_truncation,
                )
            if frames is None:
                raise Cancelled("cancelled by the caller")
            return Generation(
                frames=(frames * 255).astype(np.uint8),  # truncating, as the reference's writer does
                input_image=picture, input_alpha=alpha, aligned_image=aligned, params=params, requested=requested,
                engine=self._manifest_fields(), timings=timings, speed=speed, warnings=warnings,
                view_align=None if aligned is None else {"shares_text_encoder": self.aligner.shares_text_encoder,
                                                         "share_reason": self.aligner.share_reason},
            )
        finally:
            self.free_memory()
            self._busy.release()

    def _manifest_fields(self) -> dict:
        return {"kind": self.kind, "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "offload": self.offload,
                "speed": {"compile": self.compile, "attention_backend": self.attention_backend,
                          "quantize": self.quantize, "vae_tiling": self.vae_tiling},
                "checkpoint": {"id": self.info.ckpt_id, "config_hash": self.info.config_hash,
                               "text_len": self.info.text_len}}

    def warm_up(self, width: int | None = None, height: int | None = None, num_frames: int | None = None) -> float:
        """A 2-step generation at the model's default size (or the given one) under this engine's profile, so that
        compilation and the cache hooks are in place before the first job; returns its seconds. With CFG truncation
        its second step runs the positive half alone, so both batch shapes get compiled. A compilation that fails
        here is turned off, with a warning, and the engine runs eagerly."""
        d = DEFAULTS[self.kind]
        width, height, num_frames = width or d["width"], height or d["height"], num_frames or d["num_frames"]
        table = self.pipe.transformer.table_latent_frames
        if table is not None:
            num_frames = min(num_frames, (table - 1) * 4 + 1)
        switches = resolve_step_switches(self.profile, 2, None, None, None)
        switches["cfg_truncation"] = 0.5 if switches["cfg_truncation"] > 0 else 0.0
        t0 = time.perf_counter()
        try:
            with attention_context(self.attention_backend), step_switches(self.pipe, switches, []):
                self.pipe(Image.new("RGB", (width, height)), "warm-up", height=height, width=width,
                          num_frames=num_frames, num_inference_steps=2, fps=d["fps"],
                          generator=torch.Generator(self.pipe._execution_device).manual_seed(0),
                          cfg_truncation=switches["cfg_truncation"])
        except Exception as exc:
            if not self.compile:
                raise
            uncompile(self.pipe.transformer)
            self.compile = False
            self.load_warnings.append(f"compile off: the compiled warm-up failed ({type(exc).__name__}: {exc})")
            logger.warning(self.load_warnings[-1])
        finally:
            self.free_memory()
        seconds = time.perf_counter() - t0
        logger.info("warm-up (%dx%dx%d, 2 steps, profile %s) took %.1f s", width, height, num_frames, self.profile,
                    seconds)
        return seconds

    def view_aligner(self):
        """The FLUX Kontext aligner, loaded on first use and kept."""
        if self.aligner is None:
            from .align import ViewAligner

            self.aligner = ViewAligner.load(
                self.info.path, self.device, self.dtype, droplet_text_encoder=self.pipe.text_encoder,
                droplet_text_encoder_dir=self.info.path / "text_encoder", offload=self.offload,
            )
            if self.quantize is not None:  # the 24 GB profile: FLUX Kontext must fit too
                self.load_warnings += quantize_aligner(self.aligner.pipe, self.quantize, self.device)
        return self.aligner

    def free_memory(self) -> None:
        """Return the last job's device memory. Only a GPU needs the full collection (cyclic garbage may hold its
        memory); on the CPU Python's own collector suffices, and a full pass over the loaded models costs about
        0.3 s a job, half of a tiny job's time."""
        if self.device.type == "cpu":
            return
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def close(self) -> None:
        self.pipe = None
        self.aligner = None
        self.free_memory()


def _library_versions() -> dict[str, str]:
    import diffusers
    import PIL
    import transformers

    return {"droplet3d": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "pillow": PIL.__version__, "numpy": np.__version__}


def write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    """``(F, H, W, 3) uint8`` frames → H.264 mp4 (yuv420p, plays everywhere)."""
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                         macro_block_size=1, quality=8, ffmpeg_log_level="error",
                                         output_params=["-threads", str(cpu_threads())])  # the process's budget
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()


def write_orbit_folder(generation: Generation, out_dir: str | Path, progress: Progress | None = None
                       ) -> GenerationResult:
    """Write a generation into ``out_dir``: ``input.png``, ``aligned.png`` (when aligned), ``frame0_alpha.png``
    (when the input had transparency and was not aligned), ``frames/NNNN.png``, ``orbit.mp4`` (the clip, for
    DropletVideo) and ``manifest.json``.

    ``progress`` gets the "writing" stage. Artifacts are staged and moved in at the end, manifest.json last, so a
    folder with a manifest is complete.
    """
    out = Path(out_dir)
    started = time.perf_counter()

    def report(step: int) -> None:
        if progress is not None:
            progress("writing", step, 1, time.perf_counter() - started)

    staging = None
    try:
        report(0)
        staging = make_staging(out)
        (staging / "frames").mkdir()
        generation.input_image.save(staging / "input.png")
        if generation.aligned_image is not None:
            generation.aligned_image.save(staging / "aligned.png")
        if generation.input_alpha is not None:  # resized as the pipeline resizes the input: frame 0's cut-out
            height, width = generation.frames.shape[1:3]
            generation.input_alpha.resize((width, height), Image.BICUBIC).save(staging / FRAME0_ALPHA)
        names = []
        for k, frame in enumerate(generation.frames):
            Image.fromarray(frame).save(staging / "frames" / f"{k:04d}.png")
            names.append(f"frames/{k:04d}.png")
        engine = generation.engine
        video_fps = generation.params.fps if engine["kind"] == "dropletvideo" else REFERENCE_VIDEO_FPS
        write_video(staging / "orbit.mp4", generation.frames, video_fps)
        report(1)
        manifest = {
            "kind": engine["kind"],
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "checkpoint": engine["checkpoint"],
            "params": dataclasses.asdict(generation.params),
            "requested": dataclasses.asdict(generation.requested),
            "seed": generation.params.seed,
            "num_frames": len(names),
            "video_fps": video_fps,
            "device": engine["device"], "dtype": engine["dtype"], "offload": engine["offload"],
            "engine": engine["speed"],
            "speed": generation.speed,  # the step switches as run, with counted forwards (cache hits, CFG batches)
            "view_align": generation.view_align,
            "input_size": list(generation.input_image.size),
            "libraries": _library_versions(),
            "timings": {**generation.timings, "writing": round(time.perf_counter() - started, 4)},
            "warnings": generation.warnings,
            "files": ["input.png", *(["aligned.png"] if generation.aligned_image is not None else []),
                      *([FRAME0_ALPHA] if generation.input_alpha is not None else []), "orbit.mp4", *names],
        }
        _move_into(staging, out, manifest)
        return GenerationResult(frames=[out / n for n in names], video=out / "orbit.mp4", manifest=manifest)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _profile_warnings(engine: DropletEngine, params: GenerationParams) -> list[str]:
    changed = [name for name, on in (("compile", engine.compile), (engine.quantize, engine.quantize)) if on]
    if params.profile != "faithful" or not changed:
        return []
    return [f"profile faithful ran the published schedule on a model loaded for speed ({', '.join(changed)}); "
            "outputs differ slightly from the published inference (load the model with --profile faithful)"]


def _move_into(staging: Path, out: Path, manifest: dict) -> None:
    """Replace this job's artifacts in ``out`` with the staged ones; the manifest goes in last."""
    for name in ("frames", "input.png", "aligned.png", FRAME0_ALPHA, "orbit.mp4", "manifest.json"):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    for item in staging.iterdir():
        item.rename(out / item.name)
    write_json_atomic(out / "manifest.json", manifest)
