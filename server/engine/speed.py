"""Speed switches and the two profiles, ``faithful`` (the published inference) and ``fast``.

Two kinds of switch:

- **load switches** change the model once, when the engine loads: regional compilation (diffusers'
  ``compile_repeated_blocks``) and FP8 / int8 linears (torchao's ``quantize_``);
- **step switches** change one job's denoising loop: the solver (diffusers' ``DPMSolverMultistepScheduler``
  built from the checkpoint's own scheduler config), First Block Cache (diffusers' hooks through
  ``enable_cache(FirstBlockCacheConfig)``; diffusers' ``TransformerBlockRegistry`` knows ``CogVideoXBlock``, whose
  parameters and outputs ours are, so the hooks reach it unchanged) and CFG truncation.

What diffusers and torchao do not cover is ours: CFG truncation, in the pipeline's denoising loop (diffusers has
no CFG interval for CogVideoX pipelines), and the head block left uncompiled while the cache decides (its
decision is a host sync that ``fullgraph`` compilation cannot capture). Nothing here touches the CogVideoX
attention processor, which still calls ``F.scaled_dot_product_attention`` itself.

Every switch fails soft: one that cannot run here (no FP8 on this device, no compiler, a one-block transformer)
is dropped with a logged warning, and the manifest records what was actually used.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch

from ..errors import InputError

logger = logging.getLogger(__name__)

PROFILE_NAMES = ("faithful", "fast")
SOLVERS = ("ddim", "dpm")
QUANTIZE = ("fp8", "int8")
FP8_MIN_CAPABILITY = (8, 9)  # Ada (sm_89), Hopper (sm_90), Blackwell (sm_100+) have FP8 tensor cores


@dataclass(frozen=True)
class Profile:
    """One profile's switches. Load switches: ``compile``, ``quantize``; the rest are step switches."""

    compile: bool = False
    quantize: str | None = None
    solver: str = "ddim"
    steps: int = 50
    cache_threshold: float = 0.0  # First Block Cache: 0 is off
    cfg_truncation: float = 0.0  # fraction of the last steps run without the unconditional pass

    def load_switches(self) -> dict:
        return {"compile": self.compile, "quantize": self.quantize}


PROFILES = {
    "faithful": Profile(),
    # DPM-Solver++ 2M reaches DDIM-50 quality in 15-20 guided steps (Lu et al. 2022); 25 leaves a margin for
    # video. The cache threshold is diffusers' default; guidance matters least at low noise (Kynkäänniemi et al.
    # 2024), so the last fifth runs without it. Sources and figures: docs/benchmarks.md.
    "fast": Profile(compile=True, quantize="fp8", solver="dpm", steps=25, cache_threshold=0.05, cfg_truncation=0.2),
}


def check_profile(name: str | None) -> str:
    if name is None:
        return "faithful"
    if name not in PROFILES:
        raise InputError(f"profile must be one of {', '.join(PROFILES)}, got {name!r}", field="profile")
    return name


def resolve_step_switches(profile: str | None, steps, solver, cache_threshold, cfg_truncation) -> dict:
    """The job's step switches: the profile's values where the caller gave None. InputError names the field."""
    name = check_profile(profile)
    base = PROFILES[name]
    steps = base.steps if steps is None else steps
    solver = base.solver if solver is None else solver
    cache_threshold = base.cache_threshold if cache_threshold is None else cache_threshold
    cfg_truncation = base.cfg_truncation if cfg_truncation is None else cfg_truncation
    if solver not in SOLVERS:
        raise InputError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}", field="solver")
    if not _finite(cache_threshold) or not 0 <= cache_threshold <= 1:
        raise InputError(f"cache_threshold must be a number in [0, 1] (0: off), got {cache_threshold!r}",
                         field="cache_threshold")
    if not _finite(cfg_truncation) or not 0 <= cfg_truncation < 1:
        raise InputError(f"cfg_truncation must be a fraction in [0, 1), got {cfg_truncation!r}",
                         field="cfg_truncation")
    return {"profile": name, "steps": steps, "solver": solver, "cache_threshold": float(cache_threshold),
            "cfg_truncation": float(cfg_truncation)}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --- load switches --------------------------------------------------------------------------------------------


def check_quantize(name: str | None) -> str | None:
    if name in (None, "none"):
        return None
    if name not in QUANTIZE:
        raise InputError(f"quantize must be one of none, {', '.join(QUANTIZE)}, got {name!r}", field="quantize")
    return name


