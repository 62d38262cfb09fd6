"""Helpers of the api tests: a real ``droplet3d serve`` subprocess on a free 127.0.0.1 port, request builders."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections import deque
from pathlib import Path

import httpx
from PIL import Image

REPO = Path(__file__).resolve().parents[2]

DROPLET3D = str(Path(sys.executable).with_name("droplet3d"))
# Small enough for 2 busy CPU cores: a tiny checkpoint, 64x64, 5 frames, 2 steps.
FAST = {"width": 64, "height": 64, "num_frames": 5, "steps": 2}


class Process:
    """A ``droplet3d`` child process; its output is kept for failure messages."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.lines: deque[str] = deque(maxlen=300)

    def launch(self, cmd: list[str], env: dict, is_ready) -> threading.Event:
        """Start ``cmd``; the event is set once ``is_ready(line)`` is true for a line of its output."""
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     cwd=REPO)
        ready = threading.Event()

        def pump() -> None:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip())
                if is_ready(line):
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        return ready

    def log(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        """SIGKILL, as a crash or a machine that goes away would do."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.kill()


class Server(Process):
    """One ``droplet3d serve`` process."""

    def __init__(self, jobs_dir: Path, *args: str, token: str | None = None, env: dict | None = None) -> None:
        super().__init__()
        self.jobs_dir, self.args, self.token = jobs_dir, args, token
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.url = ""

    def start(self, timeout: float = 60.0) -> Server:
        cmd = [DROPLET3D, "serve", "--port", "0", "--jobs-dir", str(self.jobs_dir), *self.args]
        if self.token:
            cmd += ["--token", self.token]

        def listening(line: str) -> bool:
            if "listening on http://" not in line:
                return False
            self.url = line.split("listening on ", 1)[1].split()[0]
            return True

        ready = self.launch(cmd, self.env, listening)
        if not ready.wait(timeout):
            self.kill()
            raise RuntimeError("server did not start:\n" + self.log())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/v1/health", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server never answered health:\n" + self.log())

    def client(self, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)


def png_bytes(size=(64, 64), color=(200, 60, 40), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def frames_zip(count: int = 5, size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for k in range(count):
            archive.writestr(f"frame_{k}.png", png_bytes(size, (40 * k % 255, 120, 200)))
    return buf.getvalue()


def submit(client: httpx.Client, params: dict, files: list | None = None, image: bytes | None = None) -> httpx.Response:
    """POST /v1/jobs with ``params`` as JSON and, by default for generation modes, a small PNG."""
    if files is None:
        generation = params.get("mode") != "reconstruct"
        files = [("image", ("in.png", image or png_bytes(), "image/png"))] if generation else []
    return client.post("/v1/jobs", data={"params": json.dumps(params)}, files=files or None)


def wait_for(client: httpx.Client, job_id: str, statuses=("succeeded", "failed", "cancelled"), timeout=120.0,
             predicate=None, interval=0.05) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/v1/jobs/{job_id}").json()
        if status["status"] in statuses and (predicate is None or predicate(status)):
            return status
        time.sleep(interval)
    raise AssertionError(f"job {job_id} never reached {statuses}: {status}")


def sse_statuses(client: httpx.Client, job_id: str, timeout: float = 120.0) -> list[dict]:
    """Every ``status`` event of a job's SSE stream, until the server ends it."""
    events, data = [], []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and data:
                events.append(json.loads("\n".join(data)))
                data = []
    return events


def disc_frames(count: int = 9, size: int = 64) -> list[bytes]:
    """A red ball on white seen from ``count`` azimuths: a silhouette the reconstruction can carve."""
    from PIL import ImageDraw

    frames = []
    for k in range(count):
        img = Image.new("RGB", (size, size), (255, 255, 255))
        ImageDraw.Draw(img).ellipse((size * 0.28, size * 0.28, size * 0.72, size * 0.72), fill=(200, 40 + 8 * k, 40))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        frames.append(buf.getvalue())
    return frames


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buf.getvalue()


def mp4_bytes(frames: list[bytes], path) -> bytes:
    import imageio_ffmpeg
    import numpy as np

    pixels = [np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in frames]
    height, width = pixels[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=8, macro_block_size=1,
                                         ffmpeg_log_level="error")
    writer.send(None)
    for frame in pixels:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path.read_bytes()
