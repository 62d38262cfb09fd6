"""Canonical view alignment (docs/design.md §7.4): FLUX.1 Kontext + the Droplet3D LoRA snap an input image to the
nearest eye-level front/left/right view before generation.

FLUX's ``text_encoder_2`` is a T5-XXL encoder like Droplet3D's text encoder. When the two checkpoints hold the
same weights, one loaded copy serves both (≈9.5 GB in bf16). :func:`compare_text_encoders` decides that from
the files, cheapest evidence first, and never assumes.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CheckpointError, InputError

if TYPE_CHECKING:
    import torch
    from PIL import Image

logger = logging.getLogger(__name__)

FLUX_DIR = "FLUX.1-Kontext-dev"
LORA_FILE = "pytorch_lora_weights.safetensors"
ALIGN_PROMPT = "Convert this image to the closest orthogonal view, such as front, left, or right."
ALIGN_GUIDANCE = 2.5
ALIGN_SEED = 42
# T5 config fields that define the weights' meaning; anything else (dropout, ids, dtype notes) may differ freely.
T5_ARCH_FIELDS = (
    "vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "relative_attention_num_buckets",
    "relative_attention_max_distance", "feed_forward_proj", "layer_norm_epsilon",
)
# T5EncoderModel ties encoder.embed_tokens to shared; checkpoints store either name or both.
T5_TIED_ALIAS = ("encoder.embed_tokens.weight", "shared.weight")


@dataclass(frozen=True)
class ShareDecision:
    shared: bool | None  # None: undecided, because deciding needs tensor values and read_tensors was False
    reason: str


def compare_text_encoders(droplet_dir: Path, flux_dir: Path, dtype: torch.dtype | None,
                          read_tensors: bool = True) -> ShareDecision:
    """Whether two saved T5 encoders hold equal weights once loaded in ``dtype``.

    Cheapest evidence first: configs, then the safetensors headers (names, shapes; no tensor data), then shard
    identity (same file, or the sha256 blob names of a Hugging Face cache), and only then tensor values, stopping
    at the first difference. Each reason says how many tensors were read. With ``read_tensors`` False (the
    checkpoint doctor) the last step is skipped and the decision may be None.
    """
    config_a = _read_json(droplet_dir / "config.json", "a T5 encoder config")
    config_b = _read_json(flux_dir / "config.json", "a T5 encoder config")
    changed = [f"{k}: {config_a.get(k)!r} vs {config_b.get(k)!r}" for k in T5_ARCH_FIELDS
               if config_a.get(k) != config_b.get(k)]
    if changed:
        return ShareDecision(False, f"configs differ ({', '.join(changed)}); no tensor read")

    layout_a, layout_b = _tensor_layout(droplet_dir), _tensor_layout(flux_dir)
    if layout_a.keys() != layout_b.keys():
        only = sorted(layout_a.keys() ^ layout_b.keys())
        return ShareDecision(False, f"tensor names differ ({len(only)} unmatched, e.g. {only[0]}); no tensor read")
    for name, (_, _, shape_a, _) in layout_a.items():
        shape_b = layout_b[name][2]
        if shape_a != shape_b:
            return ShareDecision(False, f"shape of {name} differs ({shape_a} vs {shape_b}); no tensor read")

    shards_a, shards_b = _shards(droplet_dir), _shards(flux_dir)
    sizes_a, sizes_b = [p.stat().st_size for p in shards_a], [p.stat().st_size for p in shards_b]
    if sizes_a == sizes_b:
        if all(_same_bytes_for_free(a, b) for a, b in zip(shards_a, shards_b, strict=True)):
            return ShareDecision(True, f"{len(shards_a)} shard files identical (same file or sha256); no tensor read")
        why = "shard sizes equal, identity not known without reading"
    else:
        why = f"shard sizes differ ({sum(sizes_a)} vs {sum(sizes_b)} bytes) but names and shapes match"
    if not read_tensors:
        return ShareDecision(None, f"{why}; the tensor values decide (compared when view alignment loads)")
    return _compare_tensors(layout_a, layout_b, dtype, why)


def _compare_tensors(layout_a: dict, layout_b: dict, dtype: torch.dtype, why: str) -> ShareDecision:
    import torch
    from safetensors import safe_open

    handles: dict[Path, object] = {}

    def read(path: Path, key: str) -> torch.Tensor:
        if path not in handles:
            handles[path] = safe_open(str(path), framework="pt")
        return handles[path].get_tensor(key)

    for count, name in enumerate(sorted(layout_a), start=1):
        path_a, key_a, _, dtype_a = layout_a[name]
        path_b, key_b, _, dtype_b = layout_b[name]
        a, b = read(path_a, key_a), read(path_b, key_b)
        # Stored in different dtypes: equality as loaded is what matters. Same dtype: compare as stored, which can
        # only err towards not sharing.
        if dtype_a != dtype_b:
            a, b = a.to(dtype), b.to(dtype)
        if not torch.equal(a, b):
            return ShareDecision(False, f"{why}; tensor {name} differs ({count} of {len(layout_a)} tensors read)")
    return ShareDecision(True, f"{why}; all {len(layout_a)} tensors equal")


def _read_json(path: Path, expected: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing (expected {expected})") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not readable JSON: {exc}") from None


def _shards(folder: Path) -> list[Path]:
    """The safetensors files of a transformers model folder, from its index when sharded."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(_read_json(index, "a safetensors shard index").get("weight_map", {}).values()))
        paths = [folder / f for f in files]
    else:
        paths = [folder / "model.safetensors"]
    for path in paths:
        if not path.is_file():
            raise CheckpointError(f"{path} is missing (expected a T5 encoder weight shard)")
    return paths


