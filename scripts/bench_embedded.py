"""Embedded mode, end to end: accepted events/s, then processed events/s.

Usage: python scripts/bench_embedded.py [--duration 15] [--connections 32] [--no-compression]

1. starts `stacksift serve` on a fresh data dir while this script holds the
   worker lock, so the run measures ingest alone (nothing is processed);
2. drives it with scripts/bench_ingest.py (real sentry-sdk envelopes, wrk);
3. releases the lock and times the drain of the inbox: processed events/s;
4. drives it again with processing running, to show accepted/s and the
   processing lag when both share the process.
Prints each figure and a final JSON line.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "stacksift"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counts(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db, timeout=30) as conn:
        inbox = conn.execute("SELECT count(*) FROM inbox").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    return inbox, events


def bench(dsn: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_ingest.py"), "--dsn", dsn,
           "--duration", str(args.duration), "--connections", str(args.connections)]
    if args.no_compression:
        cmd.append("--no-compression")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-compression", action="store_true")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="stacksift-bench-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACKSIFT_")}
    env.update(STACKSIFT_DATA_DIR=str(data), STACKSIFT_RATE_LIMIT="1000000000/minute")
    lock = open(data / "worker.lock", "a")  # noqa: SIM115 - held for the whole run
    fcntl.flock(lock, fcntl.LOCK_EX)
    log = open(data / "server.log", "w")  # noqa: SIM115 - the child writes it
    proc = subprocess.Popen([str(BIN), "serve", "--port", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        dsn = None
        while time.time() < deadline and not dsn:
            time.sleep(0.2)
            found = re.search(r"DSN \(point any Sentry SDK here\): (\S+)",
                              (data / "server.log").read_text())
            dsn = found.group(1) if found else None
        if not dsn:
            raise SystemExit("server did not start")
        time.sleep(1.0)
        rss_start = rss_kb(proc.pid)
        cpu0 = cpu_seconds(proc.pid)
        ingest_only = bench(dsn, args)
        cpu_ingest = cpu_seconds(proc.pid) - cpu0
        backlog, _ = counts(data / "stacksift.db")
        print(f"ingest only: {ingest_only['accepted_per_s']} accepted/s, "
              f"p50 {ingest_only['latency_ms']['p50']} ms, "
              f"p99 {ingest_only['latency_ms']['p99']} ms, "
              f"{backlog} events waiting, "
              f"CPU {1000 * cpu_ingest / max(ingest_only['accepted'], 1):.3f} s per 1,000 accepted")

        cpu1 = cpu_seconds(proc.pid)
        t0 = time.time()
        fcntl.flock(lock, fcntl.LOCK_UN)
        while counts(data / "stacksift.db")[0]:
            time.sleep(0.05)
        drain = time.time() - t0
        cpu_drain = cpu_seconds(proc.pid) - cpu1
        print(f"processing: {backlog} events in {drain:.1f} s = {backlog / drain:.0f} processed/s, "
              f"CPU {1000 * cpu_drain / backlog:.3f} s per 1,000 processed")

        mixed = bench(dsn, args)
        t1 = time.time()
        lag_backlog = counts(data / "stacksift.db")[0]
        while counts(data / "stacksift.db")[0]:
            time.sleep(0.05)
        print(f"ingest + processing: {mixed['accepted_per_s']} accepted/s, "
              f"p99 {mixed['latency_ms']['p99']} ms, backlog at end {lag_backlog}, "
              f"drained {time.time() - t1:.1f} s later")
        rss_end = rss_kb(proc.pid)
        print(f"RSS: {rss_start // 1024} MiB at start, {rss_end // 1024} MiB at end")
        print(json.dumps({
            "ingest_only": ingest_only, "processed_per_s": round(backlog / drain),
            "mixed": mixed, "rss_mib": [rss_start // 1024, rss_end // 1024],
        }))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
