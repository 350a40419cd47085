"""Structured logs: one JSON object per line, with the request id when there is one.

Log lines name events of interest (start-up, refused requests, processing
failures, dead letters); they never carry event payloads, keys or tokens.
"""

from __future__ import annotations

import contextvars
import logging
import random
import sys
import time
from typing import Any

import orjson

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            out["request_id"] = rid
        for key, value in record.__dict__.items():  # extra={"project_id": ...}
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


# Libraries that log every request at INFO: only their warnings are news, unless the
# operator asked for DEBUG.
CHATTY = ("elastic_transport",)
# Libraries that install their own plain-text handlers unless they find one: their
# records go through the root logger's JSON handler instead.
OWN_HANDLERS = ("uvicorn", "uvicorn.error", "rq.worker", "rq.job", "rq.scheduler")


def configure(level: str) -> None:
    """Every log record of the process (libraries' too) as one JSON line on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings.warn() is a log record, not a loose line
    for name in OWN_HANDLERS:  # uvicorn.access stays off: metrics count requests
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    quiet = logging.DEBUG if level == "DEBUG" else max(logging.WARNING, root.level)
    for name in CHATTY:
        logging.getLogger(name).setLevel(quiet)


_refusals = logging.getLogger("stacksift.api")


def request_id_from(given: str | None) -> str:
    """The client's X-Request-ID when it is sane, else a fresh one."""
    if given and len(given) <= 64 and given.isascii() and given.isprintable():
        return given
    # 128 random bits as uuid4().hex has them, without its getrandom() syscall per
    # request: an id names a request in the logs, it guards nothing.
    return f"{random.getrandbits(128):032x}"


def refused(status: int, code: str, message: str, method: str, path: str) -> None:
    """One line per refused request; messages never echo keys or payloads."""
    _refusals.info(
        "request refused",
        extra={"status": status, "code": code, "reason": message, "method": method, "path": path},
    )


class RequestIds:
    """Pure ASGI middleware: a request id per request (the client's X-Request-ID if it
    sent a sane one), in every log line and echoed in the response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id")
        rid = request_id_from(given.decode("latin-1") if given else None)
        token = request_id.set(rid)
        header = (b"x-request-id", rid.encode())

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
