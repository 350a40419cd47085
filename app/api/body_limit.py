"""Request bodies: a size and a time bound, for the ingest routes and every other one.

``read_body`` is the one way a body is read: refused past a size limit and past a
deadline after the headers.  The ingest front (app.api.ingest) calls it with its own
limits.  :class:`BodyLimit` applies it to every other route (admin, settings, alert
rules), whose bodies are small JSON: FastAPI reads a whole body before a handler runs,
so before any token is checked, with no bound on its size or on how slowly it arrives;
300 MB sent to the settings route without a token grew a server from 73 to 688 MB (and
it stayed there), and a client that sent headers and then nothing held its connection
forever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from app import metrics
from app.api.errors import ApiError, as_api_error, error_response
from app.decompress import PayloadTooLarge

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

MAX_BODY_BYTES = 1 << 20


class BodyLimit:
    """Pure ASGI middleware: reads the body with :func:`read_body` (at most ``max_bytes``,
    within ``timeout_s`` of the headers) and hands it on whole."""

    def __init__(self, app: Any, timeout_s: float, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._deadlines = BodyDeadlines(timeout_s)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = await read_body(receive, headers, self.max_bytes, None, self._deadlines)
        except ClientGone:
            return
        except (PayloadTooLarge, ApiError) as exc:
            error = as_api_error(exc)
            assert error is not None
            # The rest of the body is not read: the connection cannot carry another request.
            extra = {**(error.headers or {}), "Connection": "close"}
            await error_response(error.status, error.code, error.message, extra)(
                scope, receive, send
            )
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return dict(await receive())  # a handler listening for the disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class ClientGone(Exception):
    """The client disconnected before its body arrived: nothing to answer."""


class BodyDeadlines:
    """When each body read in flight must be over, enforced by one timer for all of them.

    A body that has not all arrived ``STACKSIFT_READ_TIMEOUT_SECONDS`` after its headers
    is answered 408, the first ``receive()`` included: a client that sends its headers
    and then nothing, or trickles its body, would otherwise hold a request forever.
    A timer per request (``asyncio.timeout``) costs about 5 us, some 7 % of an ingest
    request; entering a dict costs a tenth of that, and a sweep a few times per timeout
    cancels the late reads, so the 408 comes at most a quarter of the timeout late.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.pending: dict[asyncio.Task[Any], float] = {}
        self.expired: set[asyncio.Task[Any]] = set()
        self._sweeping: asyncio.AbstractEventLoop | None = None  # the loop with a sweep due

    def start(self, task: asyncio.Task[Any]) -> None:
        self.pending[task] = time.monotonic() + self.timeout
        loop = asyncio.get_running_loop()
        if self._sweeping is not loop:
            self._sweeping = loop
            loop.call_later(min(1.0, self.timeout / 4), self._sweep)

    def _sweep(self) -> None:
        now = time.monotonic()
        late = [task for task, deadline in self.pending.items() if deadline <= now]
        for task in late:
            del self.pending[task]
            self.expired.add(task)
            task.cancel()
        if self.pending and self._sweeping is not None:
            self._sweeping.call_later(min(1.0, self.timeout / 4), self._sweep)
        else:
            self._sweeping = None


async def read_body(
    receive: Receive,
    headers: dict[str, str],
    limit: int,
    endpoint: str | None,
    deadlines: BodyDeadlines,
) -> bytes:
    """The raw body, refused as soon as it passes ``limit`` bytes (413, on Content-Length
    before reading; no unbounded buffering) or when it has not all arrived
    ``deadlines.timeout`` seconds after the headers (408).  ``ClientGone`` when the
    client disconnected first."""
    length = headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    task = asyncio.current_task()
    assert task is not None
    deadlines.start(task)
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body is larger than {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
    except asyncio.CancelledError:
        if task not in deadlines.expired:
            raise  # cancelled by someone else (shutdown): not ours to answer
        deadlines.expired.discard(task)
        task.uncancel()
        raise ApiError(
            408,
            "request_timeout",
            f"the request body did not arrive within {deadlines.timeout:g} s",
            {"Connection": "close"},
        ) from None
    finally:
        deadlines.pending.pop(task, None)
    if endpoint is not None:  # ingest routes: bytes in, by endpoint
        metrics.BYTES_IN.labels(endpoint).inc(size)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
