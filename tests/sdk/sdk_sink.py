"""A throwaway Sentry endpoint that records what real SDKs send.

Tests of the SDK senders and of the bench tooling must not depend on the
stacksift server (written separately), so they point the SDKs here and check
the raw HTTP: path, headers, Content-Encoding, chunked bodies, envelope items.
"""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import brotli


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    raw_size: int
    envelope_header: dict[str, Any]
    items: list[tuple[dict[str, Any], bytes]]

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(payload) for header, payload in self.items if header["type"] == "event"]


def decode_body(raw: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(raw)
    if encoding == "br":
        return brotli.decompress(raw)
    if encoding == "deflate":
        return zlib.decompress(raw)
    return raw


def parse_envelope(body: bytes) -> tuple[dict[str, Any], list[tuple[dict[str, Any], bytes]]]:
    """Strict enough for tests: honours ``length``, else reads to the next newline."""
    header_line, _, rest = body.partition(b"\n")
    items = []
    while rest:
        item_line, _, rest = rest.partition(b"\n")
        if not item_line.strip():
            continue
        item_header = json.loads(item_line)
        length = item_header.get("length")
        if length is None:
            payload, _, rest = rest.partition(b"\n")
        else:
            payload, rest = rest[:length], rest[length:]
            if len(payload) != length or rest[:1] not in (b"", b"\n"):
                raise ValueError(f"item length {length} does not match its payload")
            rest = rest[1:]
        items.append((item_header, payload))
    return json.loads(header_line), items


@dataclass
class Sink:
    port: int
    received: list[Received] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def events(self) -> list[dict[str, Any]]:
        return [event for request in self.received for event in request.events()]


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length", "0")))


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Load generators drop keep-alive connections mid-read when they stop.
        return None


def start_sink() -> tuple[Sink, ThreadingHTTPServer]:
    """Serve on a free loopback port in a daemon thread; call ``shutdown()`` when done."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            raw = _read_body(self)
            try:
                body = decode_body(raw, self.headers.get("Content-Encoding", ""))
                envelope_header, items = parse_envelope(body)
            except Exception as exc:  # noqa: BLE001 - recorded for the test to fail on
                with lock:
                    sink.errors.append(f"{self.path}: {exc!r}")
                self._answer(400, b'{"error": "bad envelope"}')
                return
            record = Received(self.path, dict(self.headers), len(raw), envelope_header, items)
            with lock:
                sink.received.append(record)
            event_id = envelope_header.get("event_id", "")
            self._answer(200, json.dumps({"id": event_id}).encode())

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return None

    server = _QuietServer(("127.0.0.1", 0), Handler)
    sink = Sink(port=server.server_address[1])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return sink, server
