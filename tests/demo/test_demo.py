"""`make demo` as a newcomer runs it: both halves of the product, without weights, and a .blend to open."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BLENDER_PY = REPO / ".venv-blender" / "bin" / "python"


@pytest.mark.timeout(900)
def test_demo_generates_reconstructs_a_rendered_object_and_saves_a_blend_with_rig_and_mesh(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--out", str(out)],
                            capture_output=True, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    for path in (out / "job" / "orbit.mp4", out / "mesh-job" / "mesh.glb", out / "demo.blend"):
        assert str(path) in result.stdout  # the demo says where each result is
    assert (out / "mesh-job" / "mesh.glb").read_bytes()[:4] == b"glTF"
    recon = json.loads((out / "mesh-job" / "manifest.json").read_text())
    assert recon["mesh"]["faces"] <= 5000
    code = ("import bpy, json, sys\n"
            "bpy.ops.wm.open_mainfile(filepath=sys.argv[1])\n"
            "print(json.dumps({c.name: sorted(o.type for o in c.all_objects if o.name.endswith(' Mesh')) + "
            "[len([o for o in c.all_objects if ' Camera ' in o.name])] for c in bpy.data.collections "
            "if c.get('droplet_job') and c.name.count(' ') == 1}))")  # the job collections, not their sub-collections
    opened = subprocess.run([str(BLENDER_PY), "-c", code, str(out / "demo.blend")], capture_output=True, text=True,
                            timeout=300)
    assert opened.returncode == 0, opened.stderr[-3000:]
    jobs = json.loads(opened.stdout.strip().splitlines()[-1])
    assert jobs == {"Droplet job": [17], "Droplet mesh-job": ["MESH", 24]}  # cameras per frame; the mesh
