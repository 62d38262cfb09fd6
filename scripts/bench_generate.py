"""Benchmark Droplet generation with random weights: the speed profiles and each switch alone, side by side
(default), or the transformer's denoising step, or the whole pipeline per offload profile.

Builds the models directly on the device (no download): ``--size full`` is Droplet3D at CogVideoX-5B dims
(42 layers, 48x64 heads, 33 input channels, T5-XXL, the CogVideoX VAE); ``--size tiny`` the tiny-checkpoint
dims for a CPU.

Profiles mode prints, per variant: s/step, end-to-end seconds split into text encoding, VAE encode, denoising and
decode (plus the projection to the variant's full step count), peak GPU GB, and the deviation of the decoded frames
from ``faithful`` on the same seed (PSNR, max |Δ|). With random weights the deviation checks numerics, not visual
quality (docs/benchmarks.md quotes the published quality evidence per method). One command on a GPU box, a few
minutes (steps are scaled down by --step-scale, 0.2 at full size; projections use the measured s/step):

    python scripts/bench_generate.py --size full
    python scripts/bench_generate.py --size full --profiles faithful,fast,24gb --step-scale 1
    python scripts/bench_generate.py --size tiny --compile-backend eager

Transformer and pipeline modes (seconds per step, projected 50-step time, peak memory, TFLOP/s):

    python scripts/bench_generate.py --size full --mode transformer --width 512 --height 512 --num-frames 85 --steps 3
    python scripts/bench_generate.py --size full --mode pipeline --offload none,model,sequential --steps 2
    python scripts/bench_generate.py --size tiny --mode transformer --width 64 --height 64 --num-frames 9 --steps 5
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from droplet3d.engine.device import ATTENTION_BACKENDS, attention_context
from droplet3d.engine.embeddings import rotary_embedding
from droplet3d.engine.speed import PROFILES
from droplet3d.engine.transformer import DropletTransformer3DModel

FULL = {
    "num_attention_heads": 48, "attention_head_dim": 64, "in_channels": 33, "out_channels": 16,
    "time_embed_dim": 512, "text_embed_dim": 4096, "num_layers": 42, "patch_size": 2, "max_text_seq_length": 226,
}
TINY = {
    "num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 33, "out_channels": 16,
    "time_embed_dim": 16, "text_embed_dim": 32, "num_layers": 2, "patch_size": 2, "max_text_seq_length": 226,
}
T5_XXL = {"d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64, "vocab_size": 32128,
          "relative_attention_num_buckets": 32, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}


def forward_flops(cfg: dict, text_len: int, latent_frames: int, lh: int, lw: int) -> float:
    """Matmul FLOPs of one transformer forward for one sample (linear layers + attention)."""
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    n = text_len + latent_frames * (lh // cfg["patch_size"]) * (lw // cfg["patch_size"])
    linear = 2 * n * (4 * d * d + 2 * 4 * d * d)  # q, k, v, out + the 4x GELU MLP
    attention = 2 * 2 * n * n * d  # QK^T and AV
    return cfg["num_layers"] * (linear + attention)


def build_transformer(cfg: dict, rotary: bool, frames: int, lh: int, lw: int, device, dtype):
    table = {} if rotary else {"sample_frames": frames, "sample_height": lh, "sample_width": lw}
    torch.manual_seed(0)  # the same random weights every time: variants that change the model rebuild it
    with torch.device(device):
        model = DropletTransformer3DModel(use_rotary_positional_embeddings=rotary, **cfg, **table)
    return torch.nn.Module.to(model, dtype).eval().requires_grad_(False)  # ModelMixin.to warns needlessly


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_gb(device) -> float:
    return torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else float("nan")


def attention_kernels(run, inputs: tuple, kwargs: dict) -> list[str]:
    """Names of the attention ops and kernels one forward really launches (which SDPA kernel ran)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        run(*inputs, **kwargs)
    pattern = re.compile(r"flash|fmha|attention|cudnn|sdpa|sdp_", re.I)
    return sorted({e.key[:90] for e in prof.key_averages() if pattern.search(e.key)})[:8]


