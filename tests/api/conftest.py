"""Fixtures of the api tests: tiny checkpoints made by the real CLI and a shared server using them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from api_helpers import DROPLET3D, Server


@pytest.fixture(scope="session")
def tiny_ckpts(tmp_path_factory) -> dict[str, Path]:
    """A tiny Droplet3D and a tiny DropletVideo checkpoint, made by the real CLI (in parallel)."""
    root = tmp_path_factory.mktemp("ckpts")
    paths = {"droplet3d": root / "droplet3d", "dropletvideo": root / "dropletvideo"}
    procs = [subprocess.Popen([DROPLET3D, "make-tiny-checkpoint", str(path), "--kind", kind], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for kind, path in paths.items()]
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    return paths


@pytest.fixture(scope="session")
def model_server(tiny_ckpts, tmp_path_factory):
    """A server with both tiny checkpoints, shared by the tests that run real jobs."""
    server = Server(tmp_path_factory.mktemp("jobs"), "--ckpt", str(tiny_ckpts["droplet3d"]), "--video-ckpt",
                    str(tiny_ckpts["dropletvideo"]), "--device", "cpu").start()
    yield server
    server.stop()
