"""`serve --workers N`: each API process listens on a socket of its own (app/listen.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from tests.conftest import BIN, Server

LISTEN, ESTABLISHED = "0A", "01"


def sockets_on(port: int) -> dict[int, str]:
    """inode -> TCP state of the sockets whose local port is ``port``."""
    out: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                out[int(fields[9])] = fields[3]
    return out


def inodes(pid: int) -> set[int]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def test_connections_spread_over_the_api_processes(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", serve_args=["--workers", "2"])
    srv.data_dir.mkdir()
    srv.start()
    clients = [httpx.Client(timeout=10) for _ in range(32)]
    try:
        assert srv.proc is not None
        supervisor = srv.proc.pid
        children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
        api = [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(api) == 2, children

        def listening() -> dict[int, set[int]]:
            states = sockets_on(srv.port)
            return {pid: {i for i in inodes(pid) if states.get(i) == LISTEN} for pid in api}

        srv.wait_for(lambda: all(listening().values()), timeout=15)
        own = listening()
        assert all(len(socks) == 1 for socks in own.values()), own
        assert own[api[0]] != own[api[1]]  # not one socket shared by both
        assert not inodes(supervisor) & set(sockets_on(srv.port))  # nothing queues there

        for client in clients:  # keep-alive connections, as SDK transports hold them
            assert client.get(f"{srv.url}/healthz").status_code == 200
        states = sockets_on(srv.port)
        held = {pid: sum(states.get(i) == ESTABLISHED for i in inodes(pid)) for pid in api}
        assert sum(held.values()) == 32, held
        assert min(held.values()) >= 4, held  # a fair coin per connection: < 4 is ~1e-6

        # A second server on the same port must not join the group and take half the traffic.
        env = {**srv.env, "STACKSIFT_DATA_DIR": str(tmp_path / "other")}
        second = subprocess.run(
            [str(BIN), "serve", "--port", str(srv.port), "--workers", "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 3, second.stderr[-2000:]
        assert f"cannot listen on 127.0.0.1:{srv.port}" in second.stderr
    finally:
        for client in clients:
            client.close()
        srv.stop()
