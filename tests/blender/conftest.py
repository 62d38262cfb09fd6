"""Fixtures for the add-on tests, which run in real headless Blender (the ``bpy`` wheel).

Blender's user resources (preferences, extensions) go to a fresh temporary folder, set before
``bpy`` is first imported, so an installed extension never leaks between runs or into the user's setup.
"""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PKG = "bl_ext.user_default.droplet_blender"  # where Blender's installer puts the extension
SERVER_PY = REPO / ".venv" / "bin" / "python"
os.environ["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp(prefix="droplet-blender-user-")
atexit.register(shutil.rmtree, os.environ["BLENDER_USER_RESOURCES"], ignore_errors=True)
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def make_job(out: Path, *, frames=8, size=(64, 48), mode="orbit", job_id="fixture", rendered=False) -> Path:
    """A synthetic finished job folder (tests/blender/make_job_fixture.py under the server's venv).

    ``rendered``: replace the flat disc frames by Blender renders of a real object along the same cameras.
    """
    here = REPO / "tests" / "blender"
    cmd = [str(SERVER_PY), str(here / "make_job_fixture.py"), str(out), "--num-frames", str(frames), "--size",
           *map(str, size), "--mode", mode, "--id", job_id]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    if rendered:
        subprocess.run([sys.executable, str(here / "render_job_frames.py"), str(out)], check=True, timeout=300,
                       capture_output=True)
    return out


@pytest.fixture(scope="session")
def orbit_job(tmp_path_factory):
    return make_job(tmp_path_factory.mktemp("jobs") / "droplet-orb1", job_id="orb1")


@pytest.fixture(scope="session")
def video_job(tmp_path_factory):
    return make_job(tmp_path_factory.mktemp("jobs") / "droplet-vid1", frames=6, size=(48, 32), mode="video",
                    job_id="vid1")


@pytest.fixture
def empty_scene():
    """A new empty scene file (preferences and enabled add-ons are kept)."""
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    return bpy.context.scene


@pytest.fixture(scope="session")
def addon(tmp_path_factory):
    """The extension built by scripts/build_extension.py, installed and enabled by Blender's installer.

    Returns the installed package (``bl_ext.user_default.droplet_blender``), not the repository copy.
    """
    import importlib

    import bpy

    sys.path.insert(0, str(REPO / "scripts"))
    import build_extension

    zip_path = build_extension.build(tmp_path_factory.mktemp("dist"))
    result = bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo="user_default",
                                                      enable_on_install=True)
    assert result == {"FINISHED"}
    return importlib.import_module("bl_ext.user_default.droplet_blender")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``droplet3d serve`` with a tiny random checkpoint on a free loopback port (``--port 0``; the URL is read
    back from the line the server prints), in its own process; ``token`` starts it with ``--token``."""

    def __init__(self, ckpt: Path, jobs_dir: Path, log: Path, video_ckpt: Path | None = None,
                 token: str | None = None):
        self.log_path, self.url, self.token = Path(log), "", token
        self.log = open(log, "w")  # noqa: SIM115  (closed in stop())
        video = ["--video-ckpt", str(video_ckpt)] if video_ckpt else []
        auth = ["--token", token] if token else []
        self.proc = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "droplet3d"), "serve", "--ckpt", str(ckpt), *video, *auth, "--port", "0",
             "--jobs-dir", str(jobs_dir)], stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"})
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 90.0) -> None:
        import time
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"droplet3d serve exited with {self.proc.returncode}; see {self.log_path}")
            if not self.url:
                for line in self.log_path.read_text(errors="replace").splitlines():
                    if "listening on http://" in line:
                        self.url = line.split("listening on ", 1)[1].split()[0]
            try:
                if self.url:
                    with urllib.request.urlopen(self.url + "/v1/health", timeout=2) as response:
                        if response.status == 200:
                            return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"droplet3d serve did not answer within {timeout} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _tiny(tmp_path_factory, kind: str) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / kind
    subprocess.run([str(REPO / ".venv" / "bin" / "droplet3d"), "make-tiny-checkpoint", str(out), "--kind", kind],
                   check=True, timeout=300, capture_output=True)
    return out


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    return _tiny(tmp_path_factory, "droplet3d")


@pytest.fixture(scope="session")
def tiny_video_ckpt(tmp_path_factory):
    return _tiny(tmp_path_factory, "dropletvideo")


@pytest.fixture(scope="session")
def live_server(tiny_ckpt, tiny_video_ckpt, tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    server = LiveServer(tiny_ckpt, root / "jobs", root / "serve.log", video_ckpt=tiny_video_ckpt)
    yield server
    server.stop()


TOKEN = "blender-test-token"


@pytest.fixture(scope="session")
def token_server(tiny_ckpt, tmp_path_factory):
    """A second live server that requires a bearer token on every route but health."""
    root = tmp_path_factory.mktemp("token-server")
    server = LiveServer(tiny_ckpt, root / "jobs", root / "serve.log", token=TOKEN)
    yield server
    server.stop()


def module(name: str):
    """A module of the installed extension (not the repository copy)."""
    import importlib

    return importlib.import_module(f"{PKG}.{name}")


@pytest.fixture
def scene(addon, empty_scene):
    """An empty scene with a cube selected and a camera, rendered fast (Cycles, 1 sample)."""
    import bpy

    empty_scene.render.engine = "CYCLES"
    empty_scene.cycles.samples = 1
    mesh = bpy.data.meshes.new("Cube")
    mesh.from_pydata([(x, y, z) for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (0, 1)], [],
                     [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)])
    cube = bpy.data.objects.new("Cube", mesh)
    cube.location = (2.0, 1.0, 0.0)
    empty_scene.collection.objects.link(cube)
    cube.select_set(True)
    bpy.context.view_layer.objects.active = cube
    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    cam.location, cam.rotation_euler = (2.0, -4.0, 0.5), (1.5707963, 0.0, 0.0)
    empty_scene.collection.objects.link(cam)
    empty_scene.camera = cam
    props = empty_scene.droplet
    props.prompt = "A plain grey cube on a white background."
    props.custom_size, props.width, props.height = True, 64, 64
    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.server_url = "http://127.0.0.1:8765"
    wm = bpy.context.window_manager
    wm.droplet_jobs.clear()
    wm.droplet_last_error = wm.droplet_server_status = ""
    return empty_scene
