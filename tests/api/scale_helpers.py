"""Real processes for the scale-out tests and benchmark: a ``redis-server`` on a free 127.0.0.1 port and
``droplet3d worker`` processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from api_helpers import DROPLET3D, Process

# Short enough for a test to see a killed worker's job come back in seconds; long enough for 2 busy cores.
HEARTBEAT = "3"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """Debian's redis-server, loopback only, no persistence, on a free port; ``password`` sets requirepass."""

    def __init__(self, password: str | None = None) -> None:
        self.port, self.password = free_port(), password
        self.url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server; .ci/run does it)")
        auth = ["--requirepass", self.password] if self.password else []
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", *auth], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith((b"+PONG", b"-NOAUTH")):  # up (and asking for its password)
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Worker(Process):
    """One ``droplet3d worker`` process on the CPU, one torch thread. Killed, its model process notices and stops
    on its own."""

    def __init__(self, broker: str, jobs_dir: Path, ckpt: Path, name: str, *args: str) -> None:
        super().__init__()
        self.broker, self.jobs_dir, self.ckpt, self.name, self.args = broker, jobs_dir, ckpt, name, args

    def start(self, timeout: float = 120.0) -> Worker:
        cmd = [DROPLET3D, "worker", "--broker", self.broker, "--jobs-dir", str(self.jobs_dir), "--ckpt",
               str(self.ckpt), "--device", "cpu", "--threads", "1", "--name", self.name, "--heartbeat", HEARTBEAT,
               *self.args]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        ready = self.launch(cmd, env, lambda line: "Listening on" in line)
        if not ready.wait(timeout):
            self.kill()
            raise RuntimeError(f"worker {self.name} did not start:\n" + self.log())
        return self
