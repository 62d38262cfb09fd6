"""One error shape for every 4xx: ``{"error": {"code", "message", "field"?}}``.

FastAPI's own validation errors and Starlette's 404/405/413 are rewritten into it, so a client
never has to parse two formats.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InputError

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "invalid_params",
    429: "queue_full",
}


class ApiError(Exception):
    """A request the caller can fix; becomes a 4xx JSON error."""

    def __init__(self, status: int, message: str, *, code: str | None = None, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers
        self.code = code or _CODES.get(status, "error")

    @classmethod
    def from_input_error(cls, exc: InputError, status: int = 422, field_prefix: str = "") -> ApiError:
        field = f"{field_prefix}{exc.field}" if exc.field else None
        return cls(status, exc.message, code=exc.code, field=field)


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    detail = {"code": code, "message": message}
    if field is not None:
        detail["field"] = field
    return JSONResponse({"error": detail}, status_code=status, headers=headers)


def field_from_loc(loc: tuple, prefix: str = "") -> str | None:
    """``("body", "params", "width")`` → ``"params.width"``; request sections are dropped."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    return prefix + ".".join(parts) if parts else (prefix.rstrip(".") or None)


def describe_validation_error(exc: ValidationError | RequestValidationError, prefix: str = "") -> ApiError:
    """The first problem of a pydantic error, named by its field (the rest are usually consequences)."""
    first = exc.errors()[0]
    field = field_from_loc(tuple(first.get("loc", ())), prefix)
    msg = first.get("msg", "invalid value").removeprefix("Value error, ")
    if first.get("type") == "missing":
        msg = "is required"
    elif first.get("type") == "extra_forbidden":
        msg = "is not a known field"
    message = f"{field}: {msg}" if field else msg
    count = len(exc.errors())
    if count > 1:
        message += f" (and {count - 1} more problem{'s' if count > 2 else ''})"
    return ApiError(422, message, field=field)


class JsonBodyLimitErrors:
    """Starlette's body-size limiter answers an over-long ``Content-Length`` with a plain-text 413 of its own,
    below the exception handlers; this outermost ASGI layer gives that answer the error shape too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rewriting = False

        async def send_json_413(message: Message) -> None:
            nonlocal rewriting
            if message["type"] == "http.response.start" and message["status"] == 413:
                headers = dict(message.get("headers", []))
                if headers.get(b"content-type", b"").startswith(b"text/plain"):
                    rewriting = True
                    response = error_response(413, "payload_too_large", "the request body is larger than this "
                                              "route accepts (see limits in /v1/health)")
                    await response({"type": "http"}, receive, send)
                    return
            if not rewriting:
                await send(message)

        await self.app(scope, receive, send_json_413)


def install(app: FastAPI) -> None:
    app.add_middleware(JsonBodyLimitErrors)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        return error_response(422, exc.code, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = describe_validation_error(exc)
        return error_response(err.status, err.code, err.message, err.field)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
        if status == 404 and message == "Not Found":
            message = f"no such route: {request.method} {request.url.path}"
        elif status == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(status, _CODES.get(status, "error"), message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # a bug: say so, keep serving
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")
