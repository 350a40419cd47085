"""A real stacksift server in a subprocess, on a free port, with its own data dir."""

from __future__ import annotations

import faulthandler
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

BIN = Path(sys.executable).parent / "stacksift"
ADMIN_TOKEN = "test-admin-token-0123456789"
EXIT_GRACE_SECONDS = float(os.environ.get("STACKSIFT_TEST_EXIT_GRACE", "120"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen[Any], timeout: float = 60) -> None:
    """SIGTERM a child started with start_new_session=True and everything it started;
    SIGKILL what is left after ``timeout``."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children of any of its threads, recursively)."""
    out: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            below = list(map(int, children.read_text().split()))
        except OSError:  # that thread or process has just ended
            continue
        for child in below:
            out += [child, *descendants(child)]
    return out


def alive(pid: int) -> bool:
    """Running, or stopping: not gone and not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class Project:
    id: int
    dsn: str
    ingest_key: str
    read_token: str


@dataclass
class Server:
    data_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    # "distributed": serve + `stacksift worker` processes on Redis DB redis_db and
    # Elasticsearch indices named prefix-* (both private to this server).
    backend: str = "embedded"
    redis_db: int = 0
    prefix: str = ""
    es_url: str = "http://127.0.0.1:9200"
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    auto_worker: bool = True  # start() also starts one worker (distributed backend)
    serve_args: list[str] = field(default_factory=list)  # e.g. ["--workers", "2"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STACKSIFT_")}
        env.update(
            STACKSIFT_DATA_DIR=str(self.data_dir),
            STACKSIFT_ADMIN_TOKEN=ADMIN_TOKEN,
            STACKSIFT_BASE_URL=self.url,
            **self.backend_env,
        )
        env.update(self.extra_env)  # a test's own settings win over the backend's
        return env

    @property
    def backend_env(self) -> dict[str, str]:
        if self.backend != "distributed":
            return {}
        return {
            "STACKSIFT_REDIS_URL": f"{REDIS_URL}/{self.redis_db}",
            "STACKSIFT_ELASTICSEARCH_URL": self.es_url,
            "STACKSIFT_INDEX_PREFIX": self.prefix,
            "STACKSIFT_RECLAIM_SECONDS": "3",
        }

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN), *args], env=self.env, capture_output=True, text=True,
                              check=check, timeout=60)

    def start(self) -> None:
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--port", str(self.port), *self.serve_args],
            env=self.env,
            stdout=log,
            stderr=log,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.data_dir / 'server.log').read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    if self.backend == "distributed" and self.auto_worker and not self.workers:
                        self.start_worker()
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("server did not start in 30 s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            below = descendants(self.proc.pid)
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
            # A killed `serve --workers N` leaves its API processes to stop on their own
            # (they follow it); one still shutting down could answer the next start().
            self.wait_for(lambda: not any(map(alive, below)), timeout=40)
        self.proc = None
        while self.workers:
            self.stop_worker(self.workers[-1], sig)

    def start_worker(self, *args: str) -> subprocess.Popen[bytes]:
        """One more `stacksift worker` process (distributed backend)."""
        log = open(self.data_dir / f"worker-{len(self.workers)}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen([str(BIN), "worker", *args], env=self.env, stdout=log, stderr=log)
        self.workers.append(proc)
        return proc

    def stop_worker(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.workers.remove(proc)

    def project(self, name: str = "app") -> Project:
        out = json.loads(self.cli("project", "create", name, "--json").stdout)
        return Project(out["id"], out["dsn"], out["ingest_key"], out["read_token"])

    def get(self, path: str, token: str, **params: Any) -> httpx.Response:
        return httpx.get(self.url + path, params=params,
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
        deadline = time.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.time() > deadline:
                raise AssertionError(f"condition not met in {timeout} s")
            time.sleep(0.1)

    def all_events(self, project: Project, path: str | None = None) -> list[dict[str, Any]]:
        path = path or f"/api/v1/projects/{project.id}/events"
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            body = self.get(path, project.read_token, **params).json()
            out.extend(body["data"])
            cursor = body["next_cursor"]
            if not cursor:
                return out

    def wait_events(self, project: Project, count: int, timeout: float = 30.0) -> list[dict]:
        return self.wait_for(
            lambda: (evs := self.all_events(project)) and len(evs) >= count and evs, timeout
        )


# -- backends -------------------------------------------------------------------------
#
# Tests in BOTH_BACKENDS modules (or in a module that sets ``BACKENDS``) run once per
# backend; STACKSIFT_TEST_BACKEND=embedded|distributed narrows that.  The distributed
# backend needs Redis and Elasticsearch (scripts/services.sh start): without them those
# tests fail, they are never skipped.
REDIS_URL = "redis://127.0.0.1:6379"
ES_URL = "http://127.0.0.1:9200"
REDIS_DBS = range(1, 11)  # 13 and 15 belong to other tests
BOTH_BACKENDS = {"test_ingest", "test_read_api", "test_e2e_sdk", "test_distributed"}
# Tests that look inside the SQLite file or the embedded worker lock; their
# distributed counterparts are in tests/test_distributed.py.
EMBEDDED_ONLY = {
    "test_revoked_key_stops_working_at_once": "reads stacksift.db (see test_distributed)",
    "test_acknowledged_events_survive_sigkill": "holds the embedded worker.lock",
}


def pytest_unconfigure(config: pytest.Config) -> None:
    """Something a test leaves behind (a non-daemon thread, an executor stuck on a dead
    process) can keep the interpreter from exiting after every test passed; CI then runs
    into its time limit with nothing to show.  Give exit two minutes, then print every
    thread's stack and fail."""
    faulthandler.dump_traceback_later(EXIT_GRACE_SECONDS, exit=True, file=sys.__stderr__)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "server" not in metafunc.fixturenames:
        return
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    default = ("embedded", "distributed") if module in BOTH_BACKENDS else ("embedded",)
    backends = tuple(getattr(metafunc.module, "BACKENDS", default))
    if metafunc.function.__name__ in EMBEDDED_ONLY:
        backends = ("embedded",)
    wanted = os.environ.get("STACKSIFT_TEST_BACKEND", "all")
    if wanted != "all":
        backends = tuple(b for b in backends if b == wanted) or backends[:0]
    if len(backends) > 1 or backends != ("embedded",):
        metafunc.parametrize("server", backends, indirect=True)


@contextmanager
def redis_db() -> Iterator[int]:
    """A Redis database no other test process uses at the same time (a file lock each)."""
    deadline = time.time() + 300
    while True:
        for db in REDIS_DBS:
            lock = open(f"/tmp/stacksift-test-redis-db-{db}.lock", "a")  # noqa: SIM115
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            try:
                yield db
            finally:
                lock.close()
            return
        if time.time() > deadline:
            raise RuntimeError("no free Redis test database for 300 s")
        time.sleep(0.5)


def flush_distributed(db: int, prefix: str, es_url: str = ES_URL) -> None:
    """Empty the Redis database and drop the Elasticsearch indices of one test server."""
    import redis
    from elasticsearch import Elasticsearch

    from app.storage.elastic_setup import drop_everything

    redis.Redis.from_url(f"{REDIS_URL}/{db}").flushdb()
    drop_everything(Elasticsearch(es_url, request_timeout=60), prefix, templates=False)


@contextmanager
def backend_server(backend: str, data_dir: Path, es_url: str = ES_URL) -> Iterator[Server]:
    data_dir.mkdir(parents=True, exist_ok=True)
    if backend == "embedded":
        yield Server(data_dir)
        return
    with redis_db() as db:
        prefix = f"sst-test{db}"  # one per database: its templates are installed once
        flush_distributed(db, prefix, es_url)  # fails loudly when Redis or ES is not running
        try:
            yield Server(data_dir, backend="distributed", redis_db=db, prefix=prefix, es_url=es_url)
        finally:
            flush_distributed(db, prefix, es_url)


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    backend = getattr(request, "param", "embedded")
    with backend_server(backend, tmp_path / "data") as srv:
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()
