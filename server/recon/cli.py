"""``droplet3d`` subcommands of the recon room."""

from __future__ import annotations

import argparse


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register this room's subcommands (filled in as the room is built)."""
