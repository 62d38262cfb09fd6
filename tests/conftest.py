"""Shared by every test folder. Imported by both the server venv and Blender's venv: stdlib only."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
