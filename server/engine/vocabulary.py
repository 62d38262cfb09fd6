"""The authors' vocabulary and diffusers' for the same classes, both ways.

The authors renamed CogVideoX's classes in their own code: a folder saved by their classes names the VAE
``AutoencoderKLDroplet3D`` with ``Droplet3DDownBlock3D`` / ``Droplet3DUpBlock3D`` blocks (DropletVideo: the same with
``DropletVideo``) and the transformer ``Droplet3DTransformer3DModel``. Same parameters, same maths: loading maps those
names onto diffusers' ``AutoencoderKLCogVideoX`` and our ``DropletTransformer3DModel``; ``make-tiny-checkpoint
--layout authors`` writes them.
"""

from __future__ import annotations

import inspect
import logging
from functools import cache

from ..errors import CheckpointError

logger = logging.getLogger(__name__)

LAYOUTS = ("diffusers", "authors")
PREFIX = {"droplet3d": "Droplet3D", "dropletvideo": "DropletVideo"}
COGVIDEOX_BLOCK = {"down_block_types": "CogVideoXDownBlock3D", "up_block_types": "CogVideoXUpBlock3D"}
AUTHORS_BLOCK = {"down_block_types": "{}DownBlock3D", "up_block_types": "{}UpBlock3D"}
# Keys of the transformer config that only our class reads; the authors' configs do not carry them.
OWN_TRANSFORMER_KEYS = ("use_fps_embedding", "text_seq_length")


def authors_names(kind: str) -> dict[str, str]:
    """Class and block names a folder saved by the authors' ``kind`` classes uses."""
    prefix = PREFIX[kind]
    return {"vae": f"AutoencoderKL{prefix}", "transformer": f"{prefix}Transformer3DModel",
            **{key: pattern.format(prefix) for key, pattern in AUTHORS_BLOCK.items()}}


def _block_aliases(key: str) -> dict[str, str]:
    return {COGVIDEOX_BLOCK[key]: COGVIDEOX_BLOCK[key],
            **{AUTHORS_BLOCK[key].format(prefix): COGVIDEOX_BLOCK[key] for prefix in PREFIX.values()}}


@cache
def _init_keys(cls) -> frozenset[str]:
    return frozenset(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}


def _note_unknown(config: dict, known: frozenset[str], source: str, target: str) -> None:
    unknown = sorted(k for k in config if not k.startswith("_") and k not in known)
    if unknown:
        logger.info("%s: ignoring %s, unknown to %s", source, ", ".join(unknown), target)


def vae_block_overrides(config: dict, source: str) -> dict[str, list[str]]:
    """``down_block_types`` / ``up_block_types`` in diffusers' names (for ``from_pretrained`` overrides); unknown
    config keys are noted in the log. Raises CheckpointError for a block name neither vocabulary has."""
    from diffusers import AutoencoderKLCogVideoX

    _note_unknown(config, _init_keys(AutoencoderKLCogVideoX), source, "AutoencoderKLCogVideoX")
    overrides = {}
    for key in COGVIDEOX_BLOCK:
        if key not in config:
            continue
        aliases = _block_aliases(key)
        names = config[key]
        bad = [n for n in names if n not in aliases] if isinstance(names, list) else [names]
        if bad:
            raise CheckpointError(f"{source}: {key} has {bad[0]!r}; expected one of {', '.join(sorted(aliases))}")
        overrides[key] = [aliases[n] for n in names]
    return overrides


def transformer_model_config(config: dict, source: str) -> dict:
    """The transformer config as ``DropletTransformer3DModel`` takes it; unknown keys are noted and dropped."""
    from .transformer import COGVIDEOX_ARGS, DropletTransformer3DModel

    known = COGVIDEOX_ARGS | _init_keys(DropletTransformer3DModel)
    _note_unknown(config, known, source, "DropletTransformer3DModel")
    return {k: v for k, v in config.items() if k in known}


def vae_config_in(layout: str, config: dict, kind: str) -> dict:
    """A diffusers-saved VAE config rewritten in ``layout``'s vocabulary."""
    if layout == "diffusers":
        return config
    names = authors_names(kind)
    out = {**config, "_class_name": names["vae"]}
    for key in COGVIDEOX_BLOCK:
        out[key] = [names[key]] * len(config[key])
    return out


def transformer_config_in(layout: str, config: dict, kind: str) -> dict:
    """Our transformer's public config in ``layout``'s vocabulary (the authors' omit our own keys)."""
    if layout == "diffusers":
        return {"_class_name": "CogVideoXTransformer3DModel", **config}
    rest = {k: v for k, v in config.items() if k not in OWN_TRANSFORMER_KEYS}
    return {"_class_name": authors_names(kind)["transformer"], **rest}