def place(model, offload: str, device):
    """Offload profiles for the transformer alone (the pipeline mode uses the engine's own profiles)."""
    if offload == "none":
        return model.to(device)
    from accelerate import cpu_offload, cpu_offload_with_hook

    model.to("cpu")
    if offload == "model":
        return cpu_offload_with_hook(model, device)[0]
    cpu_offload(model, execution_device=device)
    return model


def bench_transformer(args, device, dtype) -> list[dict]:
    cfg = FULL if args.size == "full" else TINY
    lf, lh, lw = (args.num_frames - 1) // 4 + 1, args.height // 8, args.width // 8
    text_len = args.text_len or (450 if args.size == "full" else 240)
    flops = 2 * forward_flops(cfg, text_len, lf, lh, lw)  # CFG: a batch of 2
    gen = torch.Generator(device).manual_seed(0)
    x = torch.randn(2, lf, 33, lh, lw, generator=gen, device=device, dtype=dtype)
    text = torch.randn(2, text_len, cfg["text_embed_dim"], generator=gen, device=device, dtype=dtype)
    t = torch.full((2,), 500, device=device)
    rope = rotary_embedding(lf, args.height, args.width, 2, cfg["attention_head_dim"], device) if args.rotary else None
    rows, reference_out = [], None
    base = build_transformer(cfg, args.rotary, args.num_frames, lh, lw, device, dtype)
    for variant in args.variants.split(","):
        for offload in args.offload.split(","):
            if offload != "none" and variant != "eager":
                continue
            model = place(base, offload, device)
            run = model
            if "fused" in variant:
                model.fuse_qkv_projections()
            if "regional" in variant:
                torch._dynamo.reset()  # recompile under this variant's SDPA kernel, not an earlier one's
                model.compile_repeated_blocks(fullgraph=True)  # one compiled block reused by all 42
            elif "compile" in variant:
                run = torch.compile(model, fullgraph=False)
            backend = variant.split("+")[-1] if variant.split("+")[-1] in ATTENTION_BACKENDS else None
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            times = []
            with torch.no_grad(), attention_context(backend):
                for i in range(args.warmup + args.steps):
                    sync(device)
                    t0 = time.perf_counter()
                    out = run(x, text, t, image_rotary_emb=rope, return_dict=False)[0]
                    sync(device)
                    if i >= args.warmup:
                        times.append(time.perf_counter() - t0)
                peak = peak_gb(device)
                kernels = attention_kernels(run, (x, text, t), {"image_rotary_emb": rope, "return_dict": False})
            err = None
            if offload == "none":
                if reference_out is None:
                    reference_out = out.float()
                err = float((out.float() - reference_out).norm() / reference_out.norm())
            if "fused" in variant:
                model.unfuse_qkv_projections()
            step = sorted(times)[len(times) // 2]
            rows.append({"mode": "transformer", "variant": variant, "offload": offload, "s_per_step": step,
                         "projected_50_steps_s": 50 * step, "peak_gb": peak,
                         "tflops": flops / step / 1e12, "rel_err_vs_eager": err, "attention_ops": kernels})
            print(json.dumps(rows[-1]), flush=True)
            if offload != "none":
                from accelerate.hooks import remove_hook_from_module

                remove_hook_from_module(base, recurse=True)
                base.to(device)
    return rows


def build_pipeline(args, device, dtype):
    """The engine's pipeline with random full-size (or tiny) components; the tokenizer is the tiny one."""
    import tempfile

    from diffusers import AutoencoderKLCogVideoX, DDIMScheduler
    from droplet3d.engine.pipeline import DropletInpaintPipeline
    from droplet3d.engine.tiny import SCHEDULER_CONFIG, make_tiny_checkpoint
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    tiny = Path(tempfile.mkdtemp()) / "tiny"
    make_tiny_checkpoint(tiny)
    args.tiny_dir = tiny  # its tokenizers (and tiny FLUX configs) serve the view-alignment benchmark
    cfg = FULL if args.size == "full" else TINY
    lh, lw = args.height // 8, args.width // 8
    build_on = device  # random init is fast on the GPU; offload profiles start from the CPU like a real load
    with torch.device(build_on):
        if args.size == "full":
            te = T5EncoderModel(T5Config(**T5_XXL)).to(dtype)
            vae = AutoencoderKLCogVideoX().to(dtype)
        else:
            te = T5EncoderModel.from_pretrained(tiny / "text_encoder").to(dtype)
            vae = AutoencoderKLCogVideoX.from_pretrained(tiny / "vae").to(dtype)
    transformer = build_transformer(cfg, args.rotary, args.num_frames, lh, lw, build_on, dtype)
    if args.offload != "none":
        te, vae, transformer = te.to("cpu"), vae.to("cpu"), transformer.to("cpu")
    sched = DDIMScheduler.from_config({k: v for k, v in SCHEDULER_CONFIG.items() if not k.startswith("_")})
    return DropletInpaintPipeline(T5Tokenizer.from_pretrained(tiny / "tokenizer"), te.eval(), vae.eval(),
                                  transformer, sched, text_len=args.text_len or (450 if args.size == "full" else 240))


def bench_pipeline(args, device, dtype) -> list[dict]:
    from droplet3d.engine.device import apply_memory_profile
    from PIL import Image

    rows = []
    for offload in args.offload.split(","):
        args_one = argparse.Namespace(**{**vars(args), "offload": offload})
        pipe = build_pipeline(args_one, device, dtype)
        apply_memory_profile(pipe, offload, device)
        image = Image.new("RGB", (args.width, args.height), (120, 80, 40))
        for _ in range(args.warmup + 1):
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            marks: dict[str, float] = {}

            def stage(name, step, total, marks=marks):
                sync(device)
                marks[f"{name}:{step}"] = time.perf_counter()

            t0 = time.perf_counter()
            frames = pipe(image, "a chair", height=args.height, width=args.width, num_frames=args.num_frames,
                          num_inference_steps=args.steps, generator=torch.Generator(device).manual_seed(0),
                          stage_callback=stage)
            total = time.perf_counter() - t0
        encode = marks["encoding:1"] - marks["encoding:0"]
        step = (marks[f"denoising:{args.steps}"] - marks["denoising:1"]) / max(args.steps - 1, 1)
        decode = marks["decoding:1"] - marks["decoding:0"]
        row = {"mode": "pipeline", "offload": offload, "frames_out": int(frames.shape[0]), "encode_s": encode,
               "s_per_step": step, "decode_s": decode, "total_s": total,
               "projected_50_steps_s": total + (50 - args.steps) * step, "peak_gb": peak_gb(device)}
        print(json.dumps(row), flush=True)
        rows.append(row)
        del pipe
        import gc

        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# --- profiles mode ---------------------------------------------------------------------------------------------

FAST = PROFILES["fast"]
FAST_STEPS = {"solver": FAST.solver, "steps": FAST.steps, "cache_threshold": FAST.cache_threshold,
              "cfg_truncation": FAST.cfg_truncation}
# name → (load switches, step switches over faithful's, memory profile)
VARIANTS = {
    "faithful": ({}, {}, "none"),
    "compile": ({"compile": True}, {}, "none"),
    "fp8": ({"quantize": "fp8"}, {}, "none"),
    "int8": ({"quantize": "int8"}, {}, "none"),
    "dpm": ({}, {"solver": "dpm", "steps": FAST.steps}, "none"),
    "cache": ({}, {"cache_threshold": FAST.cache_threshold}, "none"),
    "cfg-trunc": ({}, {"cfg_truncation": FAST.cfg_truncation}, "none"),
    "fast-steps": ({}, FAST_STEPS, "none"),  # what a fast job gets from a server loaded faithful
    "fast": (FAST.load_switches(), FAST_STEPS, "none"),
    # 24 GB cards: one component on the GPU at a time, FP8 blocks (int8 where FP8 is missing), tiled VAE decode
    "24gb": ({"quantize": "fp8"}, FAST_STEPS, "model"),
}
CARD_24GB = 22e9  # the cap for a 24 GB card, leaving room for the driver and other processes
ALIGN_STEPS = 28  # FluxKontextPipeline's default, which the view aligner uses
# FLUX.1 Kontext [dev] at published dims (12B transformer), random weights; its T5 is the Droplet one, shared.
FLUX_FULL = {
    "transformer": {"patch_size": 1, "in_channels": 64, "num_layers": 19, "num_single_layers": 38,
                    "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096,
                    "pooled_projection_dim": 768, "guidance_embeds": True, "axes_dims_rope": [16, 56, 56]},
    "vae": {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [128, 256, 512, 512],
            "layers_per_block": 2, "latent_channels": 16, "scaling_factor": 0.3611, "shift_factor": 0.1159,
            "use_quant_conv": False, "use_post_quant_conv": False},
    "clip": {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
             "num_hidden_layers": 12, "projection_dim": 768, "max_position_embeddings": 77},
}


def build_aligner(args, base, device, dtype, quantize: str | None, offload: str = "none"):
    """The view aligner on random FLUX Kontext weights (published dims at full size, the tiny assets' otherwise),
    its transformer quantized like the variant's; ``offload`` "model" gives it its own T5 copy, as the engine does."""
    import copy

    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
    from droplet3d.engine.align import FLUX_DIR, ViewAligner
    from droplet3d.engine.speed import quantize_transformer
    from droplet3d.engine.tiny import make_tiny_align_assets
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Tokenizer

    flux_dir = args.tiny_dir / FLUX_DIR
    if not flux_dir.exists():
        make_tiny_align_assets(args.tiny_dir)
    tokenizer = CLIPTokenizer.from_pretrained(flux_dir / "tokenizer")
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    if args.size == "full":
        cfgs = {**FLUX_FULL, "clip": CLIPTextConfig(**FLUX_FULL["clip"], **ids)}
    else:
        cfgs = {"transformer": FluxTransformer2DModel.load_config(flux_dir / "transformer"),
                "vae": AutoencoderKL.load_config(flux_dir / "vae"),
                "clip": CLIPTextConfig.from_pretrained(flux_dir / "text_encoder")}
    torch.manual_seed(1)
    with torch.device(device):
        transformer = FluxTransformer2DModel.from_config(cfgs["transformer"]).to(dtype)
        vae = AutoencoderKL.from_config(cfgs["vae"]).to(dtype)
        clip = CLIPTextModel(cfgs["clip"]).to(dtype)
    t5 = base.text_encoder if offload == "none" else copy.deepcopy(base.text_encoder)
    pipe = FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(flux_dir / "scheduler"), vae=vae.eval(),
        text_encoder=clip.eval(), tokenizer=tokenizer, text_encoder_2=t5,
        tokenizer_2=T5Tokenizer.from_pretrained(args.tiny_dir / "tokenizer"), transformer=transformer.eval())
    if offload == "model":
        pipe.to("cpu")
        pipe.enable_model_cpu_offload(device=device)
    pipe.set_progress_bar_config(disable=True)
    reason = "benchmark"
    if quantize is not None:
        try:
            quantize_transformer(pipe.transformer, quantize)
        except Exception as exc:  # e.g. FP8 of CPU-resident (offloaded) weights: measured unquantized, and said so
            reason = f"FLUX left unquantized: {type(exc).__name__}: {str(exc)[:200]}"
            print(f"# view alignment: {reason}", file=sys.stderr)
    return ViewAligner(pipe, offload == "none", reason)


