"""Issue 8 in one command: bare FastAPI/uvicorn, stacksift embedded and stacksift
distributed, measured the same way in one run and printed side by side.

Usage:
  python scripts/bench_all.py [--only bare,embedded,distributed] [--duration 20]
      [--sustain 300] [--connections 32] [--workers 2] [--rq-workers 2] [--brotli]

For each target, with real sentry-sdk envelopes (6-9 KB, a fresh event id per
request) sent by wrk at a fixed number of connections (scripts/bench_ingest.py's
pools and Lua script):

1. warm-up (--warmup s), then the queue is drained and RSS is taken ("start");
2. burst (--duration s): accepted events/s and p50/p99 from wrk; then the queue
   drains; processed events/s = events stored and searchable (embedded: rows of
   the events table; distributed: Elasticsearch count) from the start of the
   burst until the queue is empty, over that time; CPU s per 1,000 events =
   CPU of every process of the deployment over that time / events stored;
3. sustained load (--sustain s, same concurrency unless --sustain-connections):
   accepted and processed events/s, the backlog left when the load stops, RSS
   of each process at the end and its growth since "start", and its peak in the
   first and in the last third of the load (samples every --sample-every s): the
   growth under load, flagged above 10 % (see ``under_load``).

Beside each burst: connections and cores per API process, cores per role, and the
host's speed just before and after (scripts/bench/hostspeed.py), because this
shared box's speed moves by tens of percent from one minute to the next.

Freshness (acceptance -> searchable, p50/p99) comes from a probe that posts a
uniquely tagged event every 200 ms during the load and searches for it with the
read API until found (scripts/bench/probe.py). The human table comes first, the
last line of output is the JSON result. Redis and Elasticsearch
(scripts/services.sh start, run by this script when distributed is measured)
are shared: their CPU includes whatever else uses them, and the distributed run
uses its own index/key prefix, deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from bench import hostspeed, procs
from bench.deploy import BENCH_REDIS_DB, ROOT, Deployment, Distributed, Embedded
from bench.events import generate_envelopes
from bench.launch import bare_app_child
from bench.pool import Pool, write_compressed_pool, write_splice_pool
from bench.probe import FreshnessProbe
from bench.wrk_runner import BenchError, ensure_wrk, run_wrk
from bench_ingest import POOL_MAX, distribution, summarise, target_for

TARGETS = ("bare", "embedded", "distributed")
GOALS = {
    "embedded_vs_bare": 0.60,  # embedded accepted/s >= 60 % of bare, same run
    "embedded_p99_ms": 20.0,
    "embedded_processed_per_s": 2000.0,
    "distributed_processed_per_s": 1000.0,
    "rss_growth_pct": 10.0,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(TARGETS), help="comma-separated targets")
    parser.add_argument("--duration", type=float, default=20.0, help="measured burst, seconds")
    parser.add_argument(
        "--sustain", type=float, default=300.0, help="sustained load, seconds (0: skip)"
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured load, seconds")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument(
        "--sustain-connections", type=int, default=0, help="for the sustained load (0: same)"
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (wrk shares the cores)")
    parser.add_argument(
        "--workers", type=int, default=2, help="embedded: stacksift serve --workers"
    )
    parser.add_argument(
        "--bare-workers", type=int, default=0, help="uvicorn workers of the bare app (0: --workers)"
    )
    parser.add_argument(
        "--api-workers", type=int, default=1, help="distributed: stacksift serve --workers"
    )
    parser.add_argument("--rq-workers", type=int, default=2, help="distributed: stacksift worker")
    parser.add_argument("--redis-db", type=int, default=BENCH_REDIS_DB)
    compression = parser.add_mutually_exclusive_group()
    compression.add_argument(
        "--brotli", action="store_true", help="brotli bodies, as the Python SDK sends them"
    )
    compression.add_argument(
        "--no-compression", action="store_true", help="uncompressed bodies (the default)"
    )
    parser.add_argument("--events", type=int, default=500, help="distinct SDK events to build")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--probe-interval", type=float, default=0.2, help="seconds between probes")
    parser.add_argument("--probe-poll", type=float, default=0.05, help="seconds between searches")
    parser.add_argument(
        "--drain-timeout", type=float, default=600.0, help="longest wait for an empty queue"
    )
    parser.add_argument(
        "--sample-every", type=float, default=10.0, help="backlog/RSS samples in the sustain"
    )
    parser.add_argument("--keep", action="store_true", help="keep data dirs and logs")
    parser.add_argument("--json-out", type=Path, help="also write the result JSON here")
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown or not args.targets:
        parser.error(f"--only takes a subset of {','.join(TARGETS)}, got {args.only!r}")
    positive = ("duration", "connections", "threads", "workers", "api_workers", "rq_workers")
    for name in (*positive, "events", "probe_interval", "probe_poll", "sample_every"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    for name in ("sustain", "warmup", "sustain_connections", "bare_workers", "drain_timeout"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    args.compression = "br" if args.brotli else "none"
    args.sustain_connections = args.sustain_connections or args.connections
    args.bare_workers = args.bare_workers or args.workers
    return args


# -- load ---------------------------------------------------------------------------------


class Load:
    """wrk against one target with bench_ingest's envelopes, pools and Lua script."""

    def __init__(self, dsn: str, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.compression = args.compression
        self.envelopes = generate_envelopes(args.events, dsn, seed=args.seed)
        self.event_bytes = distribution([len(e) for e in self.envelopes])
        # Warm-up and uncompressed runs splice a fresh id into every body: ids never repeat.
        self.splice = write_splice_pool(self.envelopes, workdir)
        self.plain_target = target_for(dsn, None)
        self.target = target_for(dsn, None if self.compression == "none" else self.compression)
        self.rate = 0.0  # accepted/s of the last run: sizes the next compressed pool

    def warm(self, seconds: float) -> None:
        if seconds > 0:
            raw = self._wrk(self.plain_target, self.splice, seconds, self.args.connections)
            self.rate = raw["requests"] / (raw["duration_us"] / 1e6)

    def run(self, name: str, seconds: float, connections: int) -> dict[str, Any]:
        pool = self.splice
        if self.compression != "none":
            # One pre-compressed body per request expected (compressed bodies cannot
            # get a new id inside wrk); ids repeat only if the run outlasts the pool.
            size = min(POOL_MAX, max(len(self.envelopes), int(2 * (self.rate or 4000) * seconds)))
            print(f"  pre-compressing {size} {self.compression} bodies ...", flush=True)
            pool = write_compressed_pool(
                self.envelopes, self.compression, size, self.workdir, name=name
            )
        try:
            raw = self._wrk(self.target, pool, seconds, connections)
        finally:
            if pool is not self.splice:
                pool.bin_path.unlink(missing_ok=True)
                pool.idx_path.unlink(missing_ok=True)
        result = summarise(raw, pool, self.compression)
        self.rate = result["accepted_per_s"] or self.rate
        return result

    def _wrk(self, target: Any, pool: Pool, seconds: float, connections: int) -> dict[str, Any]:
        return run_wrk(
            target,
            pool,
            duration_s=seconds,
            connections=connections,
            threads=self.args.threads,
            nonce=secrets.token_hex(4),
        )


# -- measurements -------------------------------------------------------------------------


@dataclass
class Snapshot:
    t: float
    cpu: dict[str, float]  # tree or service name -> CPU seconds so far
    cpu_roles: dict[str, float]  # "tree/role" -> CPU seconds so far (role: procs.role)
    cpu_pids: dict[int, float]  # pid -> CPU seconds so far (its own, not its tree's)
    rss: dict[int, tuple[str, str, int]]  # pid -> (tree name, role, bytes)
    stored: int | None
    backlog: int | None


@dataclass
class Subject:
    """What is measured for one target: its process trees and, if any, its storage."""

    name: str
    port: int  # where the load generator connects
    children: dict[str, procs.Child]
    deployment: Deployment | None = None
    services: dict[str, int] = field(default_factory=dict)  # redis/elasticsearch pids

    @property
    def roots(self) -> dict[str, int]:
        return {name: child.pid for name, child in self.children.items()}

    def check_alive(self) -> None:
        """A server that died mid-run would make every later figure meaningless."""
        for name, child in self.children.items():
            if child.proc.poll() is not None:
                raise BenchError(
                    f"{self.name}: {name} exited with code {child.proc.returncode} during the "
                    "run (see its log with --keep)"
                )

    def snapshot(self) -> Snapshot:
        cpu: dict[str, float] = {}
        roles: dict[str, float] = {}
        pids: dict[int, float] = {}
        rss: dict[int, tuple[str, str, int]] = {}
        for tree_name, root in self.roots.items():
            stats = procs.tree_stats(root)
            cpu[tree_name] = sum(s.cpu_s for s in stats)
            for s in stats:
                role = procs.role(s.pid)
                rss[s.pid] = (tree_name, role, s.rss_bytes)
                key = f"{tree_name}/{role}"
                roles[key] = roles.get(key, 0.0) + s.cpu_s
                pids[s.pid] = s.cpu_s
        for service, pid in self.services.items():
            cpu[service] = sum(s.cpu_s for s in procs.tree_stats(pid))
        stored = backlog = None
        if self.deployment is not None:
            stored, backlog = self.deployment.stored(), self.deployment.backlog()
        return Snapshot(time.monotonic(), cpu, roles, pids, rss, stored, backlog)

    def connections(self) -> dict[int, int]:
        """Connections to the target per process that holds any."""
        pids = [pid for root in self.roots.values() for pid in procs.tree(root)]
        return {pid: n for pid, n in procs.connections(pids, self.port).items() if n}

    def own_cpu(self, snap: Snapshot) -> float:
        """CPU of the target's own processes (not the shared Redis/Elasticsearch)."""
        return sum(snap.cpu[name] for name in self.roots if name in snap.cpu)


def per_1000(cpu_s: float, events: int | None) -> float | None:
    return round(1000 * cpu_s / events, 3) if events else None


def rate(count: int | None, seconds: float) -> float | None:
    return None if count is None or seconds <= 0 else round(count / seconds, 1)


def cpu_block(subject: Subject, a: Snapshot, b: Snapshot, events: int | None) -> dict[str, Any]:
    """CPU seconds per 1,000 events between two snapshots: the target's processes (and
    each of its trees), and separately each shared service."""
    block: dict[str, Any] = {"events": events, "seconds": round(b.t - a.t, 1)}
    block["total"] = per_1000(subject.own_cpu(b) - subject.own_cpu(a), events)
    for name in [*subject.roots, *subject.services]:
        if name in a.cpu and name in b.cpu:
            block[name] = per_1000(b.cpu[name] - a.cpu[name], events)
    # Where the time goes inside the target: the embedded main process (worker thread)
    # against its uvicorn workers, the API against the RQ workers.
    block["by_role"] = {
        role: per_1000(seconds - a.cpu_roles.get(role, 0.0), events)
        for role, seconds in b.cpu_roles.items()
    }
    return block


def api_processes(spread: dict[int, int], a: Snapshot, b: Snapshot) -> list[dict[str, Any]]:
    """Connections and cores used by each process that served the load.  The kernel
    hashes each connection to one process (a socket per process, SO_REUSEPORT), so the
    split varies from run to run; these figures showed it was not what made some runs
    slow (an even 17/17 run was; docs/benchmarks.md, eighth session)."""
    seconds = b.t - a.t
    return [
        {
            "pid": pid,
            "connections": n,
            "cores": round((b.cpu_pids.get(pid, 0.0) - a.cpu_pids.get(pid, 0.0)) / seconds, 2),
        }
        for pid, n in sorted(spread.items(), key=lambda item: -item[1])
    ]


def under_load(samples: list[dict[str, Any]], pid: int) -> tuple[float, float] | None:
    """Peak RSS of ``pid`` in the first and in the last third of the sustained load.

    "start" is taken idle (after the warm-up's queue drained) and "end" under load, so
    end - start also counts the batch a worker has in hand at that moment: 30-50 MiB for
    an RQ worker's 1,000 events, which comes and goes within a second (worker samples
    over 200 s of load: 138-170 MiB, no trend). Peak against peak, both under the same
    load, is growth: what a leak, a cache without bound or a fragmenting heap would show.
    """
    sizes = [s["rss_by_pid"][pid] for s in samples if pid in s.get("rss_by_pid", {})]
    if len(sizes) < 6:
        return None
    third = len(sizes) // 3
    return max(sizes[:third]), max(sizes[-third:])


def rss_report(
    start: Snapshot,
    middle: Snapshot,
    end: Snapshot,
    limit_pct: float,
    samples: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Per process: RSS after warm-up (start), after the burst and after the sustained
    load (end), and its growth under the sustained load (``under_load``), which is what
    the 10 % bound is checked on when there are enough samples (else end against start).
    A process that grew during the burst but not after it was filling caches; one that
    keeps growing has a leak or a backlog."""
    rows = []
    for pid in sorted(set(start.rss) | set(end.rss)):
        tree_name, role, _ = start.rss.get(pid) or end.rss[pid]
        before = start.rss[pid][2] if pid in start.rss else None
        after = end.rss[pid][2] if pid in end.rss else None
        growth = round(100 * (after - before) / before, 1) if before and after else None
        peaks = under_load(samples or [], pid)
        load_growth = round(100 * (peaks[1] - peaks[0]) / peaks[0], 1) if peaks else None
        judged = growth if load_growth is None else load_growth
        rows.append(
            {
                "tree": tree_name,
                "role": role,
                "pid": pid,
                "start_mib": None if before is None else round(before / procs.MIB, 1),
                "after_burst_mib": round(middle.rss[pid][2] / procs.MIB, 1)
                if pid in middle.rss
                else None,
                "end_mib": None if after is None else round(after / procs.MIB, 1),
                "growth_pct": growth,
                "load_first_peak_mib": peaks[0] if peaks else None,
                "load_last_peak_mib": peaks[1] if peaks else None,
                "load_growth_pct": load_growth,
                "checked_growth_pct": judged,
                "over_limit": judged is not None and judged > limit_pct,
            }
        )
    total_start = sum(v[2] for v in start.rss.values())
    total_end = sum(v[2] for v in end.rss.values())
    growths = [r["growth_pct"] for r in rows if r["growth_pct"] is not None]
    load_growths = [r["load_growth_pct"] for r in rows if r["load_growth_pct"] is not None]
    checked = [r["checked_growth_pct"] for r in rows if r["checked_growth_pct"] is not None]
    return {
        "processes": rows,
        "total_start_mib": round(total_start / procs.MIB, 1),
        "total_end_mib": round(total_end / procs.MIB, 1),
        "max_growth_pct": max(growths) if growths else None,
        "max_load_growth_pct": max(load_growths) if load_growths else None,
        "max_checked_growth_pct": max(checked) if checked else None,
        "over_limit": any(r["over_limit"] for r in rows),
    }


def service_rss(pids: dict[str, int]) -> dict[str, float]:
    found = {name: procs.stat(pid) for name, pid in pids.items()}
    return {name: round(s.rss_bytes / procs.MIB, 1) for name, s in found.items() if s}


class Sampler:
    """Backlog, stored events and RSS every few seconds during the sustained load, so a
    queue or a process that keeps growing shows as a trend, not only as its end point."""

    def __init__(self, subject: Subject, every_s: float, t0: float) -> None:
        self.subject = subject
        self.every_s = every_s
        self.t0 = t0
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                snap = self.subject.snapshot()
            except Exception as exc:  # noqa: BLE001 - a missed sample is not worth a failed run
                print(f"  sample failed: {exc}", flush=True)
                continue
            sample = {
                "t_s": round(snap.t - self.t0, 1),
                "stored": snap.stored,
                "backlog": snap.backlog,
                "rss_mib": round(sum(v[2] for v in snap.rss.values()) / procs.MIB, 1),
                "rss_by_pid": {pid: round(v[2] / procs.MIB, 1) for pid, v in snap.rss.items()},
            }
            self.samples.append(sample)
            shown = {k: v for k, v in sample.items() if k != "rss_by_pid"}
            print(f"  {shown}", flush=True)

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.samples


def load_figures(result: dict[str, Any]) -> dict[str, Any]:
    lat = result["latency_ms"]
    return {
        "accepted": result["accepted"],
        "accepted_per_s": result["accepted_per_s"],
        "p50_ms": lat["p50"],
        "p99_ms": lat["p99"],
        "non_2xx": result["non_2xx"],
        "socket_errors": result["socket_errors"],
        "unique_event_ids": result["unique_event_ids"],
        "wrk": result,
    }


def drain(subject: Subject, timeout_s: float) -> float | None:
    if subject.deployment is None:
        return 0.0
    seconds = subject.deployment.wait_drained(timeout_s)
    if seconds is None:
        print(f"  queue not empty after {timeout_s:g}s (--drain-timeout)", flush=True)
    return seconds


def measure(
    subject: Subject, load: Load, probe: FreshnessProbe | None, args: argparse.Namespace
) -> dict[str, Any]:
    name = subject.name
    out: dict[str, Any] = {"event_bytes": load.event_bytes}
    if args.warmup > 0:
        print(f"[{name}] warm-up {args.warmup:g}s ...", flush=True)
        load.warm(args.warmup)
    if subject.deployment is not None:
        out["warmup_drained_s"] = drain(subject, args.drain_timeout)
    start = subject.snapshot()

    # Burst: wrk flat out for --duration, then until the queue is empty.
    print(f"[{name}] burst {args.duration:g}s at {args.connections} connections ...", flush=True)
    host_before = hostspeed.cpu_ms()
    if probe:
        probe.begin("burst")
    spread: dict[int, int] = {}

    def look() -> None:  # wrk opens its connections at the start: look once they are up
        spread.update(subject.connections())

    peek = threading.Timer(min(3.0, args.duration / 2), look)
    peek.start()
    burst = load_figures(load.run("burst", args.duration, args.connections))
    peek.cancel()
    if probe:
        probe.end()
    subject.check_alive()
    loaded = subject.snapshot()
    burst["host_cpu_ms"] = [host_before, hostspeed.cpu_ms()]  # before, after: lower is faster
    burst["api_processes"] = api_processes(spread, start, loaded)
    burst["cores_by_role"] = {
        role: round((cpu - start.cpu_roles.get(role, 0.0)) / (loaded.t - start.t), 2)
        for role, cpu in loaded.cpu_roles.items()
    }
    drained_s = drain(subject, args.drain_timeout)
    done = subject.snapshot()
    if probe:
        probe.wait_found("burst", timeout_s=30)
        burst["freshness"] = probe.result("burst")
    if subject.deployment is None:
        burst["cpu_per_1000"] = cpu_block(subject, start, loaded, burst["accepted"])
    else:
        assert start.stored is not None and loaded.stored is not None and done.stored is not None
        stored = done.stored - start.stored
        burst |= {
            "backlog_at_end": loaded.backlog,
            "drained_after_s": None if drained_s is None else round(drained_s, 1),
            "stored": stored,
            # Everything stored from the start of the burst until the queue was empty.
            "processed_per_s": rate(stored, done.t - start.t),
            "processed_per_s_during_load": rate(loaded.stored - start.stored, loaded.t - start.t),
            "kept_up": (loaded.backlog or 0) < max(100, 0.02 * burst["accepted"]),
            "cpu_per_1000": cpu_block(subject, start, done, stored),
        }
        if drained_s and (loaded.backlog or 0) >= 100:
            burst["drain_per_s"] = rate(done.stored - loaded.stored, done.t - loaded.t)
    out["burst"] = burst
    print(f"[{name}] burst: {one_line(burst)}", flush=True)

    end = done
    samples: list[dict[str, Any]] = []
    if args.sustain > 0:
        conns = args.sustain_connections
        print(f"[{name}] sustained load {args.sustain:g}s at {conns} connections ...", flush=True)
        before = subject.snapshot()
        sampler = Sampler(subject, args.sample_every, before.t)
        if probe:
            probe.begin("sustain")
        try:
            sustain = load_figures(load.run("sustain", args.sustain, conns))
        finally:
            if probe:
                probe.end()
            samples = sampler.stop()
        subject.check_alive()
        end = subject.snapshot()  # RSS "after N minutes of load": before any drain
        sustain["timeline"] = samples
        if subject.deployment is None:
            sustain["cpu_per_1000"] = cpu_block(subject, before, end, sustain["accepted"])
        else:
            assert before.stored is not None and end.stored is not None
            seconds = end.t - before.t
            sustain |= {
                "processed_per_s": rate(end.stored - before.stored, seconds),
                "backlog_at_start": before.backlog,
                "backlog_at_end": end.backlog,
                "backlog_growth_per_s": rate((end.backlog or 0) - (before.backlog or 0), seconds),
            }
            drained_s = drain(subject, args.drain_timeout)
            after = subject.snapshot()
            assert after.stored is not None
            sustain["drained_after_s"] = None if drained_s is None else round(drained_s, 1)
            if drained_s is not None:
                stored = after.stored - before.stored
                sustain["cpu_per_1000"] = cpu_block(subject, before, after, stored)
        if probe:
            probe.wait_found("sustain", timeout_s=30)
            sustain["freshness"] = probe.result("sustain")
        out["sustain"] = sustain
        print(f"[{name}] sustain: {one_line(sustain)}", flush=True)
    out["rss"] = rss_report(start, done, end, GOALS["rss_growth_pct"], samples)
    if subject.services:
        out["services_rss_end_mib"] = service_rss(subject.services)
    if probe:
        out["probe_poll_errors"] = probe.poll_errors
    return out


def one_line(phase: dict[str, Any]) -> str:
    keys = ("accepted_per_s", "p50_ms", "p99_ms", "processed_per_s", "backlog_at_end")
    parts = [f"{k}={phase[k]}" for k in keys if phase.get(k) is not None]
    fresh = phase.get("freshness")
    if fresh:
        parts.append(f"fresh p50/p99={fresh['p50_ms']}/{fresh['p99_ms']} ms")
    cpu = phase.get("cpu_per_1000")
    if cpu and cpu.get("total") is not None:
        parts.append(f"cpu/1k={cpu['total']}s")
    return "  ".join(parts)


# -- targets ------------------------------------------------------------------------------


def run_bare(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    with bare_app_child(workers=args.bare_workers) as (child, port):
        load = Load(f"http://benchkey@127.0.0.1:{port}/1", args, workdir)
        subject = Subject("bare", port, {"bare": child})
        result = measure(subject, load, None, args)
    result["uvicorn_workers"] = args.bare_workers
    return result


def run_stacksift(
    deployment: Deployment, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    with deployment:
        project = deployment.start()
        services = {}
        if isinstance(deployment, Distributed):
            services = {n: p for n in ("redis", "elasticsearch") if (p := procs.service_pid(n))}
        subject = Subject(
            deployment.kind, deployment.port, dict(deployment.children), deployment, services
        )
        load = Load(project.dsn, args, workdir)
        probe = FreshnessProbe(
            deployment.url,
            project.id,
            project.ingest_key,
            project.read_token,
            interval_s=args.probe_interval,
            poll_s=args.probe_poll,
        )
        try:
            result = measure(subject, load, probe, args)
        finally:
            probe.close()
    if isinstance(deployment, Distributed):
        result |= {"prefix": deployment.prefix, "redis_db": args.redis_db}
        result |= {"api_workers": args.api_workers, "rq_workers": args.rq_workers}
    else:
        result["serve_workers"] = args.workers
    return result


def start_services() -> None:
    print("scripts/services.sh start (Redis, Elasticsearch) ...", flush=True)
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "services.sh"), "start"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise BenchError(f"scripts/services.sh start failed:\n{done.stderr[-2000:]}")


# -- report -------------------------------------------------------------------------------


def checks(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each goal of issue 8 with the measured value; ok is None when not measured."""
    out: dict[str, Any] = {}
    bare = results.get("bare", {}).get("burst")
    emb = results.get("embedded", {}).get("burst")
    dist = results.get("distributed", {}).get("burst")
    ratio = None
    if bare and emb and bare["accepted_per_s"]:
        ratio = round(emb["accepted_per_s"] / bare["accepted_per_s"], 3)
    out["embedded accepted >= 60% of bare"] = {
        "value": ratio,
        "ok": None if ratio is None else ratio >= GOALS["embedded_vs_bare"],
    }
    p99 = emb["p99_ms"] if emb else None
    out["embedded p99 < 20 ms"] = {
        "value": p99,
        "ok": None if p99 is None else p99 < GOALS["embedded_p99_ms"],
    }
    for name, burst in (("embedded", emb), ("distributed", dist)):
        goal = GOALS[f"{name}_processed_per_s"]
        value = burst.get("processed_per_s") if burst else None
        out[f"{name} processed >= {goal:,.0f}/s"] = {
            "value": value,
            "ok": None if value is None else value >= goal,
        }
    for name, result in results.items():
        growth = result.get("rss", {}).get("max_checked_growth_pct")
        out[f"{name} RSS growth under load <= 10%"] = {
            "value": growth,
            "ok": None if growth is None else growth <= GOALS["rss_growth_pct"],
        }
    return out


def fmt(value: Any, spec: str = ",.0f") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int | float):
        return format(value, spec)
    return str(value)


Row = tuple[str, Callable[[dict[str, Any]], str], str]


def table_rows(args: argparse.Namespace) -> list[Row]:
    def get(*path: str) -> Callable[[dict[str, Any]], Any]:
        def pick(result: dict[str, Any]) -> Any:
            value: Any = result
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            return value

        return pick

    def num(*path: str, spec: str = ",.0f") -> Callable[[dict[str, Any]], str]:
        return lambda r: fmt(get(*path)(r), spec)

    def pair(a: tuple[str, ...], b: tuple[str, ...], spec: str) -> Callable[[dict[str, Any]], str]:
        return lambda r: f"{fmt(get(*a)(r), spec)} / {fmt(get(*b)(r), spec)}"

    def drained(phase: str) -> Callable[[dict[str, Any]], str]:
        def show(r: dict[str, Any]) -> str:
            backlog = get(phase, "backlog_at_end")(r)
            if backlog is None:
                return "-"
            seconds = get(phase, "drained_after_s")(r)
            after = "not drained" if seconds is None else f"drained in {seconds:.1f}s"
            return f"{backlog:,} ({after})"

        return show

    def rss(r: dict[str, Any]) -> str:
        block = r.get("rss") or {}
        if not block:
            return "-"
        flag = " OVER" if block["over_limit"] else ""
        return (
            f"{block['total_start_mib']:.0f} -> {block['total_end_mib']:.0f} MiB, "
            f"max {fmt(block['max_growth_pct'], '+.1f')}%; "
            f"under load {fmt(block.get('max_load_growth_pct'), '+.1f')}%{flag}"
        )

    s = f"sustained {args.sustain:g}s @ {args.sustain_connections}"
    rows: list[Row] = [
        (
            f"burst {args.duration:g}s @ {args.connections} conns: accepted/s",
            num("burst", "accepted_per_s"),
            ">= 60% of bare",
        ),
        (
            "  latency p50 / p99 ms",
            pair(("burst", "p50_ms"), ("burst", "p99_ms"), ".1f"),
            "p99 < 20 (embedded)",
        ),
        ("  non-2xx", num("burst", "non_2xx"), "0"),
        (
            "  processed/s (stored+searchable, to empty queue)",
            num("burst", "processed_per_s"),
            "emb >= 2,000; dist >= 1,000",
        ),
        ("  processed/s while loading", num("burst", "processed_per_s_during_load"), ""),
        ("  backlog at end of load", drained("burst"), ""),
        ("  drain only: processed/s", num("burst", "drain_per_s"), ""),
        (
            "  freshness p50 / p99 ms",
            pair(("burst", "freshness", "p50_ms"), ("burst", "freshness", "p99_ms"), ",.0f"),
            "",
        ),
        (
            "  CPU s / 1,000 events (own processes)",
            num("burst", "cpu_per_1000", "total", spec=".3f"),
            "",
        ),
        (
            "    of which Elasticsearch / Redis (shared)",
            pair(
                ("burst", "cpu_per_1000", "elasticsearch"),
                ("burst", "cpu_per_1000", "redis"),
                ".3f",
            ),
            "",
        ),
    ]
    if args.sustain > 0:
        rows += [
            (f"{s}: accepted/s", num("sustain", "accepted_per_s"), ""),
            (
                "  latency p50 / p99 ms",
                pair(("sustain", "p50_ms"), ("sustain", "p99_ms"), ".1f"),
                "",
            ),
            ("  processed/s during the load", num("sustain", "processed_per_s"), ""),
            ("  backlog at end of load", drained("sustain"), "keeps up: ~0"),
            ("  backlog growth / s", num("sustain", "backlog_growth_per_s", spec=",.1f"), ""),
            (
                "  freshness p50 / p99 ms",
                pair(
                    ("sustain", "freshness", "p50_ms"), ("sustain", "freshness", "p99_ms"), ",.0f"
                ),
                "",
            ),
            ("  CPU s / 1,000 events", num("sustain", "cpu_per_1000", "total", spec=".3f"), ""),
        ]
    rows.append(
        (
            "RSS start -> end (all), max growth; peak growth under load",
            rss,
            "<= +10% each",
        )
    )
    return rows


def print_report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    names = list(results)
    rows = table_rows(args)
    cells = [[label, *[show(results[n]) for n in names], goal] for label, show, goal in rows]
    header = ["", *names, "target"]
    widths = [max(len(str(r[i])) for r in [header, *cells]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print("\n" + line + "\n" + "-" * len(line))
    for row in cells:
        first = row[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(row[1:-1], widths[1:-1], strict=True)]
        print("  ".join([first, *rest, row[-1]]))

    print(
        "\nRSS per process: after warm-up -> after the burst -> at the end of the load; "
        "peak in the first -> last third of the sustained load"
    )
    for name in names:
        for p in results[name].get("rss", {}).get("processes", []):
            flag = "  > 10% !" if p["over_limit"] else ""
            sizes = " -> ".join(
                fmt(p[k], ".1f").rjust(7) for k in ("start_mib", "after_burst_mib", "end_mib")
            )
            peaks = " -> ".join(
                fmt(p.get(k), ".1f") for k in ("load_first_peak_mib", "load_last_peak_mib")
            )
            print(
                f"  {name:<12} {p['role']:<18} pid {p['pid']:<8} {sizes} MiB  "
                f"{fmt(p['growth_pct'], '+.1f')}%; under load {peaks} MiB "
                f"{fmt(p.get('load_growth_pct'), '+.1f')}%{flag}"
            )
        for service, mib in results[name].get("services_rss_end_mib", {}).items():
            print(f"  {name:<12} {service + ' (shared)':<18} {'':<12} end {mib:.1f} MiB")

    print("\nCPU s / 1,000 events by process role (burst, until the queue was empty):")
    for name in names:
        block = results[name].get("burst", {}).get("cpu_per_1000") or {}
        roles = block.get("by_role") or {}
        shown = ", ".join(f"{role} {fmt(v, '.3f')}" for role, v in roles.items() if v)
        print(f"  {name:<12} {shown}")

    print("\nConnections and cores per API process during the burst:")
    for name in names:
        burst = results[name].get("burst", {})
        shown = "; ".join(
            f"pid {p['pid']} {p['connections']} conns {fmt(p['cores'], '.2f')} cores"
            for p in burst.get("api_processes") or []
        )
        print(f"  {name:<12} {shown}")
        roles = burst.get("cores_by_role") or {}
        shown = ", ".join(f"{role} {fmt(v, '.2f')}" for role, v in roles.items() if v)
        print(f"  {'':<12} all cores: {shown}")
        before, after = burst.get("host_cpu_ms") or (None, None)
        print(
            f"  {'':<12} host: fixed work took {fmt(before, '.1f')} ms of CPU before the "
            f"burst, {fmt(after, '.1f')} after (scripts/bench/hostspeed.py; lower is faster)"
        )

    for name in names:
        for phase in ("burst", "sustain"):
            figures = results[name].get(phase) or {}
            if figures and not figures["unique_event_ids"]:
                print(
                    f"\nwarning: {name} {phase} outlasted its pool of compressed bodies: event "
                    "ids repeated (the server deduplicates them); use a shorter run or no "
                    "compression"
                )
            if figures.get("non_2xx") or figures.get("socket_errors"):
                print(
                    f"\nwarning: {name} {phase}: {figures['non_2xx']} non-2xx answers, socket "
                    f"errors {figures['socket_errors'] or 0}"
                )

    print("\nIssue 8 targets:")
    for goal, check in checks(results).items():
        verdict = {True: "ok", False: "MISSED", None: "not measured"}[check["ok"]]
        value = check["value"]
        spec = ",.0f" if isinstance(value, int | float) and abs(value) >= 100 else ".3g"
        print(f"  {goal:<40} {fmt(value, spec):>10}  {verdict}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    ensure_wrk()
    if "distributed" in args.targets:
        start_services()
    results: dict[str, dict[str, Any]] = {}
    with ExitStack() as stack:
        base = Path(tempfile.mkdtemp(prefix="bench-all-"))
        if not args.keep:
            stack.callback(lambda: subprocess.run(["rm", "-rf", str(base)], check=False))
        for name in args.targets:
            workdir = base / name
            workdir.mkdir()
            if name == "bare":
                results[name] = run_bare(args, workdir)
            elif name == "embedded":
                results[name] = run_stacksift(Embedded(workdir, args.workers), args, workdir)
            else:
                dist = Distributed(workdir, args.api_workers, args.rq_workers, args.redis_db)
                results[name] = run_stacksift(dist, args, workdir)
        if args.keep:
            print(f"data dirs and logs kept in {base}")
    print_report(results, args)
    final = {
        "config": {
            k: getattr(args, k)
            for k in (
                "duration",
                "sustain",
                "warmup",
                "connections",
                "sustain_connections",
                "threads",
                "workers",
                "bare_workers",
                "api_workers",
                "rq_workers",
                "compression",
                "events",
                "probe_interval",
                "probe_poll",
            )
        },
        "results": results,
        "checks": checks(results),
    }
    line = json.dumps(final)
    if args.json_out:
        args.json_out.write_text(line + "\n")
    print(line)
    return 0


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwind: servers stopped, prefixed data deleted


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as exc:
        print(f"bench_all: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("bench_all: interrupted; servers stopped, run data removed", file=sys.stderr)
        sys.exit(130)
