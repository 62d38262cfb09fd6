"""``droplet3d`` subcommands of the engine room: ``make-tiny-checkpoint``, ``doctor`` and ``generate``.

Heavy imports (torch, diffusers) happen inside the command functions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:
    tiny = commands.add_parser(
        "make-tiny-checkpoint", help="write a tiny random checkpoint in the published layout (tests, demos)",
        description="Write a randomly initialised Droplet3D/DropletVideo checkpoint in exactly the published folder "
        "layout, small enough to generate on a CPU in seconds. Its frames are noise.",
    )
    tiny.add_argument("out", type=Path, help="folder to create")
    tiny.add_argument("--kind", choices=("droplet3d", "dropletvideo"), default="droplet3d")
    tiny.add_argument("--rotary", action="store_true", help="use 3D RoPE instead of the additive sin-cos table")
    tiny.add_argument("--with-align", action="store_true", help="add a tiny FLUX.1-Kontext-dev folder and a LoRA")
    tiny.add_argument("--layout", choices=("diffusers", "authors"), default="diffusers",
                      help="class and block names in the configs: diffusers' CogVideoX names (default) or the "
                      "authors' (AutoencoderKLDroplet3D, Droplet3DDownBlock3D, Droplet3DTransformer3DModel, ...)")
    tiny.set_defaults(func=cmd_make_tiny_checkpoint)

    doctor = commands.add_parser(
        "doctor", help="check a checkpoint folder from its configs and safetensors headers (no weights loaded)",
        description="Report which model a checkpoint folder holds (Droplet3D/DropletVideo, rotary, text length, "
        "FPS path), each component's parameters, dtype and size, view alignment, T5 sharing and the estimated GPU "
        "memory per --offload profile. Reads configs and safetensors headers only. Prints one line per problem, "
        "naming the file and what was expected, and exits 1 when there is any.",
    )
    doctor.add_argument("ckpt", type=Path, help="checkpoint folder")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.set_defaults(func=cmd_doctor)

    gen = commands.add_parser(
        "generate", help="image + prompt → orbit video (Droplet3D) or video (DropletVideo)",
        description="Generate frames/, orbit.mp4, input.png, aligned.png (with --view-align) and manifest.json in "
        "--out. Sizes default to the model's (Droplet3D 512x512x85, DropletVideo 672x384x85 at 16 fps).",
    )
    gen.add_argument("--ckpt", required=True, help="checkpoint folder or hub id, e.g. DropletX/Droplet3D-5B")
    gen.add_argument("--image", required=True, type=Path,
                     help="input image (transparent pixels become black; a cut-out gives frame 0 its exact mask)")
    gen.add_argument("--prompt", required=True, help="dense description of the views, front → back")
    gen.add_argument("--negative-prompt", default=None)
    gen.add_argument("--view-align", action="store_true", help="snap the input to the nearest canonical view first")
    gen.add_argument("--background", default=None, metavar="#RRGGBB",
                     help="colour the input's transparent pixels are composited on (default black)")
    gen.add_argument("--width", type=int, default=None)
    gen.add_argument("--height", type=int, default=None)
    gen.add_argument("--num-frames", type=int, default=None, help="frame count, rounded down to 4k+1")
    gen.add_argument("--frames", type=int, dest="frames_count", default=None,
                     help=argparse.SUPPRESS)  # deprecated alias: --frames names a folder of frames everywhere else
    gen.add_argument("--steps", type=int, default=None, help="denoising steps (default: the profile's, 50 or 25)")
    gen.add_argument("--guidance", type=float, default=6.0)
    gen.add_argument("--seed", type=int, default=42, help="-1 draws a random seed (recorded in the manifest)")
    gen.add_argument("--fps", type=int, default=None, help="DropletVideo only: motion strength (default 16)")
    gen.add_argument("--offload", choices=("none", "model", "sequential"), default="none")
    gen.add_argument("--device", default=None, help="cuda, cuda:N, mps or cpu (default: best available)")
    add_speed_options(gen)
    steps = gen.add_argument_group("step switches (each overrides the profile's)")
    steps.add_argument("--solver", choices=("ddim", "dpm"), default=None,
                       help="ddim (published) or dpm: multistep DPM-Solver++ on the checkpoint's schedule, for fewer "
                       "steps")
    steps.add_argument("--cache-threshold", type=float, default=None, metavar="T",
                       help="First Block Cache: reuse the other blocks' residual while the first block's output "
                       "changes by less than T (relative; 0 = off, fast uses 0.05)")
    steps.add_argument("--cfg-truncation", type=float, default=None, metavar="F",
                       help="run the last fraction F of the steps without the unconditional pass (0 = off, fast 0.2)")
    gen.add_argument("--reconstruct", action="store_true", help="also reconstruct a textured mesh (Droplet3D)")
    gen.add_argument("--out", required=True, type=Path, help="output folder")
    gen.set_defaults(func=cmd_generate)


def add_speed_options(parser: argparse.ArgumentParser) -> None:
    """``--profile`` and the load switches, shared with ``droplet3d serve``; the faithful profile has none on."""
    parser.add_argument("--profile", choices=("faithful", "fast"), default=None,
                        help="faithful (default): the published inference. fast: --compile, --quantize fp8, "
                        "DPM-Solver++ at 25 steps, First Block Cache 0.05, CFG truncation 0.2 (every switch also "
                        "alone; what cannot run here is left off with a warning and the manifest says what ran)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="compile the repeated transformer block (faster steps after a one-time compilation; "
                        "bf16 outputs differ slightly from the published inference); default: the profile's")
    parser.add_argument("--quantize", choices=("none", "fp8", "int8"), default=None,
                        help="the transformer blocks' linears through torchao: fp8 (dynamic per-row, GPUs with FP8: "
                        "Ada, Hopper, Blackwell) or int8 weight-only (less memory); default: the profile's")
    parser.add_argument("--vae-tiling", action="store_true",
                        help="decode in overlapping tiles: less GPU memory, small seams (the 24 GB profile is "
                        "--offload model --quantize fp8 --vae-tiling; int8 where the GPU has no FP8)")
    parser.add_argument("--attention-backend", default=None, metavar="NAME",
                        help="restrict attention to one PyTorch SDPA kernel: flash, cudnn, efficient or math "
                        "(default: PyTorch's choice)")


def cmd_make_tiny_checkpoint(args: argparse.Namespace) -> int:
    from .tiny import make_tiny_checkpoint

    path = make_tiny_checkpoint(args.out, kind=args.kind, rotary=args.rotary, with_align=args.with_align,
                                layout=args.layout)
    print(f"tiny {args.kind} checkpoint written to {path} ({args.layout} layout)")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    import json

    from .doctor import diagnose

    report = diagnose(args.ckpt)
    print(json.dumps(report.as_json(), indent=2) if args.json else report.text())
    return 0 if report.ok else 1


class StageBars:
    """One tqdm bar per stage, fed by the engine's progress callback."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.bar = None

    def __call__(self, stage: str, step: int, total: int, elapsed: float) -> None:
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=f"{stage:<12}", unit="step" if stage == "denoising" else "",
                            file=sys.stderr, leave=True)
        self.bar.n = step
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_generate(args: argparse.Namespace) -> int:
    from .engine import DropletEngine, GenerationParams, write_orbit_folder
    from .images import load_input_image
    from .speed import resolve_step_switches

    if args.frames_count is not None:
        print("droplet3d generate: warning: --frames N is deprecated, use --num-frames N (--frames is a folder of "
              "frames elsewhere)", file=sys.stderr)
    params = GenerationParams(
        prompt=args.prompt, negative_prompt=args.negative_prompt, width=args.width, height=args.height,
        num_frames=args.num_frames if args.num_frames is not None else args.frames_count, steps=args.steps,
        guidance_scale=args.guidance,
        seed=None if args.seed == -1 else args.seed, fps=args.fps, view_align=args.view_align,
        background=args.background, profile=args.profile, solver=args.solver, cache_threshold=args.cache_threshold,
        cfg_truncation=args.cfg_truncation,
    )
    resolve_step_switches(params.profile, params.steps, params.solver, params.cache_threshold,
                          params.cfg_truncation)  # bad switches fail before any loading
    load_input_image(args.image)  # fail on a bad image before loading any model
    engine = DropletEngine.load(args.ckpt, device=args.device, offload=args.offload, compile=args.compile,
                                attention_backend=args.attention_backend, quantize=args.quantize,
                                profile=args.profile, vae_tiling=args.vae_tiling)
    if args.reconstruct and engine.kind != "droplet3d":
        from ..errors import InputError

        raise InputError("--reconstruct needs a Droplet3D orbit; DropletVideo clips are not orbits",
                         field="reconstruct")
    bars = StageBars()
    try:
        result = write_orbit_folder(engine.generate(args.image, params, progress=bars), args.out, progress=bars)
        bars.close()
        if engine.kind == "droplet3d":
            _cameras(args.out, args.reconstruct, bars)
    finally:
        bars.close()
        engine.close()
    print(f"{len(result.frames)} frames, seed {result.manifest['seed']}: {result.video}")
    return 0


def _cameras(out: Path, reconstruct: bool, bars: StageBars) -> None:
    """Every orbit folder gets transforms.json: a full reconstruction, or the cheap calibration only."""
    from ..recon import orbit_cameras

    _, warnings = orbit_cameras(out, mesh=reconstruct, progress=bars)
    bars.close()
    for warning in warnings:  # the generation is kept: warnings, exit status 0
        print(f"droplet3d generate: warning: {warning['code']}: {warning['message']}", file=sys.stderr)
    if reconstruct and (out / "mesh.glb").is_file():
        print(f"mesh: {out / 'mesh.glb'}")
