"""The model process: one long-lived child process that owns the models and does every job's model work.

Model work is Python-heavy (torch dispatch, diffusers loops, reconstruction) and holds the GIL, so on a thread of
the server it slows every HTTP answer; a crash in native code (segfault, CUDA abort, OOM kill) would take the
server down with it. The worker thread therefore hands each job to this child and relays what it says. The child
is started with "spawn" (no inherited CUDA or lock state) and keeps its EngineRegistry between jobs, so models stay
warm. If it dies, the job it was running fails with the reason and a fresh child starts for the next job.

Messages are tuples over a Pipe:
    parent → child  ("run", mode, params, inputs, job_dir) | ("stop",)
    child → parent  ("state", report)                        models, device, gpu: for /v1/health
                    ("ready",)                               warmed up (torch imported, --preload done)
                    ("progress", stage, step, total, elapsed)
                    ("done", warnings) | ("failed", kind, code, message, field)
A cancel is a shared Event that the child's ``should_cancel`` reads.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from ..errors import Cancelled, DropletError, InputError
from ..threads import limit_cpu_threads
from .engines import EngineRegistry
from .settings import Settings

log = logging.getLogger(__name__)

# Where CPU is short, the HTTP side goes first: model work yields the cores to it (and takes them all when idle).
NICENESS = 10
POLL_SECONDS = 0.05  # how often the relay looks at the job's cancel flag while the child is quiet


class ModelProcessDied(DropletError):
    code = "model_process_died"


def make_registry(settings: Settings) -> EngineRegistry:
    return EngineRegistry(settings.orbit_ckpt, settings.video_ckpt, settings.device, settings.offload,
                          compile=settings.compile, attention_backend=settings.attention_backend,
                          profile=settings.profile, quantize=settings.quantize, vae_tiling=settings.vae_tiling)


class ModelProcess:
    """The parent's handle: used by the worker thread (``start``, ``run``, ``close``) and by health (``health``)."""

    def __init__(self, settings: Settings, name: str = "local") -> None:
        self.settings, self.name = settings, name
        self._ctx = multiprocessing.get_context("spawn")
        self._cancel = self._ctx.Event()
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn = None
        self._report: dict[str, Any] | None = None  # the child's last "state" message
        self._starts = 0

    def start(self) -> None:
        """Start the child and wait until it has warmed up. Worker thread only."""
        parent_end, child_end = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=child_main, args=(child_end, self._cancel, self.settings),
                                       name=f"droplet3d-models-{self.name}", daemon=True)
        self._proc.start()
        child_end.close()  # so that the child's death reads as EOF here
        self._conn, self._starts = parent_end, self._starts + 1
        log.info("model process %s started (pid %s)", self.name, self._proc.pid)
        self._relay(None, lambda: False, "while starting")

    def run(self, mode: str, params: dict[str, Any], inputs: dict[str, str], job_dir: Path,
            progress: Callable[[str, int, int, float], None],
            should_cancel: Callable[[], bool]) -> list[dict[str, str]]:
        """``runner.run_job`` in the child; its exceptions are raised here again. Worker thread only."""
        if self._proc is None:
            self.start()
        self._cancel.clear()
        self._conn.send(("run", mode, params, inputs, str(job_dir)))
        message = self._relay(progress, should_cancel, "while running this job")
        if message[0] == "done":
            return message[1]
        _, kind, code, text, field = message
        if kind == "cancelled":
            raise Cancelled(text)
        if kind == "input":
            raise InputError(text, field=field, code=code)
        raise DropletError(text, code=code)

    def _relay(self, progress, should_cancel: Callable[[], bool], during: str) -> tuple:
        """Pass progress on and keep the state report until the child's next "ready", "done" or "failed"."""
        while True:
            if should_cancel():
                self._cancel.set()
            ready = wait([self._conn, self._proc.sentinel], POLL_SECONDS)
            if self._conn in ready:  # read what the child said before noticing that it exited
                try:
                    message = self._conn.recv()
                except (EOFError, OSError):
                    raise self._died(during) from None
                if message[0] == "state":
                    self._report = message[1]
                elif message[0] == "progress":
                    progress(*message[1:])
                else:
                    return message
            elif ready:
                raise self._died(during)

    def _died(self, during: str) -> ModelProcessDied:
        proc, self._proc = self._proc, None
        self._conn.close()
        proc.join(5)
        code = proc.exitcode
        reason = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        log.error("model process %s (pid %s) exited unexpectedly (%s) %s", self.name, proc.pid, reason, during)
        return ModelProcessDied(f"the model process exited unexpectedly ({reason}) {during}; "
                                "the next job starts a fresh one")

    def health(self) -> dict[str, Any]:
        """Models, device and GPU as the child last reported them (before that, the configured ones), and the child:
        a WorkerInfo of /v1/health but for its name and job."""
        proc, report = self._proc, self._report
        if report is None:
            report = {"models": make_registry(self.settings).describe(), "device": self.settings.device, "gpu": None,
                      "cpu_threads": None}
        alive = proc is not None and proc.is_alive()
        return {**report, "pid": proc.pid if alive else None, "alive": alive, "restarts": max(self._starts - 1, 0)}

    def close(self, timeout: float = 10.0) -> None:
        """Ask the child to free its models and exit; terminate it when it does not in time."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):  # already gone
            self._conn.send(("stop",))
        proc.join(timeout)
        if proc.is_alive():
            log.warning("the model process did not stop in %.0f s: terminated", timeout)
            proc.terminate()
            proc.join(5)
        self._conn.close()


# -- the child ---------------------------------------------------------------------------------------------------------
def pin_cuda_device(device: str | None, environ=os.environ) -> str | None:
    """Before torch loads: ``cuda:N`` makes GPU N the only one this process sees (as ``cuda``), so that every
    library's default device, offload hook and memory figure is that GPU. N counts the GPUs the server was given
    (an existing CUDA_VISIBLE_DEVICES list is indexed, not replaced)."""
    if not device or not device.startswith("cuda:"):
        return device
    index = int(device.split(":", 1)[1])
    visible = [d for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    environ["CUDA_VISIBLE_DEVICES"] = visible[index] if index < len(visible) else str(index)
    return "cuda"


def child_main(conn, cancel, settings: Settings) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the server stops us itself
    os.nice(NICENESS)
    settings = replace(settings, device=pin_cuda_device(settings.device))
    if settings.cpu_threads:  # CPU workers share the cores instead of fighting over them
        limit_cpu_threads(settings.cpu_threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     [model process] %(message)s")
    engines = make_registry(settings)

    def report() -> None:
        device, gpu = engines.device_info()
        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch is not None else None
        conn.send(("state", {"models": engines.describe(), "device": device, "gpu": gpu, "cpu_threads": threads}))

    try:
        from ..engine import DropletEngine  # noqa: F401  (imports torch and diffusers once, before the first job)

        if settings.preload:
            engines.get("orbit")
    except Exception as exc:
        log.warning("model warm-up failed (jobs will retry): %s", exc)
    with contextlib.suppress(EOFError, OSError):  # the server is gone
        serve_jobs(conn, cancel, engines, report)
    engines.close()


def serve_jobs(conn, cancel, engines: EngineRegistry, report: Callable[[], None]) -> None:
    """Run jobs one at a time until told to stop. A job stops at its next step when cancelled, and when our parent
    is gone (SIGKILLed): a lost job may run again elsewhere, and must not write into its folder meanwhile."""
    from .runner import run_job

    parent = os.getppid()

    def should_cancel() -> bool:
        return cancel.is_set() or os.getppid() != parent

    report()
    conn.send(("ready",))
    while True:
        message = conn.recv()
        if message[0] == "stop":
            return
        _, mode, params, inputs, job_dir = message
        stage = None

        def progress(new_stage: str, step: int, total: int, elapsed: float) -> None:
            nonlocal stage
            if new_stage != stage:  # a stage change may follow a model load: refresh what health shows
                stage = new_stage
                report()
            conn.send(("progress", new_stage, step, total, elapsed))

        try:
            warnings = run_job(mode, params, inputs, Path(job_dir), engines, progress=progress,
                               should_cancel=should_cancel)
            outcome = ("done", warnings)
        except Cancelled as exc:
            outcome = ("failed", "cancelled", exc.code, exc.message, None)
        except InputError as exc:
            outcome = ("failed", "input", exc.code, exc.message, exc.field)
        except DropletError as exc:
            outcome = ("failed", "droplet", exc.code, exc.message, None)
        except Exception as exc:  # a bug or a resource failure inside the job: that job fails, the process goes on
            log.exception("job in %s failed", job_dir)
            outcome = ("failed", "internal", "internal_error", f"{type(exc).__name__}: {exc}", None)
        report()
        conn.send(outcome)
