"""Ingest benchmark: real sentry-sdk envelopes, driven by wrk at fixed concurrency.

Usage:
  python scripts/bench_ingest.py --dsn http://KEY@127.0.0.1:PORT/PROJECT --duration 20 \\
      --connections 32 [--gzip | --no-compression]
  python scripts/bench_ingest.py --bare [--workers 2]   # ceiling: bare FastAPI route

Bodies are what the Python SDK sends (brotli by default, as the SDK does when
brotli is importable; --gzip or --no-compression otherwise), 6-9 KB events,
every request with a fresh event id. Prints the event size distribution, then
accepted events/s, p50/p99 latency and non-2xx counts, and a final JSON line.
Only loopback targets: the run is bounded by --duration and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.events import generate_envelopes
from bench.launch import bare_app
from bench.pool import Pool, compress, write_compressed_pool, write_splice_pool
from bench.wrk_runner import BenchError, Target, ensure_wrk, run_wrk
from sentry_sdk.consts import VERSION, EndpointType
from sentry_sdk.utils import BadDsn, Dsn

# Compressed bodies cannot get a new id inside wrk, so the measured run gets one
# pre-built body per request it is expected to send. POOL_MAX bounds memory
# (about 3 KB a body, held by every wrk thread) and build time.
DEFAULT_RATE_GUESS = 4000
POOL_MAX = 200_000


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--dsn", help="DSN of a running server (loopback only)")
    target.add_argument("--bare", action="store_true", help="benchmark bare_app.py instead")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers for --bare")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of measured load")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured load")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--threads", type=int, default=1, help="wrk threads (it shares the cores with the server)"
    )
    parser.add_argument("--events", type=int, default=500, help="distinct SDK events to build")
    compression = parser.add_mutually_exclusive_group()
    compression.add_argument("--gzip", action="store_true", help="gzip bodies instead of brotli")
    compression.add_argument("--no-compression", action="store_true")
    parser.add_argument(
        "--pool-size", type=int, default=0, help="compressed bodies to pre-build (0: auto)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json-out", type=Path, help="also write the result JSON here")
    args = parser.parse_args(argv)
    for name in ("workers", "duration", "connections", "threads", "events"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be > 0")
    if args.warmup < 0 or args.pool_size < 0:
        parser.error("--warmup and --pool-size must be >= 0")
    return args


def target_for(dsn: str, content_encoding: str | None) -> Target:
    try:
        auth = Dsn(dsn).to_auth(f"sentry.python/{VERSION}")
    except BadDsn as exc:
        raise BenchError(f"invalid DSN {dsn!r}: {exc}") from exc
    url = urlsplit(auth.get_api_url(EndpointType.ENVELOPE))
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise BenchError(f"refusing to load-test a non-loopback host: {url.hostname}")
    headers = {
        "Host": url.netloc,
        "User-Agent": f"sentry.python/{VERSION}",
        "Content-Type": "application/x-sentry-envelope",
        "X-Sentry-Auth": auth.to_header(),
    }
    if content_encoding:
        headers["Content-Encoding"] = content_encoding
    return Target(f"{url.scheme}://{url.netloc}", url.path, headers)


def distribution(sizes: list[int]) -> dict[str, int]:
    ordered = sorted(sizes)

    def pick(q: float) -> int:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "min": ordered[0],
        "p10": pick(0.10),
        "p50": pick(0.50),
        "p90": pick(0.90),
        "max": ordered[-1],
        "mean": round(statistics.fmean(ordered)),
    }


def summarise(raw: dict[str, Any], pool: Pool, compression: str) -> dict[str, Any]:
    seconds = raw["duration_us"] / 1e6
    codes = {int(code): n for code, n in raw["status_codes"].items()}
    accepted = sum(n for code, n in codes.items() if 200 <= code < 300)
    responses = sum(codes.values())
    socket_errors = {k: v for k, v in raw["errors"].items() if k != "status" and v}
    lat = raw["latency_us"]
    return {
        "compression": compression,
        "connections": raw["connections"],
        "wrk_threads": raw["threads"],
        "duration_s": round(seconds, 2),
        "requests": raw["requests"],
        "accepted": accepted,
        "accepted_per_s": round(accepted / seconds, 1),
        "non_2xx": responses - accepted,
        "status_codes": {str(code): n for code, n in sorted(codes.items())},
        "socket_errors": socket_errors,
        "latency_ms": {k: round(lat[k] / 1000, 2) for k in ("p50", "p90", "p99", "p999", "max")}
        | {"mean": round(lat["mean"] / 1000, 2)},
        "unique_event_ids": pool.splices_ids or raw["requests"] <= pool.bodies,
    }


def pool_size(args: argparse.Namespace, warmup_rate: float | None, envelopes: int) -> int:
    """Bodies for the measured run: twice the warm-up rate times the duration.

    The warm-up sends uncompressed bodies; a server that decompresses runs
    slower on compressed ones, one that does not (the bare app) runs faster on
    the smaller bodies, hence the headroom."""
    if args.pool_size:
        return args.pool_size
    rate = warmup_rate * 2 if warmup_rate else DEFAULT_RATE_GUESS
    return min(POOL_MAX, max(envelopes, int(rate * args.duration)))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    compression = "gzip" if args.gzip else "none" if args.no_compression else "br"
    ensure_wrk()
    with ExitStack() as stack:
        dsn = args.dsn
        if args.bare:
            port = stack.enter_context(bare_app(workers=args.workers))
            dsn = f"http://benchkey@127.0.0.1:{port}/1"
            print(f"bare FastAPI app on port {port}, {args.workers} uvicorn worker(s)")
        measured_target = target_for(dsn, None if compression == "none" else compression)
        warm_target = target_for(dsn, None)

        envelopes = generate_envelopes(args.events, dsn, seed=args.seed)
        sizes = distribution([len(e) for e in envelopes])
        print(f"{len(envelopes)} SDK envelopes, uncompressed bytes: {sizes}")
        wire_sizes = None
        if compression != "none":
            wire_sizes = distribution([len(compress(e, compression)) for e in envelopes])
            print(f"  {compression} on the wire: {wire_sizes}")

        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ingest-")))
        # Warm-up always splices ids into uncompressed bodies, so it uses up none
        # of the measured run's pre-built ids.
        splice_pool = write_splice_pool(envelopes, workdir)
        run = {"connections": args.connections, "threads": args.threads}
        warmup_rate = None
        if args.warmup > 0:
            print(f"warm-up {args.warmup:g}s ...", flush=True)
            warm = run_wrk(
                warm_target, splice_pool, duration_s=args.warmup, nonce=secrets.token_hex(4), **run
            )
            warmup_rate = warm["requests"] / (warm["duration_us"] / 1e6)
        pool = splice_pool
        if compression != "none":
            size = pool_size(args, warmup_rate, len(envelopes))
            print(
                f"pre-compressing {size} {compression} bodies with fresh event ids ...", flush=True
            )
            pool = write_compressed_pool(envelopes, compression, size, workdir)
        print(f"measuring {args.duration:g}s at {args.connections} connections ...", flush=True)
        raw = run_wrk(
            measured_target, pool, duration_s=args.duration, nonce=secrets.token_hex(4), **run
        )

    result = summarise(raw, pool, compression)
    result["target"] = "bare" if args.bare else measured_target.base_url
    if args.bare:
        result["uvicorn_workers"] = args.workers
    result["event_bytes"] = sizes
    if wire_sizes:
        result["wire_bytes"] = wire_sizes
    lat = result["latency_ms"]
    print(
        f"accepted {result['accepted_per_s']} events/s  p50 {lat['p50']} ms  p99 {lat['p99']} ms  "
        f"non-2xx {result['non_2xx']}  socket errors {result['socket_errors'] or 0}"
    )
    if not result["unique_event_ids"]:
        print("warning: run outlasted the body pool, event ids repeated; raise --pool-size")
    line = json.dumps(result)
    print(line)
    if args.json_out:
        args.json_out.write_text(line + "\n")
    return 0 if result["accepted"] > 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as exc:
        print(f"bench_ingest: {exc}", file=sys.stderr)
        sys.exit(2)
