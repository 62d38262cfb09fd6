"""``droplet3d doctor``: check a checkpoint folder from its configs and safetensors headers alone.

Nothing here reads a tensor. Shapes are checked against models built from the configs on PyTorch's meta device
(no memory, no data), so the doctor agrees with what the engine would build. Every problem is one line that names
the file and what was expected; ``droplet3d serve`` refuses a local folder with any.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .align import FLUX_DIR, LORA_FILE, T5_TIED_ALIAS
from .checkpoint import DEFAULT_TEXT_LEN, TRANSFORMER_WEIGHTS

GB = 1e9
BF16 = 2  # bytes per parameter as the engine runs on a GPU
# Each model's default request (engine.DEFAULTS), at which the memory is estimated.
DEFAULT_SIZE = {"droplet3d": (512, 512, 85), "dropletvideo": (672, 384, 85)}
# Activation estimates, calibrated on docs/benchmarks.md (H100, Droplet3D 512x512x85, bf16, CFG batch 2; weights
# 11.1 GB transformer + 9.5 GB T5 + 0.4 GB VAE):
# - a transformer step peaks 3.7 GB above its weights (14.8 GB measured): ~13 live hidden-state tensors of
#   2 x (text + 22,528 video tokens) x 3072 in bf16;
# - the resident profile peaks at 33.1 GB, 12.0 GB above all weights: taken as the VAE decode of 2 latent frames
#   (8 pixel frames) at the widest VAE width, ~5.6 such tensors of H x W x 8 x 512.
# They reproduce the measured profiles: none 33.1 GB, model 15.3 GB (measured; the estimate says 14.8),
# sequential 4.1 GB (estimate 3.9: the largest block plus the step's activations, VAE tiled).
HIDDEN_TENSORS = 13.0
VAE_TENSORS = 5.6
VAE_DECODE_FRAMES = 8
SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                      "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
MAX_LINES_PER_FILE = 5


@dataclass
class Component:
    files: list[str]
    parameters: int = 0
    dtypes: list[str] = field(default_factory=list)
    bytes_on_disk: int = 0


@dataclass
class Diagnosis:
    path: str
    model: str | None = None  # "droplet3d" | "dropletvideo"
    rotary: bool | None = None
    text_len: int | None = None
    fps_path: bool | None = None
    components: dict[str, Component] = field(default_factory=dict)
    view_align: dict = field(default_factory=dict)  # possible, reason
    t5_sharing: dict = field(default_factory=dict)  # shared (true/false/null), reason
    memory_bytes: dict[str, int] = field(default_factory=dict)  # estimated peak GPU memory per --offload profile
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict:
        return {"ok": self.ok, **asdict(self)}

    def text(self) -> str:
        """The human report: a summary, then one line per problem."""
        lines = [f"checkpoint {self.path}"]
        if self.model:
            lines.append(f"  model      {self.model} (rotary {'on' if self.rotary else 'off'}, text length "
                         f"{self.text_len}, FPS path {'yes' if self.fps_path else 'no'})")
        for name, comp in self.components.items():
            params = f"{comp.parameters:,} parameters, {'/'.join(comp.dtypes) or '-'}, " if comp.parameters else ""
            lines.append(f"  {name:<13}{params}{_size(comp.bytes_on_disk)} on disk in {len(comp.files)} "
                         f"file{'s' * (len(comp.files) != 1)}")
        if self.view_align:
            lines.append(f"  view align {'possible' if self.view_align['possible'] else 'not possible'}: "
                         f"{self.view_align['reason']}")
        if self.t5_sharing:
            verdict = {True: "shared", False: "not shared", None: "undecided"}[self.t5_sharing["shared"]]
            lines.append(f"  T5 sharing {verdict}: {self.t5_sharing['reason']}")
        if self.memory_bytes:
            profiles = ", ".join(f"{k} {_size(v)}" for k, v in self.memory_bytes.items())
            lines.append(f"  GPU memory --offload {profiles} (estimated: bf16, the model's default size)")
        lines += [f"  note: {n}" for n in self.notes]
        lines.append("OK" if self.ok else f"{len(self.problems)} problem{'s' * (len(self.problems) != 1)}:")
        lines += self.problems
        return "\n".join(lines)


def _size(n: float) -> str:
    for unit, scale in (("GB", GB), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


class _Folder:
    """Problem collection with paths printed relative to the checkpoint (``vae/config.json``)."""

    def __init__(self, root: Path, diagnosis: Diagnosis) -> None:
        self.root, self.d = root, diagnosis

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)

    def problem(self, path: Path, text: str) -> None:
        self.d.problems.append(f"{self.root}/{self.rel(path)}: {text}")

    def json(self, path: Path, expected: str) -> dict | None:
        if not path.is_file():
            self.problem(path, f"missing; expected {expected}")
            return None
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            self.problem(path, f"not valid JSON ({exc}); expected {expected}")
            return None
        if not isinstance(data, dict):
            self.problem(path, f"not a JSON object; expected {expected}")
            return None
        return data

    def header(self, path: Path) -> dict[str, tuple[str, list[int]]] | None:
        """``{name: (dtype, shape)}`` from a safetensors header, or None after noting why it cannot be read."""
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                self.problem(path, f"truncated safetensors header: the file has {size} bytes; expected an 8-byte "
                             "header length first")
                return None
            length = struct.unpack("<Q", head)[0]
            if length > size - 8:
                self.problem(path, f"truncated safetensors header: it declares {length} bytes, the file has "
                             f"{size - 8} after the length")
                return None
            raw = f.read(length)
        try:
            header = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            self.problem(path, "unreadable safetensors header: not JSON; expected a safetensors file")
            return None
        header.pop("__metadata__", None)
        tensors, end = {}, 0
        for name, entry in header.items():
            try:
                dtype, shape, (start, stop) = entry["dtype"], list(entry["shape"]), entry["data_offsets"]
            except (KeyError, TypeError, ValueError):
                self.problem(path, f"safetensors header entry {name!r} is malformed; expected dtype, shape, "
                             "data_offsets")
                return None
            if stop - start != math.prod(shape) * SAFETENSORS_DTYPES.get(dtype, 0) and dtype in SAFETENSORS_DTYPES:
                self.problem(path, f"tensor {name}: {stop - start} bytes for shape {tuple(shape)} {dtype}")
                return None
            tensors[name], end = (dtype, shape), max(end, stop)
        if end > size - 8 - length:
            self.problem(path, f"truncated: the header places tensor data up to byte {end}, the file holds "
                         f"{size - 8 - length} bytes of data")
            return None
        return tensors

    def weights(self, name: str, folder: Path, single: str, index_name: str, expected: str) -> dict | None:
        """Headers of one component's weights (a single file, or an index and its shards), recorded in components."""
        index_path = folder / index_name
        if index_path.is_file():
            index = self.json(index_path, "a safetensors shard index with a weight_map")
            weight_map = (index or {}).get("weight_map")
            if index is not None and (not isinstance(weight_map, dict) or not weight_map):
                self.problem(index_path, "empty or missing weight_map; expected tensor → shard file names")
            if not isinstance(weight_map, dict) or not weight_map:
                return None
            files = [folder / f for f in sorted(set(weight_map.values()))]
        elif (folder / single).is_file():
            weight_map, files = None, [folder / single]
        else:
            self.problem(folder / single, f"missing; expected {expected} (or {index_name} and its shards)")
            return None
        tensors, broken = {}, False
        for file in files:
            if not file.is_file():
                listed = sum(1 for f in weight_map.values() if folder / f == file)
                self.problem(file, f"missing; {index_name} names it for {listed} tensors")
                broken = True
                continue
            header = self.header(file)
            if header is None:
                broken = True
                continue
            if weight_map is not None:
                absent = [t for t, f in weight_map.items() if folder / f == file and t not in header]
                if absent:
                    self.problem(file, f"lacks {len(absent)} tensors that {index_name} places in it, e.g. {absent[0]}")
                    broken = True
            tensors.update(header)
        self.d.components[name] = Component(
            files=[self.rel(f) for f in files], parameters=sum(math.prod(s) for _, s in tensors.values()),
            dtypes=sorted({d for d, _ in tensors.values()}),
            bytes_on_disk=sum(f.stat().st_size for f in files if f.is_file()),
        )
        return None if broken else tensors

    def compare(self, file: Path, stored: dict, model_shapes: dict[str, tuple], config: str,
                tolerate=lambda name, have, want: None) -> None:
        """Shapes in ``stored`` against the model built from ``config``; at most a few lines per file."""
        lines = []
        for name, want in model_shapes.items():
            if name not in stored:
                lines.append(f"tensor {name} missing; {config} implies shape {want}")
                continue
            have = tuple(stored[name][1])
            if have != want:
                note = tolerate(name, have, want)
                if note is None:
                    lines.append(f"tensor {name} has shape {have}; {config} implies {want}")
                else:
                    self.d.notes.append(note)
        extra = sorted(set(stored) - set(model_shapes))
        if extra:
            self.d.notes.append(f"{self.rel(file)}: {len(extra)} tensors the model does not have are ignored "
                                f"(e.g. {extra[0]})")
        for line in lines[:MAX_LINES_PER_FILE]:
            self.problem(file, line)
        if len(lines) > MAX_LINES_PER_FILE:
            self.problem(file, f"{len(lines) - MAX_LINES_PER_FILE} more tensors contradict {config}")


