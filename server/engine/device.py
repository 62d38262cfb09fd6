"""Device, dtype and memory profile choices."""

from __future__ import annotations

import contextlib
import logging

import torch

from ..errors import InputError

logger = logging.getLogger(__name__)

OFFLOAD_PROFILES = ("none", "model", "sequential")
# PyTorch SDPA kernels by our option name. CogVideoX's attention processor calls F.scaled_dot_product_attention
# itself, so diffusers' attention dispatcher (set_attention_backend) does not reach it; torch's sdpa_kernel does.
ATTENTION_BACKENDS = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
                      "math": "MATH"}
ATTENTION_BACKENDS_OFF_CUDA = {"cpu": ("flash", "math"), "mps": ("math",)}


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` ("cuda", "cuda:1", "mps", "cpu") or the best available: cuda > mps > cpu."""
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError as exc:
            raise InputError(f"unknown device {requested!r}: {exc}", field="device") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {requested!r} requested but CUDA is not available", field="device")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise InputError(f"device {requested!r} requested but MPS is not available", field="device")
        if device.type not in ("cuda", "mps", "cpu"):
            raise InputError(f"device must be cuda, mps or cpu, got {requested!r}", field="device")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    """bf16 on a GPU (as published), fp32 on the CPU (bf16 matmuls there are slow and inexact)."""
    return torch.float32 if device.type == "cpu" else torch.bfloat16


def check_offload(offload: str, device: torch.device) -> str:
    if offload not in OFFLOAD_PROFILES:
        raise InputError(f"offload must be one of {', '.join(OFFLOAD_PROFILES)}, got {offload!r}", field="offload")
    if offload != "none" and device.type == "cpu":
        raise InputError(f"offload {offload!r} moves weights between the CPU and a GPU; the device is the CPU",
                         field="offload")
    return offload


def apply_memory_profile(pipe, offload: str, device: torch.device) -> None:
    """Place ``pipe`` on ``device`` under one of the profiles.

    none: everything resident (fastest). model: diffusers' model CPU offload — one component on the GPU at a time
    (what the reference always does). sequential: accelerate's per-layer offload plus VAE tiling, for ~16 GB cards
    (tiled decoding differs from the reference by small seams; the other profiles are exact).
    """
    pipe.vae.enable_slicing()
    if offload == "none":
        pipe.to(device)
    elif offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.enable_sequential_cpu_offload(device=device)
        pipe.vae.enable_tiling()
    logger.info("memory profile %s on %s", offload, device)


def check_attention_backend(name: str | None, device: torch.device) -> str | None:
    """``None`` (PyTorch picks the SDPA kernel, as published) or a kernel this device has."""
    if name is None:
        return None
    if name not in ATTENTION_BACKENDS:
        raise InputError(f"attention_backend must be one of {', '.join(ATTENTION_BACKENDS)}, got {name!r}",
                         field="attention_backend")
    allowed = ATTENTION_BACKENDS_OFF_CUDA.get(device.type, tuple(ATTENTION_BACKENDS))
    if name not in allowed:
        raise InputError(f"attention_backend {name!r} needs CUDA; on {device.type} use one of {', '.join(allowed)}",
                         field="attention_backend")
    return name


def attention_context(name: str | None):
    """Restrict SDPA to one kernel while the context is open (torch raises rather than fall back silently)."""
    if name is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(getattr(SDPBackend, ATTENTION_BACKENDS[name]))
