"""Embedded mode, end to end: accepted events/s, then processed events/s.

Usage: python scripts/bench_embedded.py [--duration 15] [--connections 32] [--no-compression]
           [--workers 1]

1. starts `stacksift serve` on a fresh data dir while this script holds the
   worker lock, so the run measures ingest alone (nothing is processed);
2. drives it with scripts/bench_ingest.py (real sentry-sdk envelopes, wrk);
3. releases the lock and times the drain of the inbox: processed events/s;
4. drives it again with processing running, to show accepted/s and the
   processing lag when both share the process.
CPU and RSS are those of the whole process tree (with --workers N: the main
process, which runs the worker thread, and its N uvicorn workers).
Prints each figure and a final JSON line. scripts/bench_all.py measures the
same server next to the bare app and distributed mode, with freshness and a
sustained phase; this script is the one that separates ingest from processing.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import procs
from bench.deploy import Embedded, run_ingest

SCRIPTS = Path(__file__).resolve().parent
DRAIN_TIMEOUT_S = 900.0


def bench(dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    extra = ["--no-compression"] if args.no_compression else []
    return run_ingest(dsn, args.duration, args.connections, *extra)


def rss_mib(root: int) -> int:
    return sum(s.rss_bytes for s in procs.tree_stats(root)) // procs.MIB


def drained(dep: Embedded) -> float:
    seconds = dep.wait_drained(DRAIN_TIMEOUT_S)
    if seconds is None:
        raise SystemExit(f"inbox not empty after {DRAIN_TIMEOUT_S:g}s")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-compression", action="store_true")
    parser.add_argument("--workers", type=int, default=1, help="stacksift serve --workers")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="stacksift-bench-"))
    try:
        with open(data / "worker.lock", "a") as lock, Embedded(data, args.workers) as dep:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the server's worker thread waits for it
            dsn = dep.start().dsn
            root = dep.roots()["api"]
            rss_start = rss_mib(root)
            cpu0 = procs.tree_cpu(root)
            ingest_only = bench(dsn, args)
            cpu_ingest = procs.tree_cpu(root) - cpu0
            backlog = dep.backlog()
            print(
                f"ingest only: {ingest_only['accepted_per_s']} accepted/s, "
                f"p50 {ingest_only['latency_ms']['p50']} ms, "
                f"p99 {ingest_only['latency_ms']['p99']} ms, "
                f"{backlog} events waiting, "
                f"CPU {1000 * cpu_ingest / max(ingest_only['accepted'], 1):.3f} s "
                "per 1,000 accepted"
            )

            cpu1 = procs.tree_cpu(root)
            fcntl.flock(lock, fcntl.LOCK_UN)
            drain = drained(dep)
            cpu_drain = procs.tree_cpu(root) - cpu1
            print(
                f"processing: {backlog} events in {drain:.1f} s = "
                f"{backlog / drain:.0f} processed/s, "
                f"CPU {1000 * cpu_drain / max(backlog, 1):.3f} s per 1,000 processed"
            )

            mixed = bench(dsn, args)
            lag_backlog = dep.backlog()
            lag = drained(dep)
            print(
                f"ingest + processing: {mixed['accepted_per_s']} accepted/s, "
                f"p99 {mixed['latency_ms']['p99']} ms, backlog at end {lag_backlog}, "
                f"drained {lag:.1f} s later"
            )
            rss_end = rss_mib(root)
            print(f"RSS (all processes): {rss_start} MiB at start, {rss_end} MiB at end")
            print(
                json.dumps(
                    {
                        "ingest_only": ingest_only,
                        "processed_per_s": round(backlog / drain),
                        "mixed": mixed,
                        "rss_mib": [rss_start, rss_end],
                    }
                )
            )
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