def diagnose(path: str | Path) -> Diagnosis:
    """Check the folder; never raises for what is in it (problems are collected), never reads a tensor."""
    root = Path(path).expanduser()
    d = Diagnosis(path=str(root))
    if not root.is_dir():
        d.problems.append(f"{root}: {'is a file' if root.exists() else 'no such folder'}; expected a checkpoint "
                          "folder")
        return d
    root = root.resolve()
    d.path = str(root)
    f = _Folder(root, d)
    tr_cfg = f.json(root / "transformer" / "config.json", "the transformer config (CogVideoX-style)")
    vae_cfg = f.json(root / "vae" / "config.json", "the CogVideoX VAE config")
    te_cfg = f.json(root / "text_encoder" / "config.json", "the T5 encoder config")
    f.json(root / "scheduler" / "scheduler_config.json", "a DDIM scheduler config")
    if not (root / "tokenizer" / "spiece.model").is_file():
        f.problem(root / "tokenizer" / "spiece.model", "missing; expected the T5 sentencepiece model")
    tr = f.weights("transformer", root / "transformer", TRANSFORMER_WEIGHTS, f"{TRANSFORMER_WEIGHTS}.index.json",
                   "the transformer weights")
    vae = f.weights("vae", root / "vae", TRANSFORMER_WEIGHTS, f"{TRANSFORMER_WEIGHTS}.index.json", "the VAE weights")
    te = f.weights("text_encoder", root / "text_encoder", "model.safetensors", "model.safetensors.index.json",
                   "the T5 encoder weights")

    if tr_cfg is not None and not _describe_model(f, tr_cfg, tr):
        tr_cfg = None
    _check_shapes(f, tr_cfg, tr, vae_cfg, vae, te_cfg, te)
    _view_align(f, te is not None)
    if d.model and "transformer" in d.components and not d.problems:
        d.memory_bytes = estimate_memory(d, tr_cfg, vae_cfg, tr)
    return d


