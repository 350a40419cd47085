"""What one rate-limit check costs at ingest, alone and with several processes at once.

    .venv/bin/python scripts/bench_ratelimit.py [--processes 2] [--seconds 3]

Prints, for one key's limit and for all four counters (key, project, hourly and daily
quota): microseconds per check in one process, then the same checks from
``--processes`` processes sharing one data directory (their total rate, and the
time per check each of them saw), and finally a check that those processes spent
one budget: with a limit of N, exactly N checks were accepted among all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from pathlib import Path

from app.ratelimit import LimitSettings, RateLimiter

HUGE = "100000000/minute"
SETTINGS = {
    "key limit": LimitSettings(),
    "key+project+2 quotas": LimitSettings(
        project_rate_limit=HUGE, events_per_hour=10**9, events_per_day=10**9
    ),
}
KEY = "ab" * 32


async def _checks(
    limiter: RateLimiter, settings: LimitSettings, seconds: float, key: str = KEY
) -> tuple[int, int]:
    """(checks made, checks accepted) of ``key`` in ``seconds``."""
    made = accepted = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            accepted += await limiter.check(1, key, settings, 1) is None
        made += 100
    return made, accepted


def _worker(
    data_dir: str, label: str, limit: str, seconds: float, start: float, out: multiprocessing.Queue
) -> None:
    limiter = RateLimiter(limit, None, Path(data_dir))
    asyncio.run(_checks(limiter, SETTINGS[label], 0.2, "cd" * 32))  # warm up: pages mapped
    time.sleep(max(0.0, start - time.time()))
    began = time.perf_counter()
    made, accepted = asyncio.run(_checks(limiter, SETTINGS[label], seconds))
    out.put((made, accepted, time.perf_counter() - began))


def _together(
    processes: int, label: str, limit: str, seconds: float
) -> list[tuple[int, int, float]]:
    context = multiprocessing.get_context("spawn")  # as uvicorn starts its workers
    out: multiprocessing.Queue = context.Queue()
    with tempfile.TemporaryDirectory() as data_dir:
        start = time.time() + 2.0  # all spawned and warm before any starts
        procs = [
            context.Process(target=_worker, args=(data_dir, label, limit, seconds, start, out))
            for _ in range(processes)
        ]
        for proc in procs:
            proc.start()
        results = [out.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    print("one process:")
    with tempfile.TemporaryDirectory() as data_dir:
        limiter = RateLimiter(HUGE, None, Path(data_dir))
        for label, settings in SETTINGS.items():
            asyncio.run(_checks(limiter, settings, 0.2))
            made, _ = asyncio.run(_checks(limiter, settings, args.seconds))
            print(f"  {label:22} {1e6 * args.seconds / made:6.2f} us/check")

    print(f"{args.processes} processes, one key, at once:")
    for label in SETTINGS:
        results = _together(args.processes, label, HUGE, args.seconds)
        total = sum(made / took for made, _, took in results)
        each = ", ".join(f"{1e6 * took / made:.2f}" for made, _, took in results)
        print(f"  {label:22} {total:10,.0f} checks/s in all; us/check in each: {each}")

    limit = 20_000
    results = _together(args.processes, "key limit", f"{limit}/hour", 1.0)
    accepted = sum(a for _, a, _ in results)
    print(
        f"one budget: limit {limit}/hour, {sum(m for m, _, _ in results):,} checks from "
        f"{args.processes} processes, {accepted:,} accepted "
        f"({'one budget' if accepted == limit else 'NOT one budget'})"
    )


if __name__ == "__main__":
    main()
