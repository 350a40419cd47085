"""A size and time bound on the request bodies of every route but ingest.

FastAPI reads a whole body before a handler runs, so before any token is checked, with
no bound on its size or on how slowly it arrives: 300 MB sent to the settings route
without a token grew a server from 73 to 688 MB (and it stayed there), and a client that
sent headers and then nothing held its connection forever.  The admin, settings, alert
and read routes take small JSON, so this reads the body first, up to ``max_bytes`` and
within the read timeout, and hands it on whole.  (Ingest bodies have their
own limits and deadlines in app.api.ingest.)
"""

from __future__ import annotations

import asyncio
from typing import Any

from app.api.errors import error_response

MAX_BODY_BYTES = 1 << 20


class BodyLimit:
    """Pure ASGI middleware: 413 past ``max_bytes`` (on Content-Length before reading), 408
    when the body has not all arrived ``timeout_s`` after the headers."""

    def __init__(self, app: Any, timeout_s: float, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(scope, receive, send, 413)
            return
        body = bytearray()
        more = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s  # for the whole body, as on ingest routes
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                await self._refuse(scope, receive, send, 408)
                return
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._refuse(scope, receive, send, 413)
                return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return dict(await receive())  # a handler listening for the disconnect
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any, status: int) -> None:
        if status == 413:
            code, message = "payload_too_large", f"request body over {self.max_bytes} bytes"
        else:
            code = "request_timeout"
            message = f"request body not received within {self.timeout_s:g} s"
        # The rest of the body is not read: the connection cannot carry another request.
        response = error_response(status, code, message, {"Connection": "close"})
        await response(scope, receive, send)