def _describe_model(f: _Folder, cfg: dict, tensors: dict | None) -> bool:
    """Which model the folder is; False when the config lacks what any CogVideoX transformer needs."""
    d = f.d
    bad = [key for key in ("num_attention_heads", "attention_head_dim", "num_layers", "in_channels", "patch_size")
           if not isinstance(cfg.get(key), int) or isinstance(cfg.get(key), bool)]
    for key in bad:
        f.problem(f.root / "transformer" / "config.json", f"{key!r} missing or not an integer")
    has_fps = bool(cfg.get("use_fps_embedding")) or any(k.startswith("fps_embedding.") for k in tensors or {})
    d.model = "dropletvideo" if has_fps else "droplet3d"
    d.fps_path = has_fps
    d.rotary = bool(cfg.get("use_rotary_positional_embeddings"))
    d.text_len = int(cfg.get("text_seq_length") or DEFAULT_TEXT_LEN[d.model])
    return not bad


def _check_shapes(f: _Folder, tr_cfg, tr, vae_cfg, vae, te_cfg, te) -> None:
    """Each component's header shapes against the model its config builds (meta device: no memory)."""
    import torch

    from ..errors import CheckpointError
    from .transformer import DropletTransformer3DModel
    from .vocabulary import transformer_model_config, vae_block_overrides

    root = f.root
    if tr_cfg is not None and tr is not None:
        cfg = transformer_model_config(tr_cfg, "transformer/config.json")
        cfg["use_fps_embedding"] = f.d.fps_path
        try:
            with torch.device("meta"):
                model = DropletTransformer3DModel(**cfg)
        except (TypeError, ValueError) as exc:
            f.problem(root / "transformer" / "config.json", f"cannot build the transformer: {exc}")
        else:
            if cfg["in_channels"] != 33:
                f.d.notes.append(f"transformer/config.json: in_channels {cfg['in_channels']}; the engine builds the "
                                 "33-channel inpaint model and widens the patch embedding with zeros")

            def narrower(name, have, want):
                if name == "patch_embed.proj.weight" and have[1] < want[1] and have[0] == want[0]:
                    return f"{name} has {have[1]} input channels; the engine widens it to {want[1]} with zeros"
                return None

            f.compare(_weights_file(f, "transformer"), tr, _shapes(model), "transformer/config.json", narrower)
    if vae_cfg is not None and vae is not None:
        from diffusers import AutoencoderKLCogVideoX

        try:
            overrides = vae_block_overrides(vae_cfg, "vae/config.json")
            config = {k: v for k, v in vae_cfg.items() if not k.startswith("_")} | overrides
            with torch.device("meta"):
                model = AutoencoderKLCogVideoX.from_config(config)
        except CheckpointError as exc:
            f.d.problems.append(f"{root}/{exc}")
        except (TypeError, ValueError) as exc:
            f.problem(root / "vae" / "config.json", f"cannot build AutoencoderKLCogVideoX: {exc}")
        else:
            f.compare(_weights_file(f, "vae"), vae, _shapes(model), "vae/config.json")
    if te_cfg is not None and te is not None:
        from transformers import T5Config, T5EncoderModel

        try:
            with torch.device("meta"):
                model = T5EncoderModel(T5Config(**{k: v for k, v in te_cfg.items() if not k.startswith("_")}))
        except (TypeError, ValueError) as exc:
            f.problem(root / "text_encoder" / "config.json", f"cannot build T5EncoderModel: {exc}")
        else:
            alias, canonical = T5_TIED_ALIAS
            stored = dict(te)
            if alias in stored:
                stored.setdefault(canonical, stored.pop(alias))
            shapes = {k: v for k, v in _shapes(model).items() if k != alias}
            f.compare(_weights_file(f, "text_encoder"), stored, shapes, "text_encoder/config.json")


