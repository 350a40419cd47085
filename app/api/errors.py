"""One error shape for every 4xx/5xx: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from app.api.responses import JSON

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
    """One line per refused request; messages never echo keys or payloads."""
    log.info(
        "request refused",
        extra={
            "status": status,
            "code": code,
            "reason": message,
            "method": request.method,
            "path": request.url.path,
        },
    )


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSON:
    return JSON({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def install(app: FastAPI, domain_errors: tuple[type[Exception], ...]) -> None:
    """``domain_errors`` carry their own ``status`` and ``code`` (bad bodies, keys, queries)."""

    async def _domain(request: Request, exc: Exception) -> JSON:
        _log(request, getattr(exc, "status", 400), getattr(exc, "code", "bad_request"), str(exc))
        return error_response(
            getattr(exc, "status", 400), getattr(exc, "code", "bad_request"), str(exc)
        )

    for cls in domain_errors:
        app.add_exception_handler(cls, _domain)  # type: ignore[arg-type]

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSON:
        _log(request, exc.status, exc.code, exc.message)
        return error_response(exc.status, exc.code, exc.message, exc.headers)

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
