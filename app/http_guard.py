"""Slow and oversized request heads; one write per response.

uvicorn bounds neither how long a client may take to send a request's headers nor how
large they are: a connection that sends nothing, or half a header, is held forever, and
httptools buffers a header line or URL of any length (a 200 MB header line took 280 MB
of server memory).  The protocol below closes a head not complete within
STACKSIFT_READ_TIMEOUT_SECONDS (408) and refuses one over MAX_HEAD_BYTES (431).  Bodies
are the application's to time (app.api.body_limit answers 408 itself).

uvicorn writes a response's head and its body separately: two syscalls and two TCP
segments per response, ~4 % of an API process's CPU under ingest load.  The
connection's transport holds a head back until the body follows (or the response
ends), so a response normally leaves in one write.
"""

from __future__ import annotations

from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.settings import load_settings

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; h11's default is 16 KiB
# Loaded by uvicorn in each worker process (app.cli passes this module by name).
timeout = load_settings().read_timeout_seconds
interval = min(1.0, timeout / 4)


def answer(transport: Any, status: int, reason: str, code: str, message: str) -> None:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    transport.write(head.encode() + body)
    transport.close()


def sweep(loop: Any, connections: set[Any]) -> None:
    """One timer per server, not one per connection: close the heads that are late."""
    late = loop.time() - timeout
    for conn in list(connections):
        since = getattr(conn, "head_since", None)
        if since is not None and since <= late and not conn.transport.is_closing():
            conn.head_timed_out()
    loop.call_later(interval, sweep, loop, connections)


class HeadHoldingTransport:
    """The connection's transport, except that a response head waits for what follows."""

    __slots__ = ("_transport", "_head")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._head = b""

    def write(self, data: bytes) -> None:
        if self._head:
            data, self._head = self._head + data, b""
        elif (
            data.startswith(b"HTTP/1.1 ")
            and data.endswith(b"\r\n\r\n")
            and not data.startswith(b"HTTP/1.1 100 ")  # the client waits for it to send
        ):
            self._head = data
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._head:
            head, self._head = self._head, b""
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpProtocol(HttpToolsProtocol):  # type: ignore[misc]
    """httptools, with a deadline and a size limit for the head of each request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_since: float | None = None  # loop time the pending head began
        self.head_bytes = 0

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.transport = HeadHoldingTransport(transport)
        self.head_since = self.loop.time()
        if not getattr(self.server_state, "head_sweep", False):
            self.server_state.head_sweep = True
            self.loop.call_later(interval, sweep, self.loop, self.connections)

    def on_response_complete(self) -> None:
        self.transport.flush()  # a head with no body after it (HEAD, 204, 304)
        super().on_response_complete()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.head_since is None:
            self.head_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self.head_since = None
        self.head_bytes = 0
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.head_since is None or self.transport.is_closing():
            return
        self.head_bytes += len(data)
        if self.head_bytes > MAX_HEAD_BYTES:
            message = f"the request line and headers exceed {MAX_HEAD_BYTES} bytes"
            reason = "Request Header Fields Too Large"
            answer(self.transport, 431, reason, "headers_too_large", message)

    def head_timed_out(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a pipelined head behind a live response
            return
        message = f"the request headers did not arrive within {timeout:g} s"
        answer(self.transport, 408, "Request Timeout", "request_timeout", message)
