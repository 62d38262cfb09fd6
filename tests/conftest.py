"""Shared by every test folder. Imported by both the server venv and Blender's venv: stdlib only."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Tests never download weights, and never pick up a developer's real matting model (slow on a CPU): the learned
# matting path is tested with tiny ONNX models that tests/recon/test_matting.py builds.
os.environ["DROPLET3D_OFFLINE"] = "1"
os.environ["REMBG_HOME"] = str(REPO / ".cache" / "rembg-tests")
