"""Checkpoint folders: resolve (local or hub), validate, and load every component by subfolder.

``model_index.json`` class names refer to the authors' private modules, so they are never used: each
component is loaded with the diffusers / transformers class that has the same parameters, the authors' block and
class names mapped onto diffusers' (vocabulary.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError

logger = logging.getLogger(__name__)

KNOWN_HUB_IDS = ("DropletX/Droplet3D-5B", "DropletX/DropletVideo-5B")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DEFAULT_TEXT_LEN = {"droplet3d": 450, "dropletvideo": 400}
TRANSFORMER_WEIGHTS = "diffusion_pytorch_model.safetensors"
CONFIG_FILES = ("transformer/config.json", "scheduler/scheduler_config.json", "vae/config.json",
                "text_encoder/config.json")


@dataclass
class CheckpointInfo:
    """What a validated folder holds, read without loading any weights."""

    path: Path
    ckpt_id: str
    kind: str  # "droplet3d" | "dropletvideo"
    transformer_config: dict
    text_len: int
    config_hash: str
    has_view_align: bool


def resolve_checkpoint(ckpt: str | Path) -> tuple[Path, str]:
    """``(folder, id)`` for a local folder or a hub id (downloaded with huggingface_hub on first use)."""
    text = str(ckpt)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path}: is a file; expected a checkpoint folder")
        return path.resolve(), text
    if not HUB_ID.match(text) or text.startswith((".", "/", "~")):
        raise CheckpointError(f"{path}: no such checkpoint folder (and not a hub id like {KNOWN_HUB_IDS[0]})")
    from huggingface_hub import snapshot_download

    logger.info("fetching %s from the Hugging Face hub (first use; cached afterwards)", text)
    try:
        return Path(snapshot_download(repo_id=text)), text
    except Exception as exc:  # network, auth, unknown repo: all end the same way for the caller
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{text}: cannot fetch from the Hugging Face hub: {first}") from None


def _read_json(path: Path, root: Path, what: str) -> dict:
    rel = path.relative_to(root)
    if not path.is_file():
        raise CheckpointError(f"{root}/{rel}: missing; expected {what}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{root}/{rel}: not valid JSON ({exc}); expected {what}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{root}/{rel}: expected a JSON object with {what}")
    return data


def _require_file(path: Path, root: Path, what: str) -> None:
    if not path.is_file():
        raise CheckpointError(f"{root}/{path.relative_to(root)}: missing; expected {what}")


def _check_shards(folder: Path, root: Path, index_name: str) -> list[Path]:
    index = _read_json(folder / index_name, root, "a safetensors shard index with a weight_map")
    files = sorted(set((index.get("weight_map") or {}).values()))
    if not files:
        raise CheckpointError(f"{root}/{folder.name}/{index_name}: empty weight_map; expected shard file names")
    for name in files:
        _require_file(folder / name, root, f"a weight shard listed in {index_name}")
    return [folder / n for n in files]


def transformer_weight_files(root: Path) -> list[Path]:
    folder = root / "transformer"
    if (folder / f"{TRANSFORMER_WEIGHTS}.index.json").is_file():
        return _check_shards(folder, root, f"{TRANSFORMER_WEIGHTS}.index.json")
    _require_file(folder / TRANSFORMER_WEIGHTS, root, "the transformer weights")
    return [folder / TRANSFORMER_WEIGHTS]


def inspect_checkpoint(root: Path, ckpt_id: str | None = None) -> CheckpointInfo:
    """Validate the folder layout (docs/design.md §7.1) and read its configs; raises a one-line CheckpointError."""
    from safetensors import safe_open

    cfg = _read_json(root / "transformer" / "config.json", root, "the transformer config (CogVideoX-style)")
    for key in ("num_attention_heads", "attention_head_dim", "num_layers", "in_channels"):
        if not isinstance(cfg.get(key), int):
            raise CheckpointError(f"{root}/transformer/config.json: {key!r} missing or not an integer")
    _read_json(root / "scheduler" / "scheduler_config.json", root, "a DDIM scheduler config")
    _read_json(root / "vae" / "config.json", root, "the CogVideoX VAE config")
    _require_file(root / "vae" / TRANSFORMER_WEIGHTS, root, "the VAE weights")
    _read_json(root / "text_encoder" / "config.json", root, "the T5 encoder config")
    te = root / "text_encoder"
    if (te / "model.safetensors.index.json").is_file():
        _check_shards(te, root, "model.safetensors.index.json")
    else:
        _require_file(te / "model.safetensors", root, "T5 weights (model-0000N-of-00002.safetensors + index)")
    _require_file(root / "tokenizer" / "spiece.model", root, "the T5 sentencepiece model")

    has_fps = bool(cfg.get("use_fps_embedding"))
    for file in transformer_weight_files(root):
        try:
            with safe_open(str(file), framework="pt") as f:
                has_fps = has_fps or any(k.startswith("fps_embedding.") for k in f.keys())  # noqa: SIM118
        except Exception as exc:
            raise CheckpointError(f"{file}: unreadable safetensors file ({exc})") from None
    kind = "dropletvideo" if has_fps else "droplet3d"
    cfg["use_fps_embedding"] = has_fps
    digest = hashlib.sha256()
    for rel in CONFIG_FILES:
        digest.update(rel.encode() + b"\0" + (root / rel).read_bytes())
    return CheckpointInfo(
        path=root, ckpt_id=ckpt_id or str(root), kind=kind, transformer_config=cfg,
        text_len=int(cfg.get("text_seq_length") or DEFAULT_TEXT_LEN[kind]), config_hash=digest.hexdigest()[:16],
        has_view_align=(root / "FLUX.1-Kontext-dev").is_dir() and (root / "pytorch_lora_weights.safetensors").is_file(),
    )


def load_transformer(info: CheckpointInfo, dtype: torch.dtype, device: torch.device | str = "cpu"):
    """The Droplet transformer with the reference's tolerant loading (16-channel weights widened with zeros)."""
    from accelerate import init_empty_weights
    from safetensors.torch import load_file

    from .transformer import DropletTransformer3DModel, load_state_tolerant
    from .vocabulary import transformer_model_config

    cfg = transformer_model_config(info.transformer_config, f"{info.path}/transformer/config.json")
    if cfg["in_channels"] != 33:
        logger.warning("%s/transformer/config.json: in_channels %d; building the 33-channel inpaint model "
                       "(16 latent + 1 mask + 16 masked video) and widening the weights", info.path, cfg["in_channels"])
        cfg["in_channels"] = 33
    try:
        with init_empty_weights():
            model = DropletTransformer3DModel(**cfg)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{info.path}/transformer/config.json: {exc}") from None
    state: dict[str, torch.Tensor] = {}
    for file in transformer_weight_files(info.path):
        state.update(load_file(str(file), device=str(device)))
    source = f"{info.path}/transformer"
    why = load_state_tolerant(model, state, source)
    del state
    if why:
        name, reason = next(iter(why.items()))
        more = f" (and {len(why) - 1} more)" if len(why) > 1 else ""
        raise CheckpointError(f"{source}/{TRANSFORMER_WEIGHTS}: tensor {name}: {reason}{more}")
    # nn.Module.to: diffusers' ModelMixin.to warns about fp32 modules even when there are none.
    return torch.nn.Module.to(model, device=device, dtype=dtype).eval()


