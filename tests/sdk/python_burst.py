"""Send a burst of errors through the official Python ``sentry-sdk`` and log how it backs off.

The SDK's reaction to ``429`` is what makes a rate limit protect the server:
after ``Retry-After`` / ``X-Sentry-Rate-Limits`` it must drop events locally
instead of sending them. This sender records every request the transport makes
(time, status, both headers) and every event it drops before sending, so a test
can see that nothing was sent during the announced period.

Usage: python python_burst.py <dsn> <count> [--resume]

``--resume``: after the burst, wait until the SDK's own rate limit expires,
then send one more event (it must be sent and accepted).

Prints one JSON line: {"requests": [{"t": s, "status": 200, "retry_after": null,
"rate_limits": null, "events": 1}], "drops": [t, ...], "resumed": {...} | null}
with times in seconds since the first capture.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import sentry_sdk
from sentry_sdk.transport import HttpTransport

START = time.monotonic()


def now() -> float:
    return round(time.monotonic() - START, 3)


class RecordingTransport(HttpTransport):
    """HttpTransport that keeps a log of requests and of events dropped by its rate limits."""

    requests: list[dict[str, Any]] = []
    drops: list[float] = []
    _lock = threading.Lock()

    def _handle_response(self, response: Any, envelope: Any) -> None:
        items = envelope.items if envelope is not None else []
        entry = {
            "t": now(),
            "status": response.status,
            "retry_after": self._get_header_value(response, "retry-after"),
            "rate_limits": self._get_header_value(response, "x-sentry-rate-limits"),
            "events": sum(1 for item in items if item.type == "event"),
            "items": [item.type for item in items],
        }
        with self._lock:
            self.requests.append(entry)
        super()._handle_response(response=response, envelope=envelope)

    def on_dropped_event(self, reason: str) -> None:
        if reason == "self_rate_limits":
            with self._lock:
                self.drops.append(now())
        super().on_dropped_event(reason)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dsn")
    parser.add_argument("count", type=int)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"count must be >= 1, got {args.count}")
    return args


def seconds_limited(transport: RecordingTransport) -> float:
    """How long the SDK will still drop events, by its own bookkeeping."""
    until = max(transport._disabled_until.values(), default=None)
    if until is None:
        return 0.0
    return max(0.0, (until - datetime.now(UTC)).total_seconds())


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    sentry_sdk.init(dsn=args.dsn, transport=RecordingTransport, transport_queue_size=1000)
    transport = sentry_sdk.get_client().transport
    assert isinstance(transport, RecordingTransport)
    for i in range(args.count):
        sentry_sdk.capture_message(f"burst event {i}", level="error")
    sentry_sdk.flush(10)
    limited_for = seconds_limited(transport)
    resumed = None
    if args.resume:
        time.sleep(limited_for + 0.5)
        before = len(RecordingTransport.requests)
        event_id = sentry_sdk.capture_message("after the backoff", level="error")
        sentry_sdk.flush(10)
        resumed = {"event_id": event_id, "requests": RecordingTransport.requests[before:]}
    result = {
        "requests": RecordingTransport.requests,
        "drops": RecordingTransport.drops,
        "limited_for_after_burst": round(limited_for, 3),
        "resumed": resumed,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
