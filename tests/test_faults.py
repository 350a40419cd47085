"""Faults under steady load: every acknowledged event is stored exactly once and the
service recovers by itself.

What other modules already prove is not repeated here: SIGTERM under load
(test_lifecycle), SIGKILL of an idle embedded server (test_ingest), a worker killed
mid-batch, an Elasticsearch restart and two workers on one backlog
(test_distributed), a /readyz that follows Redis (test_readiness), sequential
duplicates (test_ingest).  This module adds SIGKILL of the API process under load on
both backends, a Redis restart from its append-only file, a full data disk, and the
same event id sent concurrently.

The load is a client that resubmits an event until it gets its ``200`` (as a careful
SDK would): a fault can swallow the answer of a request whose event was in fact
stored, and that resubmission is a duplicate the server must store once.  So the
check is strict both ways: the stored ids are exactly the acknowledged ids, each once,
and the issues count each once.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import (
    ADMIN_TOKEN,
    ES_URL,
    REDIS_URL,
    Project,
    Server,
    backend_server,
    free_port,
)
from tests.test_ingest import auth, envelope, event

BACKENDS = ("embedded", "distributed")
TITLES = ["alpha", "beta", "gamma", "delta", "epsilon"]  # one issue each (digits would merge)


class Load:
    """Sender threads at a steady rate; each event is resubmitted until acknowledged."""

    def __init__(self, server: Server, project: Project, rate: float = 300.0, threads: int = 4):
        self.server = server
        self.project = project
        self.interval = threads / rate
        self.acked: list[str] = []
        self.sent: set[str] = set()
        self.unacked: list[str] = []  # given up on after stop(): must not happen
        self.answers: list[tuple[float, int]] = []  # (monotonic time, status; 0 = no answer)
        self.refusals: list[dict] = []  # bodies of non-200 answers
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]
        self.started = 0.0
        self.stopped = 0.0

    def start(self) -> None:
        self.started = time.monotonic()
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)
        self.stopped = time.monotonic()
        assert not any(t.is_alive() for t in self._threads), "a sender hangs"

    @property
    def rate(self) -> float:
        """Distinct events sent per second."""
        return len(self.sent) / ((self.stopped or time.monotonic()) - self.started)

    def statuses(self, since: float = 0.0) -> Counter[int]:
        return Counter(status for at, status in list(self.answers) if at >= since)

    def seen(self, status: int, since: float, allowed: set[int], at_least: int = 10) -> bool:
        """At least ``at_least`` answers ``status`` since ``since``; fails at once on an
        answer outside ``allowed`` (a 500 must not wait for a timeout to show)."""
        answers = self.statuses()
        assert set(answers) <= allowed, (answers, self.refusals[-3:])
        return self.statuses(since)[status] >= at_least

    def first_ok_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the first 200 after it."""
        return next(
            (at - moment for at, s in list(self.answers) if at >= moment and s == 200), None
        )

    def _run(self, n: int) -> None:
        url = f"{self.server.url}/api/{self.project.id}/envelope/"
        headers = auth(self.project.ingest_key)
        i = 0
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                next_at = time.monotonic() + self.interval
                self._deliver(
                    client, url, headers, event(f"fault {TITLES[i % len(TITLES)]}", tags={"n": n})
                )
                i += 1
                time.sleep(max(0.0, next_at - time.monotonic()))

    def _deliver(self, client: httpx.Client, url: str, headers: dict, ev: dict) -> None:
        self.sent.add(ev["event_id"])
        body = envelope(ev)
        give_up: float | None = None
        while True:
            try:
                resp = client.post(url, content=body, headers=headers)
                status = resp.status_code
            except httpx.TransportError:
                resp, status = None, 0
            self.answers.append((time.monotonic(), status))
            if status == 200:
                assert resp is not None and resp.json() == {"id": ev["event_id"]}
                self.acked.append(ev["event_id"])
                return
            if resp is not None:
                self.refusals.append({"status": status, "body": resp.text[:500]})
            if self._stop.is_set():
                give_up = give_up or time.monotonic() + 60
                if time.monotonic() > give_up:
                    self.unacked.append(ev["event_id"])
                    return
            time.sleep(0.05)


