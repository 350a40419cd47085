"""Run wrk with ingest.lua and read back the JSON line its done() prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .pool import Pool

LUA_SCRIPT = Path(__file__).with_name("ingest.lua")
_MARKER = "BENCH_JSON "


class BenchError(RuntimeError):
    """The benchmark cannot run or produced no usable result; the message says why."""


@dataclass(frozen=True)
class Target:
    base_url: str  # scheme://host:port, what wrk connects to
    path: str  # request path including any query string
    headers: dict[str, str]


def ensure_wrk() -> str:
    """Path of wrk, installing Debian's package when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BenchError("wrk is not installed; run: apt-get install -y wrk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"apt-get install wrk failed: {done.stderr.strip()[-500:]}")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk still not on PATH after apt-get install")
    return found


def run_wrk(
    target: Target,
    pool: Pool,
    *,
    duration_s: float,
    connections: int,
    threads: int,
    nonce: str,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """One closed-loop wrk run; returns the parsed done() summary."""
    if len(nonce) != 8 or any(c not in "0123456789abcdef" for c in nonce):
        raise BenchError(f"nonce must be 8 lowercase hex digits, got {nonce!r}")
    threads = max(1, min(threads, connections))
    header_args = [f"{name}: {value}" for name, value in target.headers.items()]
    command = [
        ensure_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(LUA_SCRIPT),
        target.base_url,
        "--",
        str(pool.bin_path),
        str(pool.idx_path),
        target.path,
        nonce,
        str(threads),
        *header_args,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration_s + timeout_s + 120
    )
    for line in done.stdout.splitlines():
        if line.startswith(_MARKER):
            result: dict[str, Any] = json.loads(line[len(_MARKER) :])
            result["threads"] = threads
            result["connections"] = connections
            return result
    raise BenchError(
        f"wrk exited {done.returncode} without a result\n"
        f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-2000:]}"
    )