def _tensor_layout(folder: Path) -> dict[str, tuple[Path, str, list[int], str]]:
    """name → (file, stored key, shape, dtype) from the safetensors headers only."""
    from safetensors import safe_open

    layout = {}
    for path in _shards(folder):
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open handles are not mappings
                    tensor = f.get_slice(key)
                    layout[key] = (path, key, tensor.get_shape(), tensor.get_dtype())
        except Exception as exc:  # safetensors raises its own error types for a bad header
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    alias, canonical = T5_TIED_ALIAS
    if canonical in layout:
        layout.pop(alias, None)
    elif alias in layout:
        layout[canonical] = layout.pop(alias)
    return layout


def _same_bytes_for_free(a: Path, b: Path) -> bool:
    """True when two files are known identical without reading them: one file behind both paths (symlink or
    hard link), or Hugging Face cache blobs, which are named by their sha256."""
    if a.samefile(b):
        return True
    real_a, real_b = a.resolve(), b.resolve()
    return real_a.parent.name == real_b.parent.name == "blobs" and len(real_a.name) == 64 and real_a.name == real_b.name


def _default_steps() -> int:
    from diffusers import FluxKontextPipeline

    return inspect.signature(FluxKontextPipeline.__call__).parameters["num_inference_steps"].default


class ViewAligner:
    """FLUX.1 Kontext with the Droplet3D view LoRA. Long-lived like the engine: load once, align many times."""

    def __init__(self, pipe, shares_text_encoder: bool, share_reason: str) -> None:
        self.pipe = pipe
        self.shares_text_encoder = shares_text_encoder
        self.share_reason = share_reason

    @classmethod
    def load(
        cls,
        ckpt_dir: Path,
        device: str | torch.device,
        dtype: torch.dtype,
        droplet_text_encoder=None,
        droplet_text_encoder_dir: Path | None = None,
        offload: str = "none",
    ) -> ViewAligner:
        """Load ``<ckpt>/FLUX.1-Kontext-dev`` and the LoRA, sharing ``droplet_text_encoder`` when equal.

        ``droplet_text_encoder_dir`` defaults to ``<ckpt>/text_encoder`` (the files ``droplet_text_encoder`` was
        loaded from). ``offload`` is the engine's memory profile; under "model" or "sequential" each pipeline moves
        its own modules with hooks, so one module cannot serve two pipelines and nothing is shared.
        """
        from diffusers import FluxKontextPipeline

        from .device import OFFLOAD_PROFILES

        ckpt_dir = Path(ckpt_dir)
        flux_dir, lora = ckpt_dir / FLUX_DIR, ckpt_dir / LORA_FILE
        if offload not in OFFLOAD_PROFILES:
            raise InputError(f"offload must be one of {', '.join(OFFLOAD_PROFILES)}, got {offload!r}", field="offload")
        _check_flux_folder(flux_dir)
        if not lora.is_file():
            raise CheckpointError(f"{lora} is missing (expected the view-alignment LoRA safetensors file)")

        if droplet_text_encoder is None:
            decision = ShareDecision(False, "no Droplet text encoder given")
        elif offload != "none":
            decision = ShareDecision(False, f"offload profile {offload!r} moves modules per pipeline")
        else:
            decision = compare_text_encoders(
                Path(droplet_text_encoder_dir or ckpt_dir / "text_encoder"), flux_dir / "text_encoder_2", dtype
            )
        verdict = "sharing Droplet's T5 as FLUX text_encoder_2" if decision.shared else "loading FLUX's own T5"
        logger.info("view alignment: %s (%s)", verdict, decision.reason)

        # Safe to share: FLUX LoRAs load into the transformer and CLIP only, never into text_encoder_2.
        shared = {"text_encoder_2": droplet_text_encoder} if decision.shared else {}
        try:
            pipe = FluxKontextPipeline.from_pretrained(flux_dir, dtype=dtype, **shared)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise CheckpointError(f"{flux_dir} could not be loaded as FluxKontextPipeline: {_one_line(exc)}") from None
        try:
            pipe.load_lora_weights(str(ckpt_dir), weight_name=LORA_FILE)
        except Exception as exc:  # safetensors, peft and diffusers each raise their own types for a bad file
            raise CheckpointError(f"{lora} could not be loaded as a FLUX LoRA: {_one_line(exc)}") from None

        # The engine's profiles, minus its VAE tiling: one ~1024² decode needs none, and on an H100 tiling made the
        # sequential-offload edit 270x slower (0.21 s -> 57 s, tiny checkpoint) and no longer identical.
        if offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        elif offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
        else:
            pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, decision.shared, decision.reason)

    def align(
        self,
        image: Image.Image,
        width: int,
        height: int,
        steps: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Image.Image:
        """The published edit: fixed prompt, guidance 2.5, CPU generator seeded 42, output W×H then resized to W×H
        (Kontext itself renders at its preferred area). ``progress(step, total)`` runs after every step and may
        raise (e.g. :class:`~droplet3d.errors.Cancelled`) to stop."""
        import torch

        for name, value in (("width", width), ("height", height)):
            if value < 1:
                raise InputError(f"{name} must be a positive number of pixels, got {value}", field=name)
        total = steps if steps is not None else _default_steps()
        if total < 1:
            raise InputError(f"steps must be at least 1, got {total}", field="steps")

        def on_step_end(pipe, i, t, tensors):
            if progress is not None:
                progress(i + 1, total)
            return {}

        edited = self.pipe(
            image=image.convert("RGB"),
            prompt=ALIGN_PROMPT,
            guidance_scale=ALIGN_GUIDANCE,
            width=width,
            height=height,
            num_inference_steps=total,
            generator=torch.Generator("cpu").manual_seed(ALIGN_SEED),
            callback_on_step_end=on_step_end,
        ).images[0]
        return edited.resize((width, height))


def _check_flux_folder(flux_dir: Path) -> None:
    index = flux_dir / "model_index.json"
    if not flux_dir.is_dir():
        raise CheckpointError(f"{flux_dir} is missing (expected the unmodified FLUX.1-Kontext-dev diffusers folder)")
    components = _read_json(index, "the FLUX.1-Kontext-dev pipeline index")
    for name, spec in components.items():
        if not name.startswith("_") and isinstance(spec, list) and spec[0] and not (flux_dir / name).is_dir():
            raise CheckpointError(f"{flux_dir / name} is missing (model_index.json lists component {name!r})")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
