"""`serve --workers N`: each API process listens on a socket of its own (app/listen.py),
all of them see a change of keys at once, and they spend one budget of each rate limit
and quota (app/shared_counters.py)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, BIN, Server
from tests.test_ingest import auth, envelope, event

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


def api_processes(srv: Server) -> list[int]:
    assert srv.proc is not None
    supervisor = srv.proc.pid
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    api = [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(api) == 2, children
    return api


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    """`serve --workers 2`, embedded."""
    server = Server(tmp_path / "data", serve_args=["--workers", "2"])
    server.data_dir.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def keep_alive(count: int) -> Iterator[list[httpx.Client]]:
    """``count`` clients, each holding its connection open as SDK transports do."""
    clients = [httpx.Client(timeout=10) for _ in range(count)]
    try:
        yield clients
    finally:
        for client in clients:
            client.close()


def test_connections_spread_over_the_api_processes(srv: Server, tmp_path: Path) -> None:
    with keep_alive(32) as clients:
        api = api_processes(srv)
        assert srv.proc is not None
        supervisor = srv.proc.pid

        def listening() -> dict[int, set[int]]:
            states = sockets_on(srv.port)
            return {pid: {i for i in inodes(pid) if states.get(i) == LISTEN} for pid in api}

        srv.wait_for(lambda: all(listening().values()), timeout=15)
        own = listening()
        assert all(len(socks) == 1 for socks in own.values()), own
        assert own[api[0]] != own[api[1]]  # not one socket shared by both
        assert not inodes(supervisor) & set(sockets_on(srv.port))  # nothing queues there

        for client in clients:
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


def test_a_revoked_key_is_refused_at_once_by_every_api_process(srv: Server) -> None:
    """Each API process caches keys; revoking one through either must reach both."""
    with keep_alive(16) as clients:
        p = srv.project()
        url = f"{srv.url}/api/{p.id}/envelope/"
        for client in clients:  # every connection's process caches the key
            resp = client.post(url, content=envelope(event("cached")), headers=auth(p.ingest_key))
            assert resp.status_code == 200, resp.text
        states = sockets_on(srv.port)
        api = api_processes(srv)
        held = [sum(states.get(i) == ESTABLISHED for i in inodes(pid)) for pid in api]
        assert min(held) >= 1, held  # both processes hold connections

        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        keys = httpx.get(f"{srv.url}/api/v1/projects/{p.id}/keys", headers=admin).json()["data"]
        (kid,) = [k["id"] for k in keys if k["kind"] == "ingest"]
        resp = httpx.delete(f"{srv.url}/api/v1/projects/{p.id}/keys/{kid}", headers=admin)
        assert resp.status_code == 200, resp.text
        for client in clients:
            resp = client.post(url, content=envelope(event("revoked")), headers=auth(p.ingest_key))
            assert resp.status_code == 403, resp.text


def held_per_process(srv: Server) -> list[int]:
    """Connections each API process holds."""
    states = sockets_on(srv.port)
    return [sum(states.get(i) == ESTABLISHED for i in inodes(pid)) for pid in api_processes(srv)]


@pytest.mark.parametrize(
    ("limits", "code", "scope", "reason"),
    [
        ({"key_rate_limit": "10/minute"}, "rate_limited", "key", "rate_limited"),
        ({"events_per_hour": 10}, "quota_exceeded", "project", "over_quota"),
    ],
    ids=["key rate limit", "hourly quota"],
)
def test_limits_are_one_budget_across_the_api_processes(
    srv: Server, limits: dict[str, object], code: str, scope: str, reason: str
) -> None:
    """With a budget of 10, exactly 10 events are accepted although each API process alone
    receives more than 10: counted per process, 20 would be."""
    budget = 10
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    p = srv.project()
    resp = httpx.put(
        f"{srv.url}/api/v1/projects/{p.id}/settings", json={"limits": limits}, headers=admin
    )
    assert resp.status_code == 200, resp.text
    url = f"{srv.url}/api/{p.id}/envelope/"
    with keep_alive(16) as clients:
        for client in clients:  # every client's connection, then, where it landed
            assert client.get(f"{srv.url}/healthz").status_code == 200
        held = held_per_process(srv)
        assert min(held) >= 1, held
        rounds = budget + 1  # each process's connections send more than the budget
        assert rounds * min(held) > budget
        answers = [
            client.post(url, content=envelope(event(f"{r}")), headers=auth(p.ingest_key))
            for r in range(rounds)
            for client in clients
        ]
        assert held_per_process(srv) == held  # no connection moved: both shares as counted
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == budget, statuses
    assert statuses.count(429) == len(answers) - budget, statuses
    for refused in (a for a in answers if a.status_code == 429):
        assert refused.json()["error"]["code"] == code
        assert refused.headers["X-Sentry-Rate-Limits"].endswith(f":{scope}:{code}")
        assert int(refused.headers["Retry-After"]) >= 1

    def outcomes() -> dict[str, int] | None:
        resp = httpx.get(f"{srv.url}/api/v1/projects/{p.id}/outcomes", headers=admin)
        counts: dict[str, int] = resp.json()["counts"]
        return counts if counts.get("processed", 0) >= budget else None

    counts = srv.wait_for(outcomes)
    assert counts["accepted"] == budget
    assert counts[reason] == len(answers) - budget
