"""The HTTP layer (app/http_guard.py): one write per response, and the heads that must not wait."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.conftest import Server
from tests.test_ingest import auth, envelope, event


def write_syscalls(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscw:"):
            return int(line.split()[1])
    raise AssertionError("no syscw in /proc/pid/io")


def exchange(sock: socket.socket, request: bytes, until: bytes = b"ok") -> bytes:
    sock.sendall(request)
    got = b""
    while until not in got:
        chunk = sock.recv(65536)
        assert chunk, got
        got += chunk
    return got


def test_a_response_leaves_in_one_write(server: Server) -> None:
    """uvicorn writes head and body apart; the head now waits for the body."""
    assert server.proc is not None
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        exchange(sock, get)  # warm: the connection's first request
        before = write_syscalls(server.proc.pid)
        for _ in range(200):
            exchange(sock, get)
        writes = write_syscalls(server.proc.pid) - before
    assert writes < 300, writes  # two writes a response would be >= 400


def test_head_requests_and_100_continue_are_answered(server: Server) -> None:
    """A head with no body after it is sent when the response ends; a 100 Continue at
    once, since the client waits for it before it sends the body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        answer = exchange(sock, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 ") and answer.endswith(b"\r\n\r\n")  # no body

        p = server.project()
        body = envelope(event("after a 100 Continue"))
        head = (
            f"POST /api/{p.id}/envelope/ HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            f"Content-Length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in auth(p.ingest_key).items())
            + "\r\n"
        ).encode()
        assert exchange(sock, head, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert exchange(sock, body, b'"id"').startswith(b"HTTP/1.1 200 ")
    assert len(server.wait_events(p, 1)) == 1
