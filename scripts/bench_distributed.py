"""End-to-end benchmark of distributed mode: 1 API process, N workers, Redis, Elasticsearch.

Usage (Redis and Elasticsearch from scripts/services.sh must be running):
  python scripts/bench_distributed.py [--workers 1] [--duration 20] [--connections 16]

Two measurements, each on a fresh layout (index prefix ``ssbench``, Redis database 11):
  live:  workers run while scripts/bench_ingest.py drives the API; processed events/s is
         everything accepted divided by the time from the first processed event until the
         queue is empty again (so a backlog left at the end of the load counts against it).
  drain: workers are stopped while the load runs; then they start and drain the backlog;
         processed events/s = backlog / drain time (the workers' ceiling).
  latency (--mode latency): a steady --rate of events; how long from each 200 until the
         event is searchable (p50/p99).
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import redis
from elasticsearch import Elasticsearch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from app.storage.elastic_setup import drop_everything  # noqa: E402

BIN = Path(sys.executable).parent / "stacksift"
PREFIX = "ssbench"
REDIS = "redis://127.0.0.1:6379/11"
ES = "http://127.0.0.1:9200"
ADMIN = "bench-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Deployment:
    def __init__(self, data_dir: Path, api_processes: int = 1) -> None:
        self.api_processes = api_processes
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("STACKSIFT_")}
        self.env.update(
            STACKSIFT_REDIS_URL=REDIS,
            STACKSIFT_ELASTICSEARCH_URL=ES,
            STACKSIFT_INDEX_PREFIX=PREFIX,
            STACKSIFT_ADMIN_TOKEN=ADMIN,
            STACKSIFT_BASE_URL=self.url,
            STACKSIFT_DATA_DIR=str(data_dir),
            STACKSIFT_RATE_LIMIT="10000000/minute",
            STACKSIFT_LOG_LEVEL="WARNING",
        )
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def reset(self) -> None:
        redis.Redis.from_url(REDIS).flushdb()
        drop_everything(Elasticsearch(ES, request_timeout=120), PREFIX, templates=False)

    def start_api(self) -> None:
        log = open(self.data_dir / "api.log", "ab")  # noqa: SIM115 - the child keeps it
        self.api = subprocess.Popen(
            [str(BIN), "serve", "--port", str(self.port), "--workers", str(self.api_processes)],
            env=self.env,
            stdout=log,
            stderr=log,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("API did not start")

    def start_workers(self, count: int) -> None:
        for i in range(count):
            log = open(self.data_dir / f"worker-{i}.log", "ab")  # noqa: SIM115
            self.workers.append(
                subprocess.Popen([str(BIN), "worker"], env=self.env, stdout=log, stderr=log)
            )

    def stop_workers(self) -> None:
        for proc in self.workers:
            proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            proc.wait(timeout=60)
        self.workers = []

    def stop(self) -> None:
        self.stop_workers()
        if self.api:
            self.api.send_signal(signal.SIGTERM)
            self.api.wait(timeout=60)

    def dsn(self) -> str:
        out = subprocess.run(
            [str(BIN), "project", "create", "bench", "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return str(json.loads(out.stdout)["dsn"])

    def depth(self) -> int:
        return int(httpx.get(self.url + "/readyz", timeout=30).json()["queue_depth"])

    def counts(self, dsn: str) -> dict[str, int]:
        resp = httpx.get(
            f"{self.url}/api/v1/projects/{dsn.rsplit('/', 1)[-1]}/outcomes",
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=30,
        )
        return dict(resp.json()["counts"])

    def wait_drained(self, timeout: float = 900) -> float:
        deadline = time.time() + timeout
        while self.depth() > 0:
            if time.time() > deadline:
                raise RuntimeError("queue did not drain")
            time.sleep(0.2)
        return time.time()


def ingest(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/bench_ingest.py"),
            "--dsn",
            dsn,
            "--duration",
            str(args.duration),
            "--connections",
            str(args.connections),
            "--warmup",
            "2",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT / "scripts",
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        dep = Deployment(Path(tmp), args.api_processes)
        dep.reset()
        dep.start_api()
        try:
            dsn = dep.dsn()
            samples: list[tuple[float, int]] = []
            stop = threading.Event()

            def sample() -> None:  # (time, processed so far), to see when processing started
                while not stop.wait(0.25):
                    samples.append((time.time(), dep.counts(dsn).get("processed", 0)))

            if mode == "live":
                dep.start_workers(args.workers)
                threading.Thread(target=sample, daemon=True).start()
            t0 = time.time()
            load = ingest(dsn, args)
            t_load = time.time()
            backlog = dep.depth()
            if mode == "drain":
                t_start = time.time()
                dep.start_workers(args.workers)
                t_end = dep.wait_drained()
                elapsed = t_end - t_start
            else:
                t_end = dep.wait_drained()
                stop.set()
                t_first = next((t for t, n in samples if n > 0), t0)
                elapsed = t_end - t_first  # first event processed -> queue empty again
            counts = dep.counts(dsn)
            processed = counts.get("processed", 0)
            return {
                "mode": mode,
                "api_processes": args.api_processes,
                "workers": args.workers,
                "accepted_per_s_during_load": load.get("accepted_per_s"),
                "ingest_p99_ms": load.get("latency_ms", {}).get("p99"),
                "accepted_total": counts.get("accepted", 0),
                "processed_total": processed,
                "backlog_at_end_of_load": backlog,
                "load_seconds": round(t_load - t0, 1),
                "seconds_until_drained": round(elapsed, 1),
                "processed_per_s": round((processed if mode == "live" else backlog) / elapsed, 1),
            }
        finally:
            dep.stop()
            dep.reset()


def latency(args: argparse.Namespace) -> dict[str, Any]:
    """Events sent at a steady ``--rate``; for a sample of them, the time from the 200 until
    ``GET /events/{id}`` finds it (searchable: stored, counted and refreshed)."""
    with tempfile.TemporaryDirectory() as tmp:
        dep = Deployment(Path(tmp))
        dep.reset()
        dep.start_api()
        try:
            out = subprocess.run(
                [str(BIN), "project", "create", "bench", "--json"],
                env=dep.env,
                capture_output=True,
                text=True,
                check=True,
            )
            project = json.loads(out.stdout)
            dep.start_workers(args.workers)
            time.sleep(2)
            ingest_url = f"{dep.url}/api/v1/projects/{project['id']}/events"
            ingest_headers = {"Authorization": f"Bearer {project['ingest_key']}"}
            read = {"Authorization": f"Bearer {project['read_token']}"}
            per_request = 10
            interval = per_request / args.rate
            delays: list[float] = []
            lock = threading.Lock()

            def watch(event_id: str, accepted: float) -> None:
                with httpx.Client(timeout=10) as client:
                    url = f"{dep.url}/api/v1/projects/{project['id']}/events/{event_id}"
                    while client.get(url, headers=read).status_code != 200:
                        time.sleep(0.01)
                with lock:
                    delays.append(time.time() - accepted)

            watchers = []
            body = {"message": "latency probe", "level": "error", "tags": {"bench": "1"}}
            with httpx.Client(timeout=10) as client:
                deadline = time.time() + args.duration
                next_at = time.time()
                n = 0
                while time.time() < deadline:
                    events = [body | {"event_id": os.urandom(16).hex()} for _ in range(per_request)]
                    resp = client.post(ingest_url, json={"events": events}, headers=ingest_headers)
                    resp.raise_for_status()
                    if n % 10 == 0:  # one probe every 100 events
                        t = threading.Thread(
                            target=watch, args=(events[0]["event_id"], time.time())
                        )
                        t.start()
                        watchers.append(t)
                    n += 1
                    next_at += interval
                    time.sleep(max(0.0, next_at - time.time()))
            for t in watchers:
                t.join(timeout=60)
            delays.sort()
            return {
                "mode": "latency",
                "workers": args.workers,
                "rate_per_s": args.rate,
                "probes": len(delays),
                "searchable_after_ms": {
                    "p50": round(delays[len(delays) // 2] * 1000),
                    "p99": round(delays[int(len(delays) * 0.99)] * 1000),
                    "max": round(delays[-1] * 1000),
                },
            }
        finally:
            dep.stop()
            dep.reset()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--api-processes", type=int, default=1, help="stacksift serve --workers")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--mode", choices=["live", "drain", "both", "latency"], default="both")
    parser.add_argument("--rate", type=float, default=500.0, help="events/s (latency mode)")
    args = parser.parse_args()
    if args.mode == "latency":
        print(json.dumps(latency(args), indent=2))
        return 0
    modes = ["live", "drain"] if args.mode == "both" else [args.mode]
    print(json.dumps([run(args, m) for m in modes], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
