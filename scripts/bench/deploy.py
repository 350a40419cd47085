"""stacksift deployments for the benchmarks, each on storage of its own that goes away after.

``Embedded``: one ``stacksift serve`` on a fresh data dir (SQLite inbox + worker thread).
``Distributed``: ``stacksift serve`` plus ``stacksift worker`` processes on the shared
Redis and Elasticsearch of scripts/services.sh, under an index/key prefix unique to
the run, so a benchmark never touches anyone else's data and leaves nothing behind.

Both answer the questions a benchmark asks: how many events are stored and
searchable, how many wait in the queue, and which processes to measure.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .launch import free_port
from .procs import Child, http_ok
from .wrk_runner import BenchError

ROOT = Path(__file__).resolve().parents[2]
STACKSIFT = str(Path(sys.executable).parent / "stacksift")
ADMIN_TOKEN = "bench-admin-token"
REDIS_URL = "redis://127.0.0.1:6379"
ES_URL = "http://127.0.0.1:9200"
# Redis databases 1-10, 13 and 15 belong to the test suite (tests/conftest.py); the
# benchmarks use this one, with keys prefixed per run on top of that.
BENCH_REDIS_DB = 12


@dataclass(frozen=True)
class Project:
    id: int
    dsn: str
    ingest_key: str
    read_token: str


class Deployment:
    kind = ""

    def __init__(self, data_dir: Path, api_workers: int = 1) -> None:
        self.data_dir = data_dir
        self.api_workers = api_workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("STACKSIFT_")}
        self.env.update(
            STACKSIFT_DATA_DIR=str(data_dir),
            STACKSIFT_ADMIN_TOKEN=ADMIN_TOKEN,
            STACKSIFT_BASE_URL=self.url,
            STACKSIFT_RATE_LIMIT="1000000000/minute",  # measure the server, not the limiter
            STACKSIFT_LOG_LEVEL="WARNING",
        )
        self.children: dict[str, Child] = {}
        self.project: Project | None = None

    # -- life cycle ---------------------------------------------------------------------

    def start(self) -> Project:
        """Create the project, then start the server(s); returns the project."""
        self.project = self.create_project("bench")
        self.start_api()
        return self.project

    def create_project(self, name: str) -> Project:
        done = subprocess.run(
            [STACKSIFT, "project", "create", name, "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise BenchError(f"stacksift project create failed: {done.stderr.strip()[-1000:]}")
        data = json.loads(done.stdout)
        return Project(int(data["id"]), data["dsn"], data["ingest_key"], data["read_token"])

    def start_api(self) -> None:
        command = [STACKSIFT, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--workers", str(self.api_workers)]
        api = Child("stacksift serve", command, env=self.env, log=self.data_dir / "api.log")
        self.children["api"] = api
        api.wait_until(lambda: http_ok(self.url + "/readyz"), timeout_s=120)
        if self.api_workers > 1:
            time.sleep(1.0)  # every uvicorn worker imported and listening before load starts

    def stop(self) -> None:
        children = list(reversed(self.children.values()))
        for child in children:
            child.terminate()
        for child in children:
            child.stop()
        self.children.clear()

    def cleanup(self) -> None:
        """Remove what the run stored outside its data dir (nothing for embedded)."""

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()

    # -- what a benchmark reads ---------------------------------------------------------

    def roots(self) -> dict[str, int]:
        """Process trees to measure: name -> pid of the tree's root."""
        return {name: child.pid for name, child in self.children.items()}

    def stored(self) -> int:
        """Events stored and searchable."""
        raise NotImplementedError

    def backlog(self) -> int:
        """Accepted events not processed yet."""
        raise NotImplementedError

    def wait_drained(self, timeout_s: float) -> float | None:
        """Seconds until the queue is empty, or None when it is not within ``timeout_s``."""
        start = time.monotonic()
        while self.backlog() > 0:
            if time.monotonic() - start > timeout_s:
                return None
            time.sleep(0.1)
        return time.monotonic() - start


class Embedded(Deployment):
    """``stacksift serve --workers N``: with N > 1 the main process runs the worker thread
    and the N uvicorn worker processes only serve."""

    kind = "embedded"

    def _one(self, file: str, sql: str) -> int:
        db = self.data_dir / file
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            return int(conn.execute(sql).fetchone()[0])

    def stored(self) -> int:
        # count(*) walks the smallest index (a few ms per 100,000 events).
        return self._one("stacksift.db", "SELECT count(*) FROM events")

    def backlog(self) -> int:
        # The trigger-kept row count the server reads itself: count(*) on the inbox reads
        # every row (~1 page each), which at 0.1 s polls took a core from the server.
        return self._one("inbox.db", "SELECT n FROM inbox_size")