def time_alignment(args, aligner, image, device) -> dict:
    """Seconds of one alignment at this run's step scale, and projected to the aligner's 28 steps."""
    steps = max(2, round(ALIGN_STEPS * args.step_scale))
    marks: list[float] = []

    def progress(step: int, total: int) -> None:
        sync(device)
        marks.append(time.perf_counter())

    sync(device)
    t0 = time.perf_counter()
    aligner.align(image, args.width, args.height, steps=steps, progress=progress)
    sync(device)
    total = time.perf_counter() - t0
    per_step = (marks[-1] - marks[0]) / (len(marks) - 1)
    return {"align_s": round(total, 2), "align_projected_s": round(total + (ALIGN_STEPS - steps) * per_step, 1)}


class StageClock:
    """Seconds of text encoding, VAE encode, denoising and decode, from the pipeline's own calls."""

    def __init__(self, pipe, device) -> None:
        self.pipe, self.device, self.times, self.marks = pipe, device, {}, {}
        for name, attr in (("text_encode_s", "encode_text"), ("vae_encode_s", "prepare_conditioning")):
            setattr(pipe, attr, self._timed(name, getattr(pipe, attr)))

    def _timed(self, name, fn):
        def run(*args, **kwargs):
            sync(self.device)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            sync(self.device)
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0
            return out
        return run

    def stage(self, name: str, step: int, total: int) -> None:
        sync(self.device)
        self.marks[f"{name}:{step}"] = time.perf_counter()

    def result(self, steps: int) -> dict:
        m = self.marks
        denoise = m[f"denoising:{steps}"] - m["denoising:0"]
        return {**{k: round(v, 3) for k, v in self.times.items()}, "denoise_s": round(denoise, 3),
                "decode_s": round(m["decoding:1"] - m["decoding:0"], 3), "s_per_step": round(denoise / steps, 4)}