def fp8_problem(device: torch.device) -> str | None:
    """Why FP8 matmuls cannot run on ``device``, or None when they can."""
    if device.type != "cuda":
        return f"FP8 matmuls need an NVIDIA GPU with FP8 (Ada, Hopper, Blackwell); the device is {device.type}"
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_MIN_CAPABILITY:
        return (f"{torch.cuda.get_device_name(device)} (sm_{capability[0]}{capability[1]}) has no FP8 matmuls; "
                "they need sm_89 or newer (Ada, Hopper, Blackwell)")
    return None


def compile_problem(device: torch.device, backend: str | None) -> str | None:
    """Why torch.compile's default backend (inductor) cannot run here, or None."""
    if backend is not None:
        return None  # a named backend ("eager", "aot_eager", ...) brings its own requirements
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "torch.compile needs Triton on CUDA, which is not installed"
    if device.type == "mps":
        return "torch.compile's inductor backend is not supported on MPS here"
    import shutil

    if not any(shutil.which(cc) for cc in ("cc", "gcc", "clang", "g++", "c++")):
        return "torch.compile on the CPU needs a C++ compiler, none found"
    return None


BLOCK_PREFIXES = ("transformer_blocks.", "single_transformer_blocks.")  # CogVideoX's and FLUX's repeated blocks


def _quantizable(module: torch.nn.Module, fqn: str) -> bool:
    # The blocks' linears hold ~all the FLOPs; patch embedding, time embeddings and the output projection stay
    # bf16 (small, and the most sensitive). torchao's FP8 row-wise kernels need dims that are multiples of 16.
    return (isinstance(module, torch.nn.Linear) and fqn.startswith(BLOCK_PREFIXES)
            and module.in_features % 16 == 0 and module.out_features % 16 == 0)


def quantize_transformer(transformer: torch.nn.Module, kind: str) -> None:
    """FP8 dynamic activations × FP8 per-row weights, or int8 weight-only linears, via torchao, in place (the
    Droplet transformer's blocks, or FLUX Kontext's)."""
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int8WeightOnlyConfig,
        PerRow,
        quantize_,
    )

    if kind == "fp8":
        config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    else:
        config = Int8WeightOnlyConfig()
    quantize_(transformer, config, filter_fn=_quantizable)


def apply_load_switches(pipe, device: torch.device, compile: bool | str,
                        quantize: str | None) -> tuple[dict, list[str]]:
    """Quantize, then compile, ``pipe.transformer``; returns ``(used, warnings)``."""
    used: dict = {"compile": False, "quantize": None}
    warnings: list[str] = []
    if quantize is not None:
        problem = fp8_problem(device) if quantize == "fp8" else None
        if problem is None:
            try:
                quantize_transformer(pipe.transformer, quantize)
                used["quantize"] = quantize
            except Exception as exc:  # an old torchao or an odd layer must not stop the engine
                problem = f"torchao could not quantize the transformer: {exc}"
        if problem is not None:
            warnings.append(f"{quantize} quantization off: {problem}")
    if compile:
        backend = None if compile is True else compile
        problem = compile_problem(device, backend)
        if problem is None:
            options = {} if backend is None else {"backend": backend}
            try:
                pipe.transformer.compile_repeated_blocks(fullgraph=True, **options)
                used["compile"] = compile
            except Exception as exc:  # e.g. an unknown backend name
                uncompile(pipe.transformer)
                problem = f"{type(exc).__name__}: {exc}"
        if problem is not None:
            warnings.append(f"compile off: {problem}")
    for message in warnings:
        logger.warning(message)
    return used, warnings


def quantize_aligner(pipe, kind: str, device: torch.device) -> list[str]:
    """The view aligner's FLUX transformer like the engine's (12B parameters: 24 GB in bf16, half in FP8): the LoRA is
    fused into the weights first, then the blocks' linears are quantized. Returns warnings (fail soft)."""
    problem = fp8_problem(device) if kind == "fp8" else None
    if problem is None:
        try:
            pipe.fuse_lora()
            pipe.unload_lora_weights()
            quantize_transformer(pipe.transformer, kind)
        except Exception as exc:
            problem = f"torchao could not quantize the FLUX transformer: {exc}"
    if problem is None:
        return []
    logger.warning("view alignment: %s quantization off: %s", kind, problem)
    return [f"view alignment: {kind} quantization off: {problem}"]


