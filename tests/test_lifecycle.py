"""SIGTERM under load: in-flight requests finish, nothing acknowledged is lost."""

from __future__ import annotations

import fcntl
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import ADMIN_TOKEN, Server, descendants
from tests.test_ingest import auth, envelope, event


def test_sigterm_under_load_loses_no_acknowledged_event(server: Server) -> None:
    p = server.project()
    resp = httpx.put(f"{server.url}/api/v1/projects/{p.id}/settings",
                     json={"limits": {"key_rate_limit": "1000000/minute"}},
                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert resp.status_code == 200, resp.text
    acked: list[str] = []
    statuses: list[int] = []
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                ev = event(f"term {len(acked) % 7}")
                try:
                    resp = client.post(f"{server.url}/api/{p.id}/envelope/",
                                       content=envelope(ev), headers=auth(p.ingest_key))
                except httpx.TransportError:
                    continue  # the server is gone: not acknowledged, not expected
                statuses.append(resp.status_code)
                if resp.status_code == 200:
                    acked.append(ev["event_id"])

    senders = [threading.Thread(target=send) for _ in range(4)]
    for t in senders:
        t.start()
    time.sleep(1.5)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal after a graceful shutdown, so the exit is -SIGTERM;
    # the log says whether the lifespan shutdown (inbox flush, worker stop) completed.
    assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in (server.data_dir / "server.log").read_text()
    stop.set()
    for t in senders:
        t.join()
    assert acked and set(statuses) <= {200, 503}
    server.start()
    stored = server.wait_events(p, len(acked))
    assert set(acked) <= {e["event_id"] for e in stored}


def test_api_processes_stop_with_a_killed_supervisor(tmp_path: Path) -> None:
    """`serve --workers 2`, main process SIGKILLed (the OOM killer, say): its API processes
    kept the port and kept answering 200 to events no process was left to process. Now
    they stop with it, a restart binds the same port, and what they took is processed."""
    srv = Server(tmp_path / "data", serve_args=["--workers", "2"])
    srv.data_dir.mkdir()
    lock = open(srv.data_dir / "worker.lock", "a")  # noqa: SIM115 - nothing processes yet
    fcntl.flock(lock, fcntl.LOCK_EX)
    srv.start()
    try:
        assert srv.proc is not None
        pid = srv.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        api = [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(api) == 2, children
        p = srv.project()
        ids = []
        for i in range(10):
            ev = event(f"before the kill {i % 2}")
            resp = httpx.post(
                f"{srv.url}/api/{p.id}/envelope/", content=envelope(ev), headers=auth(p.ingest_key)
            )
            assert resp.status_code == 200, resp.text
            ids.append(ev["event_id"])
        srv.stop(signal.SIGKILL)
        srv.wait_for(lambda: not any(Path(f"/proc/{c}").exists() for c in api), timeout=10)
        fcntl.flock(lock, fcntl.LOCK_UN)
        srv.start()  # the same port
        stored = srv.wait_events(p, len(ids))
        assert sorted(e["event_id"] for e in stored) == sorted(ids)
    finally:
        lock.close()
        srv.stop()


def test_prepare_processes_stop_with_the_server(tmp_path: Path) -> None:
    """`serve --workers 2` prepares events in two processes of its own: they stop with a
    graceful stop, and with a supervisor killed outright (they would otherwise wait on
    their queue forever), and a restart processes what came in."""
    srv = Server(tmp_path / "data", serve_args=["--workers", "2"])
    srv.data_dir.mkdir()
    srv.start()
    try:
        p = srv.project()
        for round_, sig in enumerate((signal.SIGTERM, signal.SIGKILL)):
            ids = []
            for i in range(20):
                ev = event(f"round {round_} error {i % 3}")
                url = f"{srv.url}/api/{p.id}/envelope/"
                resp = httpx.post(url, content=envelope(ev), headers=auth(p.ingest_key))
                assert resp.status_code == 200, resp.text
                ids.append(ev["event_id"])
            stored = srv.wait_events(p, 20 * (round_ + 1))
            assert set(ids) <= {e["event_id"] for e in stored}
            assert srv.proc is not None
            below = descendants(srv.proc.pid)
            names = [Path(f"/proc/{c}/comm").read_text().strip() for c in below]
            assert 1 <= names.count("stacksift-prep") <= 2, names  # one per slice in flight
            srv.stop(sig)
            gone = [Path(f"/proc/{c}") for c in below]
            srv.wait_for(lambda gone=gone: not any(p.exists() for p in gone), timeout=15)
            srv.start()
    finally:
        srv.stop()