def deviation(frames: np.ndarray, reference: np.ndarray) -> dict:
    """PSNR (dB, frames in [0, 1]) and max |Δ| of the decoded frames against faithful's."""
    if frames.shape != reference.shape:
        return {"psnr_db": None, "max_abs_diff": None}
    mse = float(np.mean((frames.astype(np.float64) - reference) ** 2))
    return {"psnr_db": round(10 * math.log10(1 / mse), 2) if mse > 0 else math.inf,
            "max_abs_diff": round(float(np.abs(frames - reference).max()), 4)}


def variant_pipeline(args, base, name: str, device, dtype):
    """The pipeline for one variant: the shared base unless the variant changes the model or its placement."""
    from droplet3d.engine.device import apply_memory_profile
    from droplet3d.engine.speed import apply_load_switches

    load, _, memory = VARIANTS[name]
    if not load and memory == "none":
        return base, {"compile": False, "quantize": None}, []
    cfg = FULL if args.size == "full" else TINY
    transformer = build_transformer(cfg, args.rotary, args.num_frames, args.height // 8, args.width // 8, device, dtype)
    components = {k: getattr(base, k) for k in ("tokenizer", "text_encoder", "vae", "scheduler")}
    if memory != "none":  # the base's modules move too: offload variants run last
        transformer = transformer.to("cpu")
        components = {k: v.to("cpu") if isinstance(v, torch.nn.Module) else v for k, v in components.items()}
    from droplet3d.engine.pipeline import DropletInpaintPipeline

    pipe = DropletInpaintPipeline(**components, transformer=transformer, text_len=base.text_len)
    warnings = []
    if memory != "none":
        apply_memory_profile(pipe, memory, device)
        pipe.vae.enable_tiling()
        if load.get("quantize") == "fp8" and device.type == "cuda":
            from droplet3d.engine.speed import fp8_problem

            if fp8_problem(device):
                warnings.append(f"fp8 → int8: {fp8_problem(device)}")
                load = {**load, "quantize": "int8"}
    compile = (args.compile_backend or True) if load.get("compile") else False
    used, more = apply_load_switches(pipe, device, compile, load.get("quantize"))
    return pipe, used, warnings + more


def run_variant(args, pipe, name: str, image, device) -> tuple[np.ndarray, dict]:
    from droplet3d.engine.speed import resolve_step_switches, step_switches

    overrides = VARIANTS[name][1]
    full = resolve_step_switches("faithful", overrides.get("steps"), overrides.get("solver"),
                                 overrides.get("cache_threshold"), overrides.get("cfg_truncation"))
    switches = {**full, "steps": max(2, round(full["steps"] * args.step_scale))}
    warnings: list[str] = []

    def once(steps: int, clock=None):
        with step_switches(pipe, {**switches, "steps": steps}, warnings) as used:
            frames = pipe(image, "a chair", height=args.height, width=args.width, num_frames=args.num_frames,
                          num_inference_steps=steps, generator=torch.Generator(device).manual_seed(0),
                          stage_callback=None if clock is None else clock.stage,
                          cfg_truncation=switches["cfg_truncation"])
        return frames, used

    warm = None
    if VARIANTS[name][0].get("compile") or name == "faithful":  # compile (or CUDA's lazy start) is paid here
        sync(device)
        t0 = time.perf_counter()
        once(2)
        warm = round(time.perf_counter() - t0, 2)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    clock = StageClock(pipe, device)
    t0 = time.perf_counter()
    frames, used = once(switches["steps"], clock)
    total = time.perf_counter() - t0
    for attr in ("encode_text", "prepare_conditioning"):
        del pipe.__dict__[attr]  # the clock's wrappers
    stages = clock.result(switches["steps"])
    fixed = total - stages["denoise_s"]
    row = {"variant": name, "steps_run": switches["steps"], "steps_full": full["steps"], **stages,
           "total_s": round(total, 2), "projected_s": round(fixed + full["steps"] * stages["s_per_step"], 1),
           "peak_gb": round(peak_gb(device), 2), "warmup_s": warm,
           "cached_forwards": used["cached_forwards"], "forwards": used["forwards"],
           "uncond_passes": used["uncond_passes"], "scheduler": used["scheduler"], "warnings": warnings}
    return frames, row


def bench_profiles(args, device, dtype) -> list[dict]:
    from PIL import Image

    args.step_scale = args.step_scale or (0.2 if args.size == "full" else 1.0)
    default = [n for n in VARIANTS if n != "int8" and (n != "24gb" or device.type == "cuda")]
    names = args.profiles.split(",") if args.profiles else default
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    names = ["faithful", *sorted((n for n in names if n != "faithful"), key=lambda n: VARIANTS[n][2] != "none")]
    args.offload = "none"  # the base pipeline is resident; the 24gb variant places its own
    base = build_pipeline(args, device, dtype)
    from droplet3d.engine.device import apply_memory_profile

    apply_memory_profile(base, "none", device)
    image = Image.new("RGB", (args.width, args.height), (120, 80, 40))
    rows, reference = [], None
    aligners: dict = {}  # quantize kind → resident aligner
    alignments: dict = {}  # quantize kind → its timing, measured once
    for name in names:
        pipe, used, warnings = variant_pipeline(args, base, name, device, dtype)
        offloaded = VARIANTS[name][2] != "none"
        aligner = None
        if args.view_align and offloaded:
            aligner = build_aligner(args, base, device, dtype, used["quantize"], offload=VARIANTS[name][2])
            aligners.clear()  # nothing else stays on the GPU while the capped variant runs
            base.transformer.to("cpu")
        elif args.view_align and used["quantize"] not in aligners:
            aligners[used["quantize"]] = build_aligner(args, base, device, dtype, used["quantize"])
        if pipe is not base and not offloaded:
            base.transformer.to("cpu")  # the variant's own transformer replaces it on the GPU
        gc.collect()
        cap = offloaded and device.type == "cuda"
        if cap:
            torch.cuda.empty_cache()
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, CARD_24GB / total), device)
        try:
            frames, row = run_variant(args, pipe, name, image, device)
            if aligner is not None:  # inside the cap; peak_gb covers both
                row.update(time_alignment(args, aligner, image, device), peak_gb=round(peak_gb(device), 2),
                           align_note=aligner.share_reason)
            elif args.view_align:
                if used["quantize"] not in alignments:
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                    timing = time_alignment(args, aligners[used["quantize"]], image, device)
                    alignments[used["quantize"]] = {**timing, "align_peak_gb": round(peak_gb(device), 2)}
                row.update(alignments[used["quantize"]])
        except torch.OutOfMemoryError as exc:
            frames, row = None, {"variant": name, "error": f"out of memory: {str(exc)[:200]}"}
        finally:
            if cap:
                torch.cuda.set_per_process_memory_fraction(1.0, device)
        if "align_projected_s" in row and "projected_s" in row:
            row["projected_with_align_s"] = round(row["projected_s"] + row["align_projected_s"], 1)
        if pipe is not base and not offloaded:
            base.transformer.to(device)
        row = {**row, "compile": used["compile"], "quantize": used["quantize"],
               "warnings": [*warnings, *row.get("warnings", [])]}
        if frames is not None:
            reference = frames if reference is None else reference
            row.update(deviation(frames, reference))
        print(json.dumps(row), flush=True)
        rows.append(row)
        if pipe is not base:
            del pipe
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print_table(rows)
    return rows


