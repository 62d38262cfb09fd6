"""File writes shared by the rooms."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

STAGING_PREFIX = ".staging-"
# In an orbit folder: frame 0's exact cut-out (the input's transparency at the frames' size), when the input had one
FRAME0_ALPHA = "frame0_alpha.png"


def write_json_atomic(path: Path, data: Any, *, indent: int = 2) -> None:
    """Write-then-rename in the same folder, fsynced: readers see the old file or the new one, never a mix."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=indent)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def make_staging(parent: Path) -> Path:
    """A fresh hidden folder in ``parent`` in which files are assembled before being renamed into place (same
    filesystem, so each rename is atomic). A crash leaves it behind under a name :func:`is_staging` recognises."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=parent))


def is_staging(path: Path) -> bool:
    return Path(path).name.startswith(STAGING_PREFIX)
