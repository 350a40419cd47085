"""Send real errors through the official Python ``sentry-sdk``.

Tests and benchmarks use this instead of hand-built envelopes so stacksift is
checked against exactly what users' applications send (headers, compression,
envelope layout), including whatever changes when the SDK is upgraded.

Usage: python python_send.py <dsn> <repeat> [--gzip | --no-compression] [--ca-certs PATH]

Prints one JSON line:
  {"sent": {"ZeroDivisionError": n, "KeyError": n, "CheckoutError": n, "message": n},
   "event_ids": [...], "status_codes": {"200": k}, "accepted": k, "compression": "br"}
Exit code: 0 when every event got a 2xx, 2 on bad usage, 4 otherwise (the JSON line is
still printed so rate-limit tests can read it). SENTRY_ENVIRONMENT and SENTRY_RELEASE
are honoured by the SDK itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.dedupe import DedupeIntegration
from sentry_sdk.transport import HttpTransport

MESSAGE = "order 123 failed"


class CheckoutError(Exception):
    """Application-defined exception, so grouping sees a non-builtin type."""


# One named function per error kind: each gets its own stack, hence its own issue.
def compute_average(total: int, count: int) -> float:
    return total / count


def lookup_price(prices: dict[str, int], sku: str) -> int:
    return prices[sku]


def checkout(cart_id: str) -> None:
    raise CheckoutError(f"cart {cart_id} could not be checked out: payment provider timeout")


KINDS: list[tuple[str, Callable[[], object]]] = [
    ("ZeroDivisionError", lambda: compute_average(10, 0)),
    ("KeyError", lambda: lookup_price({"sku-1": 100}, "sku-404")),
    ("CheckoutError", lambda: checkout("c-42")),
]


class CountingTransport(HttpTransport):
    """HttpTransport that records how the server answered each event.

    flush() returns nothing, so without this a sender pointed at a dead or
    rejecting server would look exactly like a successful one. Only envelopes
    carrying an event count: client reports ride along or go alone.
    """

    status_codes: Counter[str] = Counter()
    _lock = threading.Lock()

    @classmethod
    def _record(cls, outcome: str, envelope: Any) -> None:
        items = envelope.items if envelope is not None else []
        events = sum(1 for item in items if item.type == "event")
        if events:
            with cls._lock:
                cls.status_codes[outcome] += events

    def _handle_response(self, response: Any, envelope: Any) -> None:
        self._record(str(response.status), envelope)
        super()._handle_response(response=response, envelope=envelope)

    def _handle_request_error(self, envelope: Any, loss_reason: str = "network", **kw: Any) -> None:
        if loss_reason == "network":
            self._record("network_error", envelope)
        super()._handle_request_error(envelope=envelope, loss_reason=loss_reason, **kw)

    def on_dropped_event(self, reason: str) -> None:
        # Drops before any request is made: queue overflow, SDK-side rate limit backoff.
        if reason in ("full_queue", "self_rate_limits"):
            with self._lock:
                self.status_codes[reason] += 1
        super().on_dropped_event(reason)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dsn")
    parser.add_argument("repeat", type=int)
    compression = parser.add_mutually_exclusive_group()
    compression.add_argument(
        "--gzip", action="store_true", help="force gzip (default: br when brotli is importable)"
    )
    compression.add_argument("--no-compression", action="store_true")
    parser.add_argument("--ca-certs", metavar="PATH", help="CA bundle for https DSNs")
    args = parser.parse_args(argv)
    if args.repeat < 0:
        parser.error(f"repeat must be >= 0, got {args.repeat}")
    return args


def init_sdk(args: argparse.Namespace) -> str:
    """Initialise the SDK; returns the compression the transport will use."""
    experiments: dict[str, Any] = {}
    if args.gzip:
        experiments["transport_compression_algo"] = "gzip"
    elif args.no_compression:
        experiments["transport_compression_level"] = 0
    sentry_sdk.init(
        dsn=args.dsn,
        sample_rate=1.0,
        transport=CountingTransport,
        # The default queue (100) silently drops events of a large --repeat.
        transport_queue_size=max(100, (len(KINDS) + 1) * args.repeat + 16),
        ca_certs=args.ca_certs,
        include_local_variables=True,
        _experiments=experiments,
    )
    transport = sentry_sdk.get_client().transport
    algo = getattr(transport, "_compression_algo", None)
    level = getattr(transport, "_compression_level", None)
    return "none" if not algo or level == 0 else str(algo)


def send_all(repeat: int) -> tuple[dict[str, int], list[str]]:
    sent: dict[str, int] = {}
    event_ids: list[str] = []
    for name, throw in KINDS:
        sent[name] = 0
        for _ in range(repeat):
            try:
                throw()
            except Exception as exc:
                if type(exc).__name__ != name:
                    raise
                event_id = sentry_sdk.capture_exception(exc)
            else:
                raise AssertionError(f"{name} thrower did not raise")
            if event_id is None:
                raise RuntimeError(f"sentry_sdk dropped a {name} event before sending it")
            event_ids.append(event_id)
            sent[name] += 1
    sent["message"] = 0
    for _ in range(repeat):
        event_id = sentry_sdk.capture_message(MESSAGE, level="error")
        if event_id is None:
            raise RuntimeError("sentry_sdk dropped a message event before sending it")
        event_ids.append(event_id)
        sent["message"] += 1
    return sent, event_ids


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    compression = init_sdk(args)
    # DedupeIntegration only drops the *same exception object* seen twice, and every
    # iteration raises a fresh one, so it is kept: a real app runs with it too.
    assert sentry_sdk.get_client().get_integration(DedupeIntegration) is not None
    sent, event_ids = send_all(args.repeat)
    sentry_sdk.flush(10)
    statuses = dict(CountingTransport.status_codes)
    accepted = sum(n for code, n in statuses.items() if code.isdigit() and 200 <= int(code) < 300)
    result = {
        "sent": sent,
        "event_ids": event_ids,
        "status_codes": statuses,
        "accepted": accepted,
        "compression": compression,
    }
    print(json.dumps(result), flush=True)
    return 0 if accepted == len(event_ids) else 4


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
