"""The real-SDK senders deliver what they claim, the way the SDKs really send it.

Server tests trust these scripts' JSON output (event ids, counts, exit code),
so they are checked here against a recording endpoint, not against stacksift.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sdk_sink import Sink, start_sink

HERE = Path(__file__).resolve().parent
PY_SENDER = HERE / "python_send.py"
NODE_DIR = HERE / "node"


@pytest.fixture()
def sink() -> Iterator[Sink]:
    recorder, server = start_sink()
    yield recorder
    server.shutdown()
    server.server_close()


def dsn_for(sink: Sink, key: str = "testkey", project: int = 42) -> str:
    return f"http://{key}@127.0.0.1:{sink.port}/{project}"


def run(command: list[str], timeout: float = 60) -> tuple[int, dict]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, f"expected one JSON line, got stdout={done.stdout!r} {done.stderr!r}"
    return done.returncode, json.loads(lines[0])


def exception_type(event: dict) -> str | None:
    values = (event.get("exception") or {}).get("values") or []
    return values[-1]["type"] if values else None


def test_python_sender_posts_brotli_envelopes_with_every_event(sink: Sink) -> None:
    code, out = run([sys.executable, str(PY_SENDER), dsn_for(sink), "3"])

    assert code == 0
    assert out["sent"] == {"ZeroDivisionError": 3, "KeyError": 3, "CheckoutError": 3, "message": 3}
    assert out["compression"] == "br"
    assert sink.errors == []
    assert {r.path for r in sink.received} == {"/api/42/envelope/"}
    assert {r.headers["Content-Encoding"] for r in sink.received} == {"br"}
    assert all("sentry_key=testkey" in r.headers["X-Sentry-Auth"] for r in sink.received)
    events = sink.events()
    assert sorted(e["event_id"] for e in events) == sorted(out["event_ids"])
    assert len(set(out["event_ids"])) == 12
    kinds = Counter(exception_type(e) or e["message"] for e in events)
    assert kinds == {
        "ZeroDivisionError": 3,
        "KeyError": 3,
        "CheckoutError": 3,
        "order 123 failed": 3,
    }
    functions = {
        e["exception"]["values"][-1]["stacktrace"]["frames"][-1]["function"]
        for e in events
        if exception_type(e)
    }
    assert functions == {"compute_average", "lookup_price", "checkout"}
    assert out["accepted"] == 12


@pytest.mark.parametrize(("flag", "encoding"), [("--gzip", "gzip"), ("--no-compression", None)])
def test_python_sender_compression_switches(sink: Sink, flag: str, encoding: str | None) -> None:
    code, out = run([sys.executable, str(PY_SENDER), dsn_for(sink), "1", flag])

    assert code == 0
    assert out["compression"] == (encoding or "none")
    assert {r.headers.get("Content-Encoding") for r in sink.received} == {encoding}
    assert len(sink.events()) == 4


def closed_port_dsn() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://k@127.0.0.1:{port}/1"  # nothing listens there any more


def test_python_sender_exits_4_when_nothing_is_accepted() -> None:
    code, out = run([sys.executable, str(PY_SENDER), closed_port_dsn(), "1"])

    assert code == 4
    assert out["accepted"] == 0
    assert out["status_codes"] == {"network_error": 4}


def test_python_sender_rejects_negative_repeat() -> None:
    done = subprocess.run(
        [sys.executable, str(PY_SENDER), "http://k@127.0.0.1:9/1", "-1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "repeat must be >= 0" in done.stderr


def test_node_sender_posts_every_event_uncompressed_and_chunked(sink: Sink) -> None:
    code, out = run(["node", str(NODE_DIR / "send.js"), dsn_for(sink, "nodekey", 7), "4"])

    assert code == 0
    assert out["sent"] == {"TypeError": 4, "PaymentError": 4, "RangeError": 4}
    assert out["status_codes"] == {"200": 12}
    assert sink.errors == []
    # The Node SDK authenticates in the query string and streams the body
    # chunked, without Content-Type; it gzips only bodies over 32 KB.
    for request in sink.received:
        assert request.path.startswith("/api/7/envelope/?")
        assert "sentry_key=nodekey" in request.path
        assert "X-Sentry-Auth" not in request.headers
        assert request.headers.get("Transfer-Encoding") == "chunked"
        assert "Content-Encoding" not in request.headers
    events = sink.events()
    assert sorted(e["event_id"] for e in events) == sorted(out["event_ids"])
    assert len(set(out["event_ids"])) == 12
    assert Counter(exception_type(e) for e in events) == out["sent"]
    assert {e["sdk"]["name"] for e in events} == {"sentry.javascript.node"}


def test_node_sender_exits_4_when_nothing_is_accepted() -> None:
    code, out = run(["node", str(NODE_DIR / "send.js"), closed_port_dsn(), "1"])

    assert code == 4
    assert out["accepted"] == 0
    assert out["status_codes"] == {"network_error": 3}