def uncompile(transformer: torch.nn.Module) -> None:
    """Undo regional compilation (after a failed warm-up): every block runs eagerly again."""
    for block in transformer.transformer_blocks:
        block._compiled_call_impl = None


# --- step switches --------------------------------------------------------------------------------------------


def dpm_solver(ddim_config):
    """Multistep DPM-Solver++ (2nd order) on the checkpoint's own noise schedule: v-prediction, trailing spacing and
    zero-SNR rescaled betas carry over from the DDIM config."""
    from diffusers import DPMSolverMultistepScheduler

    keep = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
            "timestep_spacing", "steps_offset", "rescale_betas_zero_snr")
    config = {k: ddim_config[k] for k in keep if k in ddim_config}
    return DPMSolverMultistepScheduler.from_config(
        config, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero", lower_order_final=True)


CACHE_OFF = -1.0  # a threshold no relative difference is below: every step computes every block


@dataclass
class StepCounts:
    """What the denoising loop really did: transformer forwards, those the cache answered, the CFG batches."""

    forwards: int = 0
    computed: int = 0
    cfg_forwards: int = 0

    def hooks(self, transformer) -> list:
        """Counting hooks on the outer transformer (never inside a compiled block, so no recompilation)."""
        leader = _cache_leader(transformer)

        def before(module, args, kwargs):
            self.forwards += 1
            self.cfg_forwards += int(kwargs["hidden_states"].shape[0] == 2)

        def after(module, args, output):
            # Read inside the pipeline's cache context: the head block's decision for this forward.
            self.computed += 1 if leader is None else int(leader.state_manager.get_state().should_compute)

        return [transformer.register_forward_pre_hook(before, with_kwargs=True),
                transformer.register_forward_hook(after)]


def _install_cache(transformer, threshold: float) -> None:
    """First Block Cache through diffusers' hooks. The head block runs eagerly while they are installed: its
    decision is a host sync (``.item()``) that a ``fullgraph`` compiled block cannot contain."""
    from diffusers import FirstBlockCacheConfig

    transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    transformer.transformer_blocks[0]._compiled_call_impl = None


def _cache_leader(transformer):
    registry = getattr(transformer.transformer_blocks[0], "_diffusers_hook", None)
    return None if registry is None else registry.get_hook("fbc_leader_block_hook")


@contextlib.contextmanager
def step_switches(pipe, switches: dict, warnings: list[str]) -> Iterator[dict]:
    """Run one job's loop under ``switches`` (see :func:`resolve_step_switches`); yields the record of what was
    used, completed when the context closes. Everything is undone afterwards, failed job or not, except on compiled
    blocks: there the cache hooks stay installed with the threshold off (re-installing them would give each block
    a new ``forward`` and recompile it), the transformer must then be called inside ``cache_context`` as the
    pipeline does, and a job without the cache is still bit-identical (the hooks only observe)."""
    transformer = pipe.transformer
    used = {**switches, "cache_threshold": 0.0}
    scheduler = pipe.scheduler
    counts = StepCounts()
    handles = []
    threshold = switches["cache_threshold"]
    try:
        if switches["solver"] == "dpm":
            pipe.scheduler = dpm_solver(scheduler.config)
        used["scheduler"] = type(pipe.scheduler).__name__
        if threshold > 0 and len(transformer.transformer_blocks) < 2:
            warnings.append("First Block Cache off: it needs at least two transformer blocks")
            logger.warning(warnings[-1])
        elif threshold > 0:
            if _cache_leader(transformer) is None:
                _install_cache(transformer, threshold)
            used["cache_threshold"] = threshold
        leader = _cache_leader(transformer)
        if leader is not None:
            transformer._reset_stateful_cache()
            leader.threshold = used["cache_threshold"] or CACHE_OFF
        handles = counts.hooks(transformer)
        yield used
    finally:
        for handle in handles:
            handle.remove()
        leader = _cache_leader(transformer)
        if leader is not None and transformer.transformer_blocks[-1]._compiled_call_impl is None:
            transformer.disable_cache()
        elif leader is not None:
            leader.threshold = CACHE_OFF
            transformer._reset_stateful_cache()  # frees the cached residuals
        pipe.scheduler = scheduler
        used.update(forwards=counts.forwards, cached_forwards=counts.forwards - counts.computed,
                    uncond_passes=counts.cfg_forwards)


def profile_table() -> dict:
    """Every profile's switches, for ``--help`` texts and the benchmark."""
    return {name: asdict(profile) for name, profile in PROFILES.items()}