class Distributed(Deployment):
    """API ``stacksift serve`` + ``rq_workers`` x ``stacksift worker``."""

    kind = "distributed"

    def __init__(
        self,
        data_dir: Path,
        api_workers: int = 1,
        rq_workers: int = 2,
        redis_db: int = BENCH_REDIS_DB,
        es_url: str = ES_URL,
        prefix_stem: str = "bench",
    ) -> None:
        super().__init__(data_dir, api_workers)
        import redis
        from elasticsearch import Elasticsearch

        self.rq_workers = rq_workers
        # Unique per run: indices, templates and Redis keys of this run only.
        self.prefix = f"{prefix_stem}-{int(time.time()):x}-{secrets.token_hex(3)}"
        self.redis_url = f"{REDIS_URL}/{redis_db}"
        self.redis = redis.Redis.from_url(self.redis_url)
        self.es = Elasticsearch(es_url, request_timeout=120)
        self.env.update(
            STACKSIFT_REDIS_URL=self.redis_url,
            STACKSIFT_ELASTICSEARCH_URL=es_url,
            STACKSIFT_INDEX_PREFIX=self.prefix,
        )

    def start(self) -> Project:
        project = super().start()
        self.start_workers(self.rq_workers)
        return project

    def workers(self) -> list[str]:
        return [name for name in self.children if name.startswith("worker-")]

    def start_workers(self, count: int) -> None:
        """``count`` more ``stacksift worker`` processes; returns once RQ lists them."""
        first = len(self.workers())
        for i in range(first, first + count):
            name = f"worker-{i + 1}"
            self.children[name] = Child(
                f"stacksift worker {i + 1}",
                [STACKSIFT, "worker"],
                env=self.env,
                log=self.data_dir / f"{name}.log",
            )
        self._wait_workers_registered(first + count)

    def stop_workers(self) -> None:
        """SIGTERM: each finishes the batch in hand (nothing is lost), then exits."""
        workers = [self.children.pop(name) for name in self.workers()]
        for child in workers:
            child.terminate()
        for child in workers:
            child.stop()

    def _wait_workers_registered(self, expected: int, timeout_s: float = 60.0) -> None:
        from rq import Worker

        queue = f"{self.prefix}-process"

        def registered() -> int:
            workers = Worker.all(connection=self.redis)
            return sum(1 for w in workers if queue in w.queue_names())

        deadline = time.monotonic() + timeout_s
        while registered() < expected:
            for name, child in self.children.items():
                if child.proc.poll() is not None:
                    raise BenchError(f"{name} exited with code {child.proc.returncode}")
            if time.monotonic() > deadline:
                raise BenchError(f"{expected} RQ workers not up within {timeout_s:g}s")
            time.sleep(0.2)

    def stored(self) -> int:
        found = self.es.count(index=f"{self.prefix}-events-*", ignore_unavailable=True)
        return int(found["count"])

    def backlog(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(f"{self.prefix}:inbox")
        pipe.zcard(f"{self.prefix}:parked")
        return int(sum(pipe.execute()))

    def cleanup(self) -> None:
        sys.path.insert(0, str(ROOT))
        from app.storage.elastic_setup import drop_everything

        drop_everything(self.es, self.prefix, templates=True)
        self.delete_redis_keys()

    def redis_keys(self) -> list[bytes]:
        """Keys of this run: ``<prefix>:*``, the RQ queue ``<prefix>-process`` with its
        registries, and the RQ jobs and workers that belong to that queue."""
        queue = f"{self.prefix}-process"
        keys = [*self.redis.scan_iter(match=f"{self.prefix}:*", count=1000)]
        keys += self.redis.scan_iter(match=f"rq:*{queue}*", count=1000)
        for pattern, field in (("rq:job:*", b"origin"), ("rq:worker:*", b"queues")):
            for key in self.redis.scan_iter(match=pattern, count=1000):
                if self.redis.type(key) == b"hash":
                    value: Any = self.redis.hget(key, field) or b""
                    if queue.encode() in value.split(b","):
                        keys.append(key)
        return keys

    def delete_redis_keys(self) -> None:
        keys = self.redis_keys()
        for start in range(0, len(keys), 500):
            self.redis.delete(*keys[start : start + 500])
        self.redis.srem("rq:queues", f"rq:queue:{self.prefix}-process")
        for key in self.redis.smembers("rq:workers"):
            if not self.redis.exists(key):
                self.redis.srem("rq:workers", key)  # entries of our stopped workers


def run_ingest(dsn: str, duration: float, connections: int, *extra: str) -> dict[str, Any]:
    """Drive ``dsn`` with scripts/bench_ingest.py (real SDK envelopes, wrk); its JSON result."""
    scripts = Path(__file__).resolve().parents[1]
    command = [sys.executable, str(scripts / "bench_ingest.py"), "--dsn", dsn]
    command += ["--duration", str(duration), "--connections", str(connections), *extra]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=scripts)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))
