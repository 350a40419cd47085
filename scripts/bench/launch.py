"""Start and stop the bare FastAPI app (bare_app.py) under uvicorn (bare_serve.py)."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .procs import Child, http_ok

BENCH_DIR = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def bare_app_child(workers: int = 1, port: int | None = None) -> Iterator[tuple[Child, int]]:
    """Run bare_app:app on 127.0.0.1; yields the process and the port. Access log off,
    as in production."""
    port = port or free_port()
    command = [
        sys.executable,
        str(BENCH_DIR / "bare_serve.py"),
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    child = Child("bare app", command)
    try:
        url = f"http://127.0.0.1:{port}/api/1/envelope/"
        child.wait_until(lambda: http_ok(url, data=b"{}"), timeout_s=30)
        if workers > 1:
            time.sleep(1.0)  # let every worker finish importing before load starts
        yield child, port
    finally:
        child.stop(timeout_s=15)


@contextmanager
def bare_app(workers: int = 1, port: int | None = None) -> Iterator[int]:
    """Run bare_app:app on 127.0.0.1; yields the port."""
    with bare_app_child(workers, port) as (_, bound):
        yield bound