def _weights_file(f: _Folder, name: str) -> Path:
    """The file a component's shape problems are reported against: its one weight file, or its shard index."""
    files = f.d.components[name].files
    if len(files) == 1:
        return f.root / files[0]
    index = "model.safetensors.index.json" if name == "text_encoder" else f"{TRANSFORMER_WEIGHTS}.index.json"
    return f.root / name / index


def _shapes(model) -> dict[str, tuple]:
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _view_align(f: _Folder, droplet_t5_ok: bool) -> None:
    from ..errors import CheckpointError
    from .align import _check_flux_folder, compare_text_encoders

    root, d = f.root, f.d
    flux, lora = root / FLUX_DIR, root / LORA_FILE
    if not flux.exists() and not lora.exists():
        d.view_align = {"possible": False, "reason": f"no {FLUX_DIR} folder and no {LORA_FILE}"}
        return
    problems_before = len(d.problems)
    if not flux.is_dir():
        f.problem(flux, f"missing; {LORA_FILE} is here, view alignment needs the FLUX.1-Kontext-dev folder too")
    else:
        try:
            _check_flux_folder(flux)
        except CheckpointError as exc:
            d.problems.append(str(exc))
    if not lora.is_file():
        f.problem(lora, f"missing; {FLUX_DIR} is here, view alignment needs the LoRA too")
    elif (header := f.header(lora)) is not None and not header:
        f.problem(lora, "holds no tensors; expected the view-alignment LoRA")
    if len(d.problems) > problems_before:
        d.view_align = {"possible": False, "reason": "see the problems below"}
        return
    d.view_align = {"possible": True, "reason": f"{FLUX_DIR} and {LORA_FILE} present"}
    for name, files in (("flux_kontext", sorted(flux.rglob("*.safetensors"))), ("lora", [lora])):
        headers = [f.header(file) for file in files]
        tensors = [shape for h in headers if h for _, shape in h.values()]
        d.components[name] = Component(
            files=[f.rel(file) for file in files], parameters=sum(math.prod(s) for s in tensors),
            dtypes=sorted({dtype for h in headers if h for dtype, _ in h.values()}),
            bytes_on_disk=sum(file.stat().st_size for file in files))
    flux_t5 = flux / "text_encoder_2"
    if droplet_t5_ok and flux_t5.is_dir():
        try:
            decision = compare_text_encoders(root / "text_encoder", flux_t5, None, read_tensors=False)
            d.t5_sharing = {"shared": decision.shared, "reason": decision.reason}
        except CheckpointError as exc:
            d.problems.append(str(exc))


