"""Benchmark Droplet generation: transformer denoising steps, or the whole pipeline, with random weights.

Builds the models directly on the device (no download): ``--size full`` is Droplet3D at CogVideoX-5B dims
(42 layers, 48x64 heads, 33 input channels, T5-XXL, the CogVideoX VAE); ``--size tiny`` the tiny-checkpoint
dims for a CPU. Prints seconds per step, the projected 50-step time, peak memory and achieved TFLOP/s.

    python scripts/bench_generate.py --size full --width 512 --height 512 --num-frames 85 --steps 3
    python scripts/bench_generate.py --size full --mode pipeline --offload none,model,sequential --steps 2
    python scripts/bench_generate.py --size tiny --width 64 --height 64 --num-frames 9 --steps 5
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch
from droplet3d.engine.device import ATTENTION_BACKENDS, attention_context
from droplet3d.engine.embeddings import rotary_embedding
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("full", "tiny"), default="tiny")
    parser.add_argument("--mode", choices=("transformer", "pipeline"), default="transformer")
    parser.add_argument("--device", default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--num-frames", type=int, default=None)
    parser.add_argument("--text-len", type=int, default=None, help="default 450 (full) / 240 (tiny)")
    parser.add_argument("--steps", type=int, default=3)
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
    print(f"# {args.mode} {args.size} {args.width}x{args.height}x{args.num_frames} steps={args.steps} on {device} "
          f"({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), {dtype}, torch {torch.__version__}",
          file=sys.stderr)
    rows = bench_transformer(args, device, dtype) if args.mode == "transformer" else bench_pipeline(args, device, dtype)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
