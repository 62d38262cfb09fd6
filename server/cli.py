"""The ``droplet3d`` command. Each room registers its own subcommands.

Room ``cli`` modules must import cheaply (no torch or diffusers at module level) so that
``droplet3d --help`` stays instant; they import their heavy parts inside the command function.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from .errors import DropletError


def build_parser() -> argparse.ArgumentParser:
    from .api import cli as api_cli
    from .engine import cli as engine_cli
    from .recon import cli as recon_cli

    parser = argparse.ArgumentParser(prog="droplet3d", description="Droplet3D / DropletVideo sidecar for Blender.")
    parser.add_argument("--version", action="version", version=f"droplet3d {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for room in (engine_cli, recon_cli, api_cli):
        room.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except DropletError as exc:
        print(f"droplet3d {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"droplet3d {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