def unlimited(server: Server, p: Project) -> None:
    resp = httpx.put(
        f"{server.url}/api/v1/projects/{p.id}/settings",
        json={"limits": {"key_rate_limit": "1000000/minute"}},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text


@contextmanager
def under_load(server: Server) -> Iterator[tuple[Project, Load]]:
    """A new project without rate limits, under steady load for the whole block (2 s of
    it before the block's fault)."""
    p = server.project()
    unlimited(server, p)
    load = Load(server, p)
    load.start()
    try:
        time.sleep(2.0)
        yield p, load
    finally:
        load.stop()


def queue_depth(server: Server) -> int | None:
    resp = httpx.get(server.url + "/readyz", timeout=10)
    return resp.json()["queue_depth"] if resp.status_code == 200 else None


def assert_stored_once(server: Server, p: Project, load: Load, timeout: float = 120.0) -> float:
    """Wait until the queue is empty and every acknowledged event is readable; then each
    stored id is an acknowledged one, stored once, counted once.  Returns the wait."""
    assert load.unacked == [] and load.acked
    assert len(load.acked) == len(set(load.acked))
    start = time.monotonic()

    def complete() -> list[dict] | None:
        if queue_depth(server) != 0:
            return None
        events = server.all_events(p)
        return events if {e["event_id"] for e in events} >= set(load.acked) else None

    events = server.wait_for(complete, timeout)
    waited = time.monotonic() - start
    stored = Counter(e["event_id"] for e in events)
    assert [i for i, n in stored.items() if n > 1] == []
    assert sorted(stored) == sorted(load.acked)
    issues = server.get(f"/api/v1/projects/{p.id}/issues", p.read_token, limit=100).json()["data"]
    assert sorted(i["title"] for i in issues) == sorted(f"fault {t}" for t in TITLES)
    assert sum(i["count"] for i in issues) == len(load.acked)
    return waited


def report(name: str, load: Load, **figures: float | int | str) -> None:
    extra = " ".join(
        f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    print(
        f"\n[{name}] sent {load.rate:.0f} events/s, acknowledged {len(load.acked)}, "
        f"answers {dict(load.statuses())} {extra}"
    )


# -- SIGKILL of the API process ---------------------------------------------------------


def test_sigkill_of_the_api_under_load_loses_and_duplicates_nothing(server: Server) -> None:
    """Embedded, the API process is also the worker; distributed, the RQ worker keeps
    running and the API comes back on the same Redis stream."""
    with under_load(server) as (p, load):
        assert server.proc is not None
        server.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        assert server.proc.wait(timeout=10) == -signal.SIGKILL
        server.proc = None
        time.sleep(1.0)  # clients see refused connections meanwhile
        restarted = time.monotonic()
        server.start()  # as a supervisor would
        server.wait_for(lambda: load.first_ok_after(restarted) is not None, timeout=30)
        time.sleep(2.0)
    assert set(load.statuses()) <= {200, 0}, load.refusals[:5]
    assert all(w.poll() is None for w in server.workers)
    waited = assert_stored_once(server, p, load)
    report(
        f"sigkill-api {server.backend}",
        load,
        outage_s=restarted - killed + (load.first_ok_after(restarted) or 0.0),
        recover_s=load.first_ok_after(restarted) or 0.0,
        drain_s=waited,
    )


def test_sigkill_of_a_worker_under_load_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """test_distributed kills a worker draining a backlog; here events keep arriving while
    it dies and its replacement takes over the entries it held."""
    with backend_server("distributed", tmp_path / "data") as srv:
        srv.start()
        try:
            with under_load(srv) as (p, load):
                (worker,) = srv.workers
                held = redis.Redis.from_url(f"{REDIS_URL}/{srv.redis_db}")
                deadline = time.monotonic() + 30
                while not held.xpending(f"{srv.prefix}:inbox", "workers")["pending"]:
                    assert time.monotonic() < deadline, "the worker never held a batch"
                    time.sleep(0.002)
                srv.stop_worker(worker, signal.SIGKILL)  # while it holds a batch
                killed = time.monotonic()
                time.sleep(1.0)
                srv.start_worker()  # as a supervisor would
                time.sleep(2.0)
            assert set(load.statuses()) == {200}, load.refusals[:5]
            waited = assert_stored_once(srv, p, load)
            report(
                "sigkill-worker", load, drain_after_kill_s=time.monotonic() - killed, drain_s=waited
            )
        finally:
            srv.stop()


# -- Redis restart (distributed) --------------------------------------------------------


def start_redis(port: int, folder: Path) -> subprocess.Popen[bytes]:
    """A private Redis that writes every command to its AOF before answering."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server missing: scripts/services.sh installs it"
    log = open(folder / "redis.log", "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(folder),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ],
        stdout=log,
        stderr=log,
    )
    deadline = time.time() + 20
    while (
        subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
        ).stdout.strip()
        != "PONG"
    ):
        assert proc.poll() is None, (folder / "redis.log").read_text()
        assert time.time() < deadline, "private redis did not start"
        time.sleep(0.1)
    return proc


class PrivateRedis:
    """A Redis of the test's own, so the test may kill it (appendfsync always)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc = start_redis(self.port, folder)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.proc = start_redis(self.port, self.folder)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[Server, PrivateRedis]]:
    """A distributed server (API + one worker) on a private Redis; Elasticsearch is the
    shared one, under a prefix of its own."""
    from elasticsearch import Elasticsearch

    from app.storage.elastic_setup import drop_everything

    folder = tmp_path / "redis"
    folder.mkdir()
    private = PrivateRedis(folder)
    prefix = f"sst-faults{private.port}"
    srv = Server(
        tmp_path / "data",
        backend="distributed",
        prefix=prefix,
        extra_env={"STACKSIFT_REDIS_URL": f"redis://127.0.0.1:{private.port}/0"},
    )
    srv.data_dir.mkdir()
    try:
        srv.start()
        yield srv, private
    finally:
        srv.stop()
        private.kill()
        drop_everything(Elasticsearch(ES_URL, request_timeout=60), prefix, templates=True)


def test_redis_sigkill_and_restart_under_load(redis_server: tuple[Server, PrivateRedis]) -> None:
    """Redis (appendfsync always) is killed under load: the API answers 503 with a clear
    error meanwhile, never 500; Redis restarts from its AOF and API and worker carry on
    by themselves, with every acknowledged event stored once."""
    srv, private = redis_server
    (worker,) = srv.workers
    stream = redis.Redis(port=private.port)
    with under_load(srv) as (p, load):
        try:
            # a backlog for the AOF to keep: the worker stalls (SIGSTOP) with a batch in hand
            worker.send_signal(signal.SIGSTOP)
            time.sleep(1.0)
            backlog = stream.xlen(f"{srv.prefix}:inbox")
            assert backlog > 50
            private.kill()
            down = time.monotonic()
            worker.send_signal(signal.SIGCONT)  # it finds Redis gone and retries meanwhile
            srv.wait_for(lambda: load.seen(503, down, {200, 503}), timeout=30)
            time.sleep(3.0)  # longer than the worker's first backoffs
            up = time.monotonic()
            private.restart()  # loads the AOF before it answers
            srv.wait_for(lambda: load.first_ok_after(up) is not None, timeout=60)
            time.sleep(2.0)
        finally:
            worker.send_signal(signal.SIGCONT)
    assert set(load.statuses()) <= {200, 503}, load.refusals[:5]
    errors = [r for r in load.refusals if r["status"] == 503]
    assert errors and all('"code":"unavailable"' in r["body"] for r in errors), errors[:3]
    assert all("redis" in r["body"].lower() for r in errors), errors[:3]
    assert srv.proc is not None and srv.proc.poll() is None
    assert srv.workers and all(w.poll() is None for w in srv.workers)
    waited = assert_stored_once(srv, p, load)
    report(
        "redis-restart",
        load,
        backlog_at_kill=backlog,
        outage_503s=len(errors),
        recover_s=load.first_ok_after(up) or 0.0,
        drain_s=waited,
    )


# -- full data disk (embedded) ----------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs as the data dir, so the test can fill it (the tests run as root)."""
    mount = tmp_path / "data"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"the disk-full test mounts a tmpfs and needs root: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(path: Path) -> int:
    """Write ``path`` until the file system has no byte left; returns the bytes written."""
    chunk = b"\0" * (1 << 20)
    written = 0
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1):
            while True:
                try:
                    written += f.write(chunk[:size])
                except OSError:
                    break
    return written


def integrity(db: Path) -> str:
    with closing(sqlite3.connect(db, timeout=30)) as conn:  # closed: the tmpfs must unmount
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def test_full_data_disk_answers_507_and_recovers(small_disk: Path, tmp_path: Path) -> None:
    """The data dir fills up under load: ingest answers 507 with a clear error (never
    500, never a crash), the database stays sound, and once space returns ingest and
    processing resume without a restart, every acknowledged event stored once."""
    (small_disk / "server.log").symlink_to(tmp_path / "server.log")  # logs need no space
    srv = Server(small_disk)
    srv.start()
    try:
        with under_load(srv) as (p, load):
            filler = small_disk / "filler"
            filled = fill(filler)
            full = time.monotonic()
            srv.wait_for(lambda: load.seen(507, full, {200, 507}), timeout=60)
            time.sleep(4.0)  # long enough for the worker to fail and back off
            assert srv.proc is not None and srv.proc.poll() is None
            assert integrity(small_disk / "stacksift.db") == "ok"
            assert integrity(small_disk / "inbox.db") == "ok"
            filler.unlink()
            freed = time.monotonic()
            srv.wait_for(lambda: load.first_ok_after(freed) is not None, timeout=30)
            time.sleep(2.0)
        assert set(load.statuses()) <= {200, 507}, load.refusals[:5]
        errors = [r for r in load.refusals if r["status"] == 507]
        assert errors and all('"code":"insufficient_storage"' in r["body"] for r in errors)
        assert all("disk is full" in r["body"] for r in errors), errors[:3]
        waited = assert_stored_once(srv, p, load, timeout=90)
        assert srv.proc is not None and srv.proc.poll() is None
        assert integrity(small_disk / "stacksift.db") == "ok"
        assert integrity(small_disk / "inbox.db") == "ok"
        report(
            "disk-full",
            load,
            filler_mib=filled >> 20,
            refused_507=len(errors),
            recover_s=load.first_ok_after(freed) or 0.0,
            drain_s=waited,
        )
    finally:
        srv.stop()


# -- duplicates ---------------------------------------------------------------------------


def test_one_event_id_sent_concurrently_is_stored_once(server: Server) -> None:
    """Two clients send the same 100 events at the same moment (test_ingest covers the
    same id sent one after the other): each id stored once, each issue counted once."""
    p = server.project()
    events = [event(f"dup {TITLES[i % 4]}") for i in range(100)]
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def send() -> None:
        with httpx.Client(timeout=30) as client:
            for ev in events:
                barrier.wait()
                resp = client.post(
                    f"{server.url}/api/{p.id}/envelope/",
                    content=envelope(ev),
                    headers=auth(p.ingest_key),
                )
                statuses.append(resp.status_code)

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 200
    marker = event("marker")
    resp = httpx.post(
        f"{server.url}/api/{p.id}/envelope/", content=envelope(marker), headers=auth(p.ingest_key)
    )
    assert resp.status_code == 200
    stored = server.wait_for(
        lambda: (
            (evs := server.all_events(p))
            and marker["event_id"] in {e["event_id"] for e in evs}
            and queue_depth(server) == 0
            and evs
        )
    )
    ids = Counter(e["event_id"] for e in stored)
    assert set(ids.values()) == {1}
    assert set(ids) == {ev["event_id"] for ev in events} | {marker["event_id"]}
    issues = server.get(f"/api/v1/projects/{p.id}/issues", p.read_token).json()["data"]
    counts = {i["title"]: i["count"] for i in issues}
    assert counts == {**{f"dup {t}": 25 for t in TITLES[:4]}, "marker": 1}
