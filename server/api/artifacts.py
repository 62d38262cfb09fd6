"""A finished job's artifacts: which files are served, their hashes, and ``frames.zip``.

Only names matching :data:`ARTIFACT_RE` are ever listed, and a download is looked up in the
job's recorded list, so a request can never name a path of its own.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from pathlib import Path

ARTIFACT_RE = re.compile(
    r"\A(?:orbit\.mp4|input\.png|aligned\.png|frame0_alpha\.png|mesh\.glb|transforms\.json|manifest\.json"
    r"|frames\.zip|(?:frames|masks)/[0-9]{4,5}\.(?:png|jpg|webp))\Z"
)
CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".webp": "image/webp",
    ".mp4": "video/mp4",
    ".glb": "model/gltf-binary",
    ".json": "application/json",
    ".zip": "application/zip",
}
_CHUNK = 1 << 20


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(os.path.splitext(name)[1], "application/octet-stream")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_frames_zip(job_dir: Path) -> Path | None:
    """Pack ``frames/*`` into ``frames.zip`` (stored: PNGs do not compress). Written under a temporary
    name and renamed, with fixed timestamps so the same frames always give the same bytes."""
    frames = sorted(p for p in (job_dir / "frames").glob("*") if ARTIFACT_RE.match(f"frames/{p.name}"))
    if not frames:
        return None
    target, tmp = job_dir / "frames.zip", job_dir / ".frames.zip.tmp"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        for frame in frames:
            info = zipfile.ZipInfo(f"frames/{frame.name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with open(frame, "rb") as src, archive.open(info, "w") as dst:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
    os.replace(tmp, target)
    return target


def list_artifacts(job_dir: Path) -> list[dict]:
    """``[{name, size, sha256}]`` for every whitelisted regular file in a job folder, sorted by name."""
    found = []
    for path in job_dir.rglob("*"):
        name = path.relative_to(job_dir).as_posix()
        if ARTIFACT_RE.match(name) and path.is_file() and not path.is_symlink():
            found.append({"name": name, "size": path.stat().st_size, "sha256": sha256_file(path)})
    return sorted(found, key=lambda a: a["name"])
