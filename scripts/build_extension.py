"""Build the installable extension zip with Blender's own builder, then validate it.

This is ``blender --command extension build`` + ``extension validate`` reached through the ``bpy``
module (the bl_pkg add-on ships the same CLI). The repository keeps ``blender_manifest.toml`` at the
top level next to ``droplet_blender/``; an extension wants the manifest beside ``__init__.py``, so
both are staged into a temporary folder first.

    .venv-blender/bin/python scripts/build_extension.py [--out dist/]   → dist/droplet_blender-<version>.zip
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parent.parent


def _blender_extension_cli(args: list[str]) -> int:
    import bpy  # noqa: F401  (puts Blender's bundled add-ons on sys.path)
    from bl_pkg import bl_extension_cli

    return bl_extension_cli.cli_extension_handler(args)


def build(out_dir: Path) -> Path:
    """Build and validate; returns the zip path. Raises ``RuntimeError`` when Blender rejects it."""
    manifest = tomllib.loads((REPO / "blender_manifest.toml").read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_path = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / manifest["id"]
        shutil.copytree(REPO / "droplet_blender", stage, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copy2(REPO / "blender_manifest.toml", stage / "blender_manifest.toml")
        zip_path.unlink(missing_ok=True)
        if _blender_extension_cli(["build", "--source-dir", str(stage), "--output-filepath", str(zip_path)]) != 0:
            raise RuntimeError("Blender's extension build failed (see the messages above)")
    if _blender_extension_cli(["validate", str(zip_path)]) != 0:
        raise RuntimeError(f"Blender's extension validator rejected {zip_path}")
    return zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="output folder (default: dist/)")
    args = parser.parse_args(argv)
    try:
        path = build(args.out)
    except RuntimeError as exc:
        print(f"build_extension: error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
