"""The loaded models. The registry lives in the model process (model_process.py), which loads and uses the
engines one job at a time (engines are not thread-safe) and reports ``describe()``/``device_info()`` for
``/v1/health``.

Two roles, one checkpoint each: ``orbit`` (Droplet3D, ``--ckpt``) and ``video`` (DropletVideo,
``--video-ckpt``). A model loads on the first job that needs it (or at start with ``--preload``)
and stays loaded. A hub id that is not in the local cache is fetched by the engine on that first
load; if that is impossible the job fails with the loader's message and the next job tries again.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

log = logging.getLogger(__name__)

EXPECTED_KIND = {"orbit": "droplet3d", "video": "dropletvideo"}


def checkpoint_present(ckpt: str) -> bool:
    """A local folder that exists, or a hub id whose ``model_index.json`` is in the local cache."""
    if Path(ckpt).expanduser().is_dir():
        return True
    if ckpt.count("/") != 1 or Path(ckpt).expanduser().exists():
        return False
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(ckpt, "model_index.json"), str)
    except Exception:  # an odd id or cache layout means "not present", never an error on the health route
        return False


@dataclass
class _Slot:
    ckpt: str
    engine: Any = None
    loading: bool = False
    error: str | None = None


class EngineRegistry:
    def __init__(self, orbit_ckpt: str, video_ckpt: str, device: str | None, offload: str,
                 compile: bool | None = None, attention_backend: str | None = None, profile: str = "faithful",
                 quantize: str | None = None, vae_tiling: bool = False) -> None:
        self.device, self.offload = device, offload
        # DropletEngine.load options; compiled blocks are warmed up at load (--preload: before the first job).
        self.speed = {"compile": compile, "attention_backend": attention_backend, "profile": profile,
                      "quantize": quantize, "vae_tiling": vae_tiling, "warm_up": True}
        self._slots = {"orbit": _Slot(orbit_ckpt), "video": _Slot(video_ckpt)}
        self._lock = threading.Lock()

    def get(self, role: str):
        """The engine for ``orbit`` or ``video``, loading it first if needed."""
        slot = self._slots[role]
        if slot.engine is not None:
            return slot.engine
        with self._lock:
            slot.loading, slot.error = True, None
        try:
            from ..engine import DropletEngine

            engine = DropletEngine.load(slot.ckpt, device=self.device, offload=self.offload, **self.speed)
            if engine.kind != EXPECTED_KIND[role]:
                engine.close()
                flag = "--ckpt" if role == "orbit" else "--video-ckpt"
                raise CheckpointError(f"{slot.ckpt} is a {engine.kind} checkpoint; {role} jobs need "
                                      f"{EXPECTED_KIND[role]} (give it with {flag})")
        except Exception as exc:
            with self._lock:
                slot.loading, slot.error = False, str(exc) or type(exc).__name__
            raise
        with self._lock:
            slot.engine, slot.loading = engine, False
        log.info("loaded %s model from %s", role, slot.ckpt)
        return engine

    def close(self) -> None:
        for slot in self._slots.values():
            if slot.engine is not None:
                slot.engine.close()
                slot.engine = None

    def describe(self) -> list[dict]:
        out = []
        with self._lock:
            slots = [(role, slot.ckpt, slot.engine, slot.loading, slot.error) for role, slot in self._slots.items()]
        for role, ckpt, engine, loading, error in slots:
            details = None
            if engine is not None:
                try:
                    details = engine.describe()
                except Exception as exc:  # describe() is informational; never fail health over it
                    details = {"error": str(exc)}
            out.append({"role": role, "ckpt": ckpt, "present": checkpoint_present(ckpt), "loaded": engine is not None,
                        "loading": loading, "error": error, "details": details})
        return out

    def device_info(self) -> tuple[str | None, dict | None]:
        """The compute device and, on CUDA, its memory (when torch has been imported)."""
        for slot in self._slots.values():
            if slot.engine is not None:
                try:
                    device = str(slot.engine.describe().get("device"))
                    break
                except Exception:
                    pass
        else:
            device = self.device
        torch = sys.modules.get("torch")
        if torch is None:
            return device, None
        gpu = None
        try:
            return self._torch_device(torch, device)
        except Exception as exc:  # health must answer whatever the driver says
            log.warning("cannot read the device: %s", exc)
            return device, gpu

    @staticmethod
    def _torch_device(torch, device: str | None) -> tuple[str, dict | None]:
        gpu = None
        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            gpu = {"name": torch.cuda.get_device_name(), "memory_total": total, "memory_free": free,
                   "memory_allocated": torch.cuda.memory_allocated(), "memory_reserved": torch.cuda.memory_reserved()}
            device = device or "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = device or "mps"
        return device or "cpu", gpu
