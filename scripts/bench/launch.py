"""Start and stop the bare FastAPI app (bare_app.py) under uvicorn."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .wrk_runner import BenchError

BENCH_DIR = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"bare app exited with code {proc.returncode} during start-up")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=b"{}"), timeout=1):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise BenchError(f"bare app did not answer {url} within {timeout_s}s")


@contextmanager
def bare_app(workers: int = 1, port: int | None = None) -> Iterator[int]:
    """Run bare_app:app on 127.0.0.1; yields the port. Access log off, as in production."""
    port = port or free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bare_app:app",
        "--app-dir",
        str(BENCH_DIR),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(command)
    try:
        _wait_ready(f"http://127.0.0.1:{port}/api/1/envelope/", proc, timeout_s=30)
        if workers > 1:
            time.sleep(1.0)  # let every worker finish importing before load starts
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