def estimate_memory(d: Diagnosis, tr_cfg: dict, vae_cfg: dict | None, tr: dict | None) -> dict[str, int]:
    """Peak GPU bytes per ``--offload`` profile at the model's default size, bf16 (see the calibration above)."""
    width, height, frames = DEFAULT_SIZE[d.model]
    weights = {name: c.parameters * BF16 for name, c in d.components.items()}
    if "flux_kontext" in weights:
        t5 = weights["text_encoder"] if d.t5_sharing.get("shared") else 0
        d.notes.append(f"view alignment (loaded on first use) adds about "
                       f"{_size(weights['flux_kontext'] + weights['lora'] - t5)} of FLUX weights to the resident "
                       "profile")
    inner = tr_cfg["num_attention_heads"] * tr_cfg["attention_head_dim"]
    p = tr_cfg.get("patch_size") or 2
    tokens = d.text_len + ((frames - 1) // 4 + 1) * (height // 8 // p) * (width // 8 // p)
    step = HIDDEN_TENSORS * 2 * tokens * inner * BF16
    vae_width = max((vae_cfg or {}).get("block_out_channels") or [512])
    decode = VAE_TENSORS * width * height * VAE_DECODE_FRAMES * vae_width * BF16
    blocks: dict[str, int] = {}
    for name, (_, shape) in (tr or {}).items():
        if m := re.match(r"transformer_blocks\.(\d+)\.", name):
            blocks[m[1]] = blocks.get(m[1], 0) + math.prod(shape) * BF16
    largest_block = max(blocks.values(), default=weights.get("transformer", 0))
    w_tr, w_te, w_vae = (weights.get(k, 0) for k in ("transformer", "text_encoder", "vae"))
    return {
        "none": round(w_tr + w_te + w_vae + max(step, decode)),
        "model": round(max(w_tr + step, w_te, w_vae + decode)),
        "sequential": round(largest_block + step),
    }


def verdict(ckpt: str) -> dict:
    """The doctor's verdict on a configured checkpoint, for ``droplet3d serve`` and ``/v1/health``.

    A local folder is diagnosed (``checked``); so is a hub id already in the local Hugging Face cache. A hub id not
    downloaded yet is skipped with a note (the engine fetches it on first use, and the loader checks it then), and
    so is a path with nothing there yet (jobs that need it fail with the loader's message until it exists).
    """
    from .checkpoint import HUB_ID

    path = Path(ckpt).expanduser()
    if not path.exists() and not (HUB_ID.match(ckpt) and not ckpt.startswith((".", "/", "~"))):
        return {"checked": False, "ok": False, "problems": [f"{path}: no such folder; expected a checkpoint folder"],
                "note": f"nothing at {path} yet: jobs that need it fail until it exists"}
    if not path.exists():
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(repo_id=ckpt, local_files_only=True))
        except Exception:  # not in the cache (or no usable cache): nothing on disk to check yet
            return {"checked": False, "ok": None, "problems": [],
                    "note": f"{ckpt} is a hub id not downloaded yet; checked when the engine fetches it"}
    report = diagnose(path)
    return {"checked": True, "ok": report.ok, "problems": report.problems,
            "note": None if report.ok else f"droplet3d doctor {path} gives the full report"}
