"""``droplet3d serve`` runs the checkpoint doctor at start-up: a broken local folder is refused, and
``/v1/health`` shows each configured checkpoint's verdict."""

from __future__ import annotations

import os
import shutil
import subprocess

import httpx
from api_helpers import DROPLET3D, Server


def test_serve_refuses_a_broken_local_checkpoint_with_one_line_per_problem(tiny_ckpts, tmp_path):
    bad = shutil.copytree(tiny_ckpts["droplet3d"], tmp_path / "bad")
    (bad / "text_encoder" / "model-00002-of-00002.safetensors").unlink()
    (bad / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x10\x00")
    proc = subprocess.run([DROPLET3D, "serve", "--ckpt", str(bad), "--port", "0", "--jobs-dir", str(tmp_path / "jobs"),
                           "--device", "cpu"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "listening on" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert f"{bad}/text_encoder/model-00002-of-00002.safetensors: missing; model.safetensors.index.json names it " \
           "for" in "\n".join(lines)
    assert any(line.startswith(f"{bad}/vae/diffusion_pytorch_model.safetensors: truncated safetensors header")
               for line in lines)
    assert lines[-1].startswith(f"droplet3d serve: error: refusing to serve {bad}: 2 problem(s) above")


def test_health_shows_each_checkpoints_verdict(tiny_ckpts, tmp_path):
    # The video checkpoint stays the default hub id, which is not downloaded here (HF_HUB_OFFLINE).
    server = Server(tmp_path, "--ckpt", str(tiny_ckpts["droplet3d"]), "--device", "cpu").start()
    try:
        models = {m["role"]: m for m in httpx.get(server.url + "/v1/health", timeout=30).json()["models"]}
    finally:
        server.stop()
    assert models["orbit"]["verdict"] == {"checked": True, "ok": True, "problems": [], "note": None}
    video = models["video"]["verdict"]
    assert video["checked"] is False and video["ok"] is None and "not downloaded yet" in video["note"]
    assert "DropletX/DropletVideo-5B is a hub id not downloaded yet" in server.log()
