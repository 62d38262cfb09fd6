"""Errors shared by the engine, the reconstruction and the service.

The service maps :class:`InputError` to a 4xx response naming ``field``; anything else raised
inside a job fails that job only.
"""

from __future__ import annotations


class DropletError(Exception):
    """Base class: a failure with a stable machine-readable ``code`` and a one-line message."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class InputError(DropletError, ValueError):
    """Something the caller can fix: a bad image, parameter, frame set or path."""

    code = "invalid_input"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.field = field


class CheckpointError(DropletError):
    """A checkpoint folder or hub id that cannot be used; the message names the file."""

    code = "bad_checkpoint"


class ReconstructionError(DropletError):
    """Frames that were read fine gave no cameras or no mesh. ``code`` names what failed: ``no_foreground``,
    ``foreground_clipped``, ``calibration_failed``, ``empty_reconstruction``. Not the caller's fault, so not an
    :class:`InputError`; in an orbit job it becomes a warning and the generation is kept."""

    code = "reconstruction_failed"


class Cancelled(DropletError):
    """Raised between steps when the caller's cancel check returns true."""

    code = "cancelled"
