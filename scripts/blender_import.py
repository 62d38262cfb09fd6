"""Import finished Droplet job folders into a .blend, headless, through the add-on's importer.

    .venv-blender/bin/python scripts/blender_import.py JOB_DIR [JOB_DIR ...] --save out.blend
    blender -b -P scripts/blender_import.py -- JOB_DIR --save out.blend

Each job becomes one collection (orbit rig, cameras, image planes, turntable, and ``mesh.glb`` when the
job has one), side by side along +X. Exit status: 0 on success, 1 when a folder cannot be imported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="blender_import", description=__doc__.splitlines()[0])
    parser.add_argument("jobs", type=Path, nargs="+", help="job folders (with transforms.json)")
    parser.add_argument("--save", type=Path, required=True, help="write the .blend here")
    args = parser.parse_args(argv)
    import bpy

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from droplet_blender import importer
    from droplet_blender.geometry import JobFolderError

    bpy.ops.wm.read_homefile(use_empty=True)
    for index, folder in enumerate(args.jobs):
        try:
            coll = importer.import_job(folder, source={"centre": (3.0 * index, 0.0, 1.0), "size": 2.0})
        except JobFolderError as exc:
            print(f"blender_import: error: {exc}", file=sys.stderr)
            return 1
        meshes = sum(o.type == "MESH" and o.name.endswith(" Mesh") for o in coll.all_objects)
        print(f"blender_import: {folder} → collection {coll.name!r} ({len(coll.all_objects)} objects, "
              f"{'with' if meshes else 'without'} a mesh)")
    args.save.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(args.save.resolve()))
    print(f"blender_import: saved {args.save}")
    return 0


if __name__ == "__main__":
    if Path(sys.argv[0]).name == Path(__file__).name:  # a plain Python with the bpy module
        argv = [a for a in sys.argv[1:] if a != "--"]
    else:  # blender -b -P this.py -- ours
        argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    sys.exit(main(argv))
