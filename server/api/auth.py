"""Who may call the service.

- With a token: every route but health needs ``Authorization: Bearer <token>`` (constant-time compare).
- Without one the server only binds loopback (the CLI refuses otherwise), and every request must
  also come from a loopback address, name a loopback ``Host`` (so a web page cannot reach us through
  DNS rebinding) and carry no browser ``Origin`` unless that origin was allowed explicitly.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .http_errors import ApiError
from .settings import Settings, is_loopback

_bearer = HTTPBearer(auto_error=False, description="required on every route but /v1/health when the server has a token")


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):  # [::1]:8765
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def check_origin(request: Request, settings: Settings) -> None:
    """The loopback-only rules of a server without a token."""
    if settings.token:
        return
    client = request.client.host if request.client else ""
    if not is_loopback(client):
        raise ApiError(403, "this server only answers loopback clients; start it with --token to serve others")
    if not is_loopback(_host_name(request.headers.get("host", ""))):
        raise ApiError(403, "the Host header must name a loopback address")
    origin = request.headers.get("origin")
    if origin is not None and origin not in settings.allow_origins:
        raise ApiError(403, f"requests from web origin {origin!r} are not allowed (see --allow-origin)")


def guards(settings: Settings):
    """FastAPI dependencies: ``(open_guard, token_guard)`` for health and for everything else."""

    async def open_guard(request: Request) -> None:
        check_origin(request, settings)

    async def token_guard(request: Request,
                          credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        check_origin(request, settings)
        if not settings.token:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), settings.token.encode()):
            raise ApiError(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return open_guard, token_guard
