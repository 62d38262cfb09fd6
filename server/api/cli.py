"""``droplet3d serve``: the sidecar service on uvicorn."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:
    from ..engine.cli import add_speed_options
    from .settings import DEFAULT_ORBIT_CKPT, DEFAULT_VIDEO_CKPT, Settings, default_jobs_dir

    d = Settings.__dataclass_fields__
    p = commands.add_parser("serve", help="run the HTTP sidecar (job queue over the engine and reconstruction)",
                            description="Serve the v1 HTTP API. Models load on the first job that needs them "
                            "(or at start with --preload) and stay loaded.")
    p.add_argument("--ckpt", default=DEFAULT_ORBIT_CKPT,
                   help=f"Droplet3D checkpoint for orbit jobs: folder or hub id (default {DEFAULT_ORBIT_CKPT}, "
                   "fetched on the first orbit job)")
    p.add_argument("--video-ckpt", default=DEFAULT_VIDEO_CKPT,
                   help=f"DropletVideo checkpoint for video jobs (default {DEFAULT_VIDEO_CKPT}, fetched on first use)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (anything but loopback needs --token)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free one, printed at start)")
    p.add_argument("--jobs-dir", type=Path, default=None, help=f"job folders (default {default_jobs_dir()})")
    p.add_argument("--token", default=None, help="bearer token required on every route but health "
                   "(or set DROPLET3D_TOKEN, or use --token-file)")
    p.add_argument("--token-file", type=Path, default=None, help="read the token from this file")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow this web origin (CORS); none by default")
    p.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: the best available)")
    p.add_argument("--offload", choices=("none", "model", "sequential"), default="none",
                   help="memory profile: model/sequential CPU offload for small GPUs")
    add_speed_options(p)
    p.add_argument("--preload", action="store_true", help="load the orbit model at start instead of on the first job")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--gpus", default=None, metavar="all|0,1,…",
                       help="one model process per listed CUDA device (all: every visible one), each job to the "
                       "first free one")
    scale.add_argument("--workers", type=int, default=None, metavar="N",
                       help="N model processes on --device (default cpu), sharing the CPU cores")
    scale.add_argument("--broker", default=None, metavar="redis://HOST:PORT/DB",
                       help="be the front of a Redis queue served by `droplet3d worker` processes that share "
                       "--jobs-dir (rediss:// for TLS, redis://:PASSWORD@… for a password)")
    p.add_argument("--heartbeat", type=float, default=d["heartbeat_seconds"].default, metavar="S",
                   help="with --broker: a worker silent for S seconds has lost its job (re-queued once)")
    p.add_argument("--max-queue", type=int, default=d["max_queue"].default, help="queued jobs before 429")
    p.add_argument("--keep-jobs", type=int, default=d["keep_jobs"].default, help="finished jobs kept on disk")
    p.add_argument("--max-age-hours", type=float, default=None, help="delete finished jobs older than this")
    p.add_argument("--max-disk-gb", type=float, default=None, help="delete the oldest finished jobs above this")
    p.add_argument("--max-upload-mb", type=float, default=d["max_upload_mb"].default, help="request body cap")
    p.add_argument("--max-image-pixels", type=int, default=d["max_image_pixels"].default, help="per image or frame")
    p.add_argument("--max-frames", type=int, default=d["max_frames"].default, help="frames per uploaded frame set")
    p.set_defaults(func=serve)

    w = commands.add_parser("worker", help="run jobs from a Redis broker (one per GPU, on any machine)",
                            description="Serve the jobs of `droplet3d serve --broker` fronts: keeps its models warm, "
                            "runs one job at a time, reports progress. Listens on nothing.")
    w.add_argument("--broker", required=True, metavar="redis://HOST:PORT/DB", help="the fronts' broker URL")
    w.add_argument("--ckpt", default=DEFAULT_ORBIT_CKPT, help="Droplet3D checkpoint for orbit jobs")
    w.add_argument("--video-ckpt", default=DEFAULT_VIDEO_CKPT, help="DropletVideo checkpoint for video jobs")
    w.add_argument("--jobs-dir", type=Path, default=None,
                   help=f"the fronts' jobs folder, shared (e.g. over NFS) at this path (default {default_jobs_dir()})")
    w.add_argument("--gpu", type=int, default=None, metavar="N", help="run on cuda:N")
    w.add_argument("--device", default=None, help="cuda, cuda:1, mps or cpu (default: the best available)")
    w.add_argument("--name", default=None, help="shown as each job's worker (default HOST-PID)")
    w.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    w.add_argument("--offload", choices=("none", "model", "sequential"), default="none", help="memory profile")
    add_speed_options(w)
    w.add_argument("--preload", action="store_true", help="load the orbit model at start")
    w.add_argument("--heartbeat", type=float, default=d["heartbeat_seconds"].default, metavar="S",
                   help="the fronts' --heartbeat: beat every S/3 seconds")
    w.set_defaults(func=work)


def settings_from_args(args: argparse.Namespace):
    from ..engine.speed import check_profile, check_quantize
    from ..errors import InputError
    from .settings import Settings, default_jobs_dir, is_loopback

    token = args.token or os.environ.get("DROPLET3D_TOKEN") or None
    if args.token_file is not None:
        token = args.token_file.read_text().strip()
    if not is_loopback(args.host) and not token:
        raise InputError(f"refusing to serve {args.host} without a token: give --token (or bind 127.0.0.1)",
                         field="host")
    for name in ("max_queue", "keep_jobs", "max_frames", "max_image_pixels"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1", field=name)
    if args.broker:
        check_broker_url(args.broker)
    workers, threads = worker_devices(args.gpus, args.workers, args.device)
    return Settings(workers=workers, cpu_threads=threads, broker=args.broker, heartbeat_seconds=args.heartbeat,
                    jobs_dir=(args.jobs_dir or default_jobs_dir()).expanduser().resolve(), orbit_ckpt=args.ckpt,
                    video_ckpt=args.video_ckpt, device=args.device, offload=args.offload, compile=args.compile,
                    attention_backend=args.attention_backend, preload=args.preload,
                    profile=check_profile(args.profile), quantize=check_quantize(args.quantize),
                    vae_tiling=args.vae_tiling,
                    token=token, allow_origins=tuple(args.allow_origin), max_queue=args.max_queue,
                    keep_jobs=args.keep_jobs, max_age_hours=args.max_age_hours, max_disk_gb=args.max_disk_gb,
                    max_upload_mb=args.max_upload_mb, max_image_pixels=args.max_image_pixels,
                    max_frames=args.max_frames)


def check_checkpoints(settings) -> None:
    """``droplet3d doctor`` on each configured checkpoint: a broken local folder is refused with one line per
    problem; the verdicts go to ``/v1/health``."""
    import logging

    from ..engine.doctor import verdict
    from ..errors import CheckpointError

    for role, ckpt in (("orbit", settings.orbit_ckpt), ("video", settings.video_ckpt)):
        found = settings.checkpoint_verdicts[role] = verdict(ckpt)
        if found["checked"] and not found["ok"]:
            for line in found["problems"]:
                print(line, file=sys.stderr)
            raise CheckpointError(f"refusing to serve {ckpt}: {len(found['problems'])} problem(s) above "
                                  f"({found['note']})")
        if not found["checked"]:
            logging.getLogger(__name__).info("%s", found["note"])


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app

    settings = settings_from_args(args)
    check_checkpoints(settings)
    if settings.broker:  # fail here, with the reason, rather than after binding the port
        from .queue_redis import connect

        connect(settings.broker).close()
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(create_app(settings), log_level="debug" if args.verbose else "info",
                            timeout_graceful_shutdown=30)
    # The line clients and tests wait for: the port is known even when 0 was asked for.
    print(f"droplet3d serve: listening on http://{host}:{port} (jobs in {settings.jobs_dir})", flush=True)
    sys.stdout.flush()
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def check_broker_url(url: str) -> None:
    from ..errors import InputError

    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise InputError(f"--broker must be a redis://, rediss:// or unix:// URL, not {url!r}", field="broker")


def worker_devices(gpus: str | None, workers: int | None, device: str | None):
    """``(name, device)`` of each model process, and the torch threads each gets when they share the CPU."""
    from ..errors import InputError

    if gpus is not None:
        if gpus == "all":
            import torch

            indices = list(range(torch.cuda.device_count()))
            if not indices:
                raise InputError("--gpus all: no CUDA device is visible", field="gpus")
        else:
            try:
                indices = [int(part) for part in gpus.split(",")]
            except ValueError:
                raise InputError(f"--gpus takes all or device indices like 0,1, not {gpus!r}", field="gpus") from None
            if len(set(indices)) != len(indices) or min(indices) < 0:
                raise InputError(f"--gpus lists each device index once: {gpus!r}", field="gpus")
        return tuple((f"cuda:{i}", f"cuda:{i}") for i in indices), None
    if workers is not None:
        if workers < 1:
            raise InputError("--workers must be at least 1", field="workers")
        device = device or "cpu"
        threads = max(1, (os.cpu_count() or 1) // workers) if device == "cpu" else None
        return tuple((f"{device}-{i}", device) for i in range(workers)), threads
    return (("local", device),), None


def work(args: argparse.Namespace) -> int:
    from ..engine.speed import check_profile, check_quantize
    from .queue_redis_worker import run_worker
    from .settings import Settings, default_jobs_dir

    check_broker_url(args.broker)
    device = f"cuda:{args.gpu}" if args.gpu is not None else args.device
    settings = Settings(jobs_dir=(args.jobs_dir or default_jobs_dir()).expanduser().resolve(), orbit_ckpt=args.ckpt,
                        video_ckpt=args.video_ckpt, device=device, offload=args.offload, compile=args.compile,
                        attention_backend=args.attention_backend, preload=args.preload, cpu_threads=args.threads,
                        profile=check_profile(args.profile), quantize=check_quantize(args.quantize),
                        vae_tiling=args.vae_tiling, broker=args.broker, heartbeat_seconds=args.heartbeat)
    check_checkpoints(settings)
    return run_worker(settings, args.name or f"{socket.gethostname()}-{os.getpid()}")