def print_table(rows: list[dict]) -> None:
    cols = ["variant", "steps_run", "s_per_step", "text_encode_s", "vae_encode_s", "denoise_s", "decode_s", "total_s",
            "steps_full", "projected_s", "align_s", "align_projected_s", "projected_with_align_s", "peak_gb",
            "psnr_db", "max_abs_diff", "cached_forwards", "uncond_passes"]
    print("| " + " | ".join(cols) + " |", file=sys.stderr)
    print("|" + " --- |" * len(cols), file=sys.stderr)
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in cols) + " |", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("full", "tiny"), default="tiny")
    parser.add_argument("--mode", choices=("profiles", "transformer", "pipeline"), default="profiles")
    parser.add_argument("--profiles", default=None,
                        help=f"profiles mode: comma list of {', '.join(VARIANTS)} (default: all but int8, and "
                        "24gb only on CUDA); faithful always runs first, as the reference")
    parser.add_argument("--step-scale", type=float, default=None,
                        help="profiles mode: run this fraction of each variant's steps (default 0.2 full, 1 tiny)")
    parser.add_argument("--view-align", action=argparse.BooleanOptionalAction, default=True,
                        help="profiles mode: also time the view alignment (FLUX Kontext, random weights), bf16 and "
                        "quantized like each variant; the 24gb variant runs it inside its memory cap")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend of the compiled variants (default inductor; eager checks capture)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--num-frames", type=int, default=None)
    parser.add_argument("--text-len", type=int, default=None, help="default 450 (full) / 240 (tiny)")
    parser.add_argument("--steps", type=int, default=3, help="transformer and pipeline modes")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rotary", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--offload", default="none", help="comma list of none,model,sequential")
    parser.add_argument("--variants", default="eager",
                        help="transformer mode: comma list of eager, fused, compile, regional, each optionally "
                        "+flash, +cudnn, +efficient or +math (SDPA restricted to that kernel), e.g. "
                        "eager,eager+cudnn,regional; regional variants compile the blocks in place: list them last")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    full = args.size == "full"
    args.width = args.width or (512 if full else 64)
    args.height = args.height or (512 if full else 64)
    args.num_frames = args.num_frames or (85 if full else 9)
    from droplet3d.engine.device import pick_device, pick_dtype

    device = pick_device(args.device)
    dtype = pick_dtype(device)
    scale = args.step_scale or (0.2 if full else 1.0)
    steps = f"step-scale={scale}" if args.mode == "profiles" else f"steps={args.steps}"
    print(f"# {args.mode} {args.size} {args.width}x{args.height}x{args.num_frames} {steps} on {device} "
          f"({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), {dtype}, torch {torch.__version__}",
          file=sys.stderr)
    bench = {"profiles": bench_profiles, "transformer": bench_transformer, "pipeline": bench_pipeline}[args.mode]
    rows = bench(args, device, dtype)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
