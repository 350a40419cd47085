"""Prometheus metrics: one registry of names, shared by every process.

With ``stacksift serve --workers N`` each uvicorn worker is a process; the CLI
then sets ``PROMETHEUS_MULTIPROC_DIR`` (fresh at every start) and ``/metrics``
merges the files all processes write.  Labels are bounded: project ids,
reasons, endpoint templates and channels, never event or user ids.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

# In multiprocess mode prometheus_client asks os.getpid() on every inc() and observe()
# whether the process has forked: a syscall, several per ingest request.  The pid is
# kept here instead, and a fork hook renews it (RQ forks a work horse per job).
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _pid = [os.getpid()]
    os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: _pid[0])

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

EVENTS_RECEIVED = Counter(
    "stacksift_events_received_total", "Event items received at ingest", ["project"]
)
EVENTS_ACCEPTED = Counter(
    "stacksift_events_accepted_total", "Events durably queued and answered 200", ["project"]
)
EVENTS_REJECTED = Counter(
    "stacksift_events_rejected_total", "Requests refused at ingest", ["project", "reason"]
)
RATE_LIMITED = Counter(
    "stacksift_rate_limit_hits_total",
    "Requests refused by a rate limit or quota",
    ["project", "reason"],
)
BYTES_IN = Counter("stacksift_ingest_bytes_total", "Request body bytes as sent", ["endpoint"])
REQUEST_SECONDS = Histogram(
    "stacksift_request_duration_seconds",
    "HTTP request latency",
    ["method", "endpoint", "status"],
    buckets=LATENCY_BUCKETS,
)
EVENTS_PROCESSED = Counter(
    "stacksift_events_processed_total", "Events through the pipeline, by outcome", ["outcome"]
)
ISSUES_CREATED = Counter("stacksift_issues_created_total", "New issues", ["project"])
STORAGE_SECONDS = Histogram(
    "stacksift_storage_write_seconds",
    "Storage write latency",
    ["backend", "operation"],
    buckets=LATENCY_BUCKETS,
)
STORAGE_ERRORS = Counter(
    "stacksift_storage_errors_total", "Failed storage writes", ["backend", "operation"]
)
ALERTS_FIRED = Counter(
    "stacksift_alerts_fired_total", "Alert rule matches that notified", ["trigger"]
)
NOTIFICATIONS = Counter(
    "stacksift_notifications_total", "Notification attempts", ["channel", "outcome"]
)


class timed:
    """``with timed("sqlite", "commit"):`` records latency, and failures as errors."""

    def __init__(self, backend: str, operation: str) -> None:
        self.labels = (backend, operation)

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        STORAGE_SECONDS.labels(*self.labels).observe(time.perf_counter() - self.start)
        if exc_type is not None:
            STORAGE_ERRORS.labels(*self.labels).inc()


class QueueCollector:
    """Queue depth and lag are read at scrape time, not kept up to date per event."""

    def __init__(self, stats: Callable[[], tuple[int, float | None]]) -> None:
        self.stats = stats

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            depth, oldest = self.stats()
        except Exception:
            return []
        lag = max(0.0, time.time() - oldest) if oldest else 0.0
        return [
            GaugeMetricFamily(
                "stacksift_queue_depth", "Events accepted, not yet processed", value=depth
            ),
            GaugeMetricFamily(
                "stacksift_queue_lag_seconds", "Age of the oldest unprocessed event", value=lag
            ),
        ]


def exposition(queue_stats: Callable[[], tuple[int, float | None]]) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    extra = CollectorRegistry()
    extra.register(QueueCollector(queue_stats))
    return generate_latest(registry) + generate_latest(extra), CONTENT_TYPE_LATEST


class RequestMetrics:
    """Pure ASGI middleware: latency per route template and status (bounded labels)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            REQUEST_SECONDS.labels(scope["method"], endpoint, str(status[0])).observe(
                time.perf_counter() - start
            )