def load_components(info: CheckpointInfo, dtype: torch.dtype, device: torch.device | str = "cpu") -> dict:
    """Tokenizer, text encoder, VAE, scheduler and transformer, each from its subfolder."""
    from diffusers import AutoencoderKLCogVideoX, DDIMScheduler
    from transformers import T5EncoderModel, T5Tokenizer

    from .vocabulary import vae_block_overrides

    root = info.path

    def guarded(sub: str, load):
        try:
            return load()
        except CheckpointError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{root}/{sub}: cannot load: {first}") from None

    return {
        "tokenizer": guarded("tokenizer", lambda: T5Tokenizer.from_pretrained(root / "tokenizer")),
        "text_encoder": guarded("text_encoder", lambda: T5EncoderModel.from_pretrained(
            root / "text_encoder", dtype=dtype).eval()),
        "vae": guarded("vae", lambda: AutoencoderKLCogVideoX.from_pretrained(
            root / "vae", torch_dtype=dtype, **vae_block_overrides(
                _read_json(root / "vae" / "config.json", root, "the CogVideoX VAE config"), f"{root}/vae/config.json"),
        ).eval()),
        "scheduler": guarded("scheduler", lambda: DDIMScheduler.from_pretrained(root, subfolder="scheduler")),
        "transformer": guarded("transformer", lambda: load_transformer(info, dtype, device)),
    }
