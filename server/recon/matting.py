"""Learned matting: a salient-object segmentation model through rembg on onnxruntime.

Colour alone cannot separate an object from a background it matches (a panda's black ears on black, white
patches on white); a model trained on object cut-outs can. The model runs through rembg's sessions, which
fetch the weights on first use into rembg's cache (``$REMBG_HOME``, default ``~/.rembg``; ``droplet3d
fetch-models`` fills it for an offline machine) and use CUDA when an onnxruntime build with it is installed
(``pip install onnxruntime-gpu``).

The default is BiRefNet general-lite: MIT licence (code and weights), among the best published scores on
DIS5K and HRSOD for dichotomous segmentation, fine on thin parts, and at about 220 MB a quarter of the full
BiRefNet. Also accepted: ``birefnet-general`` (MIT, ~970 MB, best quality, slowest), ``isnet-general-use``
(Apache-2.0, ~170 MB, weaker on thin parts), ``u2net`` (Apache-2.0, older, blurrier edges) and ``u2netp``
(Apache-2.0, 4.7 MB, its small version: it fills through-holes, a ring's or a torus's). BRIA's RMBG
models are left out: their weights forbid commercial use.

Set ``DROPLET3D_OFFLINE=1`` to never download (then absent weights mean the colour model, with a warning).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import DropletError, InputError
from ..threads import cpu_threads

DEFAULT_MODEL = "birefnet-general-lite"
MODELS = {  # name in rembg → licence of its code and weights
    "birefnet-general-lite": "MIT",
    "birefnet-general": "MIT",
    "isnet-general-use": "Apache-2.0",
    "u2net": "Apache-2.0",
    "u2netp": "Apache-2.0",
}
FETCH_RETRY_SECONDS = 600
log = logging.getLogger(__name__)
_failed_fetches: dict[str, tuple[float, str]] = {}  # model → (when, why) of its last failed fetch in this process


class MattingUnavailable(DropletError):
    """The learned matting model cannot run here (weights absent and not fetchable, or unreadable)."""

    code = "matting_unavailable"


@dataclass
class Matting:
    """A loaded model: ``matting(rgb (N, H, W, 3) uint8) → (N, H, W) uint8`` alpha, 255 = object."""

    model: str
    session: object  # rembg.sessions.BaseSession

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        from PIL import Image

        out = np.empty(rgb.shape[:3], np.uint8)
        for k in range(rgb.shape[0]):
            (matte, *_) = self.session.predict(Image.fromarray(rgb[k]))
            out[k] = np.asarray(matte.convert("L"))
        return out

    @property
    def providers(self) -> list[str]:
        return list(self.session.inner_session.get_providers())


def offline() -> bool:
    return os.environ.get("DROPLET3D_OFFLINE", "").lower() not in ("", "0", "false")


def weights_path(model: str = DEFAULT_MODEL) -> Path | None:
    """Where the model's weights already lie, or None."""
    found = _session_class(model).resolve_existing(f"{model}.onnx")
    return Path(found) if found else None


def fetch_weights(model: str = DEFAULT_MODEL) -> Path:
    """Download the model's weights into rembg's cache (checksum verified) unless present; their path."""
    try:
        return Path(_session_class(model).download_models())
    except Exception as exc:  # network, disk or checksum: pooch and requests raise many kinds
        raise MattingUnavailable(f"cannot fetch the {model} matting weights: {exc}") from exc


def load_matting(model: str = DEFAULT_MODEL, download: bool | None = None) -> Matting:
    """A ready model; fetches the weights first when absent and ``download`` (default: unless offline). A fetch
    that failed is not tried again for FETCH_RETRY_SECONDS: on a machine without a route out, every job of a
    service would otherwise wait on the network first.

    Raises MattingUnavailable when they are absent and may not or cannot be fetched, or do not load.
    """
    download = not offline() if download is None else download
    if weights_path(model) is None:
        if not download:
            raise MattingUnavailable(f"the {model} matting weights are not in {_session_class(model).model_dir()} "
                                     "(run `droplet3d fetch-models` on a machine with network access)")
        failed = _failed_fetches.get(model)
        if failed is not None and time.monotonic() - failed[0] < FETCH_RETRY_SECONDS:
            raise MattingUnavailable(f"{failed[1]} (not tried again for {FETCH_RETRY_SECONDS // 60} min; "
                                     "`droplet3d fetch-models` tries now)")
        try:
            fetch_weights(model)
        except MattingUnavailable as exc:
            _failed_fetches[model] = (time.monotonic(), exc.message)
            raise
    return _load(model, str(weights_path(model)))


@lru_cache(maxsize=2)
def _load(model: str, path: str) -> Matting:
    """One session per model and weights file, kept: a service reconstructs many orbits."""
    import onnxruntime
    from rembg import new_session

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = cpu_threads()
    try:
        session = new_session(model, sess_opts=options)
    except Exception as exc:  # a truncated or foreign file: onnxruntime raises its own error types
        raise MattingUnavailable(f"the {model} matting weights at {path} do not load: {exc}") from exc
    log.info("learned matting: %s on %s", model, ", ".join(session.inner_session.get_providers()))
    return Matting(model, session)


def _session_class(model: str):
    if model not in MODELS:
        raise InputError(f"unknown matting model {model!r}; choose from {', '.join(MODELS)}", field="matting_model")
    from rembg.sessions import sessions

    return sessions[model]
