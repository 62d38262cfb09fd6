"""``droplet3d serve``: the sidecar service on uvicorn."""

from __future__ import annotations

import argparse
import os
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
    p.add_argument("--max-queue", type=int, default=d["max_queue"].default, help="queued jobs before 429")
    p.add_argument("--keep-jobs", type=int, default=d["keep_jobs"].default, help="finished jobs kept on disk")
    p.add_argument("--max-age-hours", type=float, default=None, help="delete finished jobs older than this")
    p.add_argument("--max-disk-gb", type=float, default=None, help="delete the oldest finished jobs above this")
    p.add_argument("--max-upload-mb", type=float, default=d["max_upload_mb"].default, help="request body cap")
    p.add_argument("--max-image-pixels", type=int, default=d["max_image_pixels"].default, help="per image or frame")
    p.add_argument("--max-frames", type=int, default=d["max_frames"].default, help="frames per uploaded frame set")
    p.set_defaults(func=serve)


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
    return Settings(jobs_dir=(args.jobs_dir or default_jobs_dir()).expanduser().resolve(), orbit_ckpt=args.ckpt,
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
    import socket

    import uvicorn

    from .app import create_app

    settings = settings_from_args(args)
    check_checkpoints(settings)
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
