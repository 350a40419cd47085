"""End-to-end benchmark of distributed mode: 1 API process, N workers, Redis, Elasticsearch.

Usage (Redis and Elasticsearch from scripts/services.sh must be running):
  python scripts/bench_distributed.py [--workers 1] [--duration 20] [--connections 16]

Two measurements, each on a fresh layout (index/key prefix ``ssbench-<run>``, Redis database 12,
removed at the end; scripts/bench_all.py measures live processing, freshness and a sustained
phase next to embedded mode and the bare app):
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
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from bench.deploy import ADMIN_TOKEN, Distributed, run_ingest

SCRIPTS = Path(__file__).resolve().parent
DRAIN_TIMEOUT_S = 900.0


def deployment(tmp: str, args: argparse.Namespace, workers: int) -> Distributed:
    """Its own index/key prefix (``ssbench-...``), removed when the run ends."""
    return Distributed(Path(tmp), args.api_processes, workers, prefix_stem="ssbench")


def outcomes(dep: Distributed, project_id: int) -> dict[str, int]:
    resp = httpx.get(
        f"{dep.url}/api/v1/projects/{project_id}/outcomes",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30,
    )
    return dict(resp.json()["counts"])


def wait_drained(dep: Distributed) -> float:
    if dep.wait_drained(DRAIN_TIMEOUT_S) is None:
        raise RuntimeError("queue did not drain")
    return time.time()


def ingest(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    return run_ingest(dsn, args.duration, args.connections, "--warmup", "2")


def run(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, deployment(tmp, args, workers=0) as dep:
        project = dep.start()
        dsn = project.dsn
        samples: list[tuple[float, int]] = []
        stop = threading.Event()

        def sample() -> None:  # (time, processed so far), to see when processing started
            while not stop.wait(0.25):
                samples.append((time.time(), outcomes(dep, project.id).get("processed", 0)))

        if mode == "live":
            dep.start_workers(args.workers)
            threading.Thread(target=sample, daemon=True).start()
        t0 = time.time()
        load = ingest(dsn, args)
        t_load = time.time()
        backlog = dep.backlog()
        if mode == "drain":
            t_start = time.time()
            dep.start_workers(args.workers)
            t_end = wait_drained(dep)
            elapsed = t_end - t_start
        else:
            t_end = wait_drained(dep)
            stop.set()
            t_first = next((t for t, n in samples if n > 0), t0)
            elapsed = t_end - t_first  # first event processed -> queue empty again
        counts = outcomes(dep, project.id)
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


def latency(args: argparse.Namespace) -> dict[str, Any]:
    """Events sent at a steady ``--rate``; for a sample of them, the time from the 200 until
    ``GET /events/{id}`` finds it (searchable: stored, counted and refreshed)."""
    with tempfile.TemporaryDirectory() as tmp, deployment(tmp, args, args.workers) as dep:
        project = dep.start()
        time.sleep(2)
        ingest_url = f"{dep.url}/api/v1/projects/{project.id}/events"
        ingest_headers = {"Authorization": f"Bearer {project.ingest_key}"}
        read = {"Authorization": f"Bearer {project.read_token}"}
        per_request = 10
        interval = per_request / args.rate
        delays: list[float] = []
        lock = threading.Lock()

        def watch(event_id: str, accepted: float) -> None:
            with httpx.Client(timeout=10) as client:
                url = f"{dep.url}/api/v1/projects/{project.id}/events/{event_id}"
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
                    t = threading.Thread(target=watch, args=(events[0]["event_id"], time.time()))
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
