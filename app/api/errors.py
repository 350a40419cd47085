"""One error shape for every 4xx/5xx: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import logging
import sqlite3

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from app import logs
from app.api.responses import JSON
from app.inbox import Unavailable, unavailable

log = logging.getLogger("stacksift.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}
RETRY_AFTER = {"Retry-After": "10"}  # storage trouble: worth a retry, not at once


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def _log(request: Request, status: int, code: str, message: str) -> None:
    logs.refused(status, code, message, request.method, request.url.path)


def as_api_error(exc: Exception) -> ApiError | None:
    """The 4xx/5xx a known exception stands for; None for anything else (a bug: 500).

    Domain errors (bad bodies, keys, queries, cursors, rules) carry ``status`` and
    ``code``; storage trouble (disk full, Redis away) is a 507/503 worth retrying."""
    if isinstance(exc, ApiError):
        return exc
    refusal = unavailable(exc)
    if refusal is not None:
        return ApiError(refusal.status, refusal.code, str(refusal), RETRY_AFTER)
    status, code = getattr(exc, "status", None), getattr(exc, "code", None)
    if isinstance(status, int) and 400 <= status < 600 and isinstance(code, str):
        return ApiError(status, code, str(exc))
    return None


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSON:
    return JSON({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def install(app: FastAPI, domain_errors: tuple[type[Exception], ...]) -> None:
    """``domain_errors`` carry their own ``status`` and ``code`` (bad bodies, keys, queries)."""

    async def _known(request: Request, exc: Exception) -> JSON:
        error = as_api_error(exc)
        if error is None:  # e.g. an sqlite3.OperationalError that is not about storage
            return await _unexpected(request, exc)
        _log(request, error.status, error.code, error.message)
        return error_response(error.status, error.code, error.message, error.headers)

    storage = (Unavailable, sqlite3.OperationalError, redis.ConnectionError, redis.TimeoutError)
    for cls in (ApiError, *domain_errors, *storage):
        app.add_exception_handler(cls, _known)  # type: ignore[arg-type]

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSON:
        code = _HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route for {request.method} {request.url.path}"
        return error_response(exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSON:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return error_response(400, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSON:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error; see the server log")
