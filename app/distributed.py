"""Distributed mode's moving parts: clients built from settings, the drain loop that RQ
jobs run, and ``stacksift worker`` (an RQ worker plus a once-a-second sweeper).

The drain loop is the same pipeline as the embedded worker thread
(:func:`app.pipeline.process_batch`) over rows read from the Redis stream.  A
batch that fails as a whole (Elasticsearch down or pushing back) is neither
acknowledged nor counted as an attempt: the loop backs off and retries it, so
an outage of any length loses nothing and the backlog drains when the cluster
returns.  Only events that fail on their own use up attempts and end in the
dead-letter store.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from elasticsearch import ApiError as EsApiError
from elasticsearch import Elasticsearch
from elasticsearch import TransportError as EsTransportError

from app.pipeline import MAX_ATTEMPTS, Preparer, process_batch
from app.redis_queue import RedisQueue
from app.settings import Settings, load_settings
from app.storage.elastic import ElasticStore, RetryableError
from app.storage.models import InboxRow

log = logging.getLogger("stacksift.distributed")

BATCH_SIZE = 1000  # 500 -> 1000: +20% events/s (fewer refreshes and round trips per event)
JOB_BUDGET_SECONDS = 60.0  # a drain job hands over to a fresh job after this long
MAX_BACKOFF_SECONDS = 15.0
ISOLATE_AFTER = 3  # failures of a whole batch, not caused by a service being away
RETENTION_EVERY_SECONDS = 3600.0


@dataclass
class Context:
    settings: Settings
    redis: redis.Redis
    es: Elasticsearch
    queue: RedisQueue
    store: ElasticStore
    prepare: Preparer
    _alerts: Any = None

    def alerts(self) -> Any:
        """The worker's alert service (built on first use: the API process has its own)."""
        if self._alerts is None:
            from app.alerts import AlertService

            self._alerts = AlertService(self.store, self.settings)  # type: ignore[arg-type]
            self._alerts.start()
        return self._alerts


def build(settings: Settings) -> Context:
    if not settings.distributed:
        raise RuntimeError(
            "distributed mode needs STACKSIFT_REDIS_URL and STACKSIFT_ELASTICSEARCH_URL"
        )
    client = redis.Redis.from_url(str(settings.redis_url), health_check_interval=30)
    es = Elasticsearch(
        str(settings.elasticsearch_url), request_timeout=30, max_retries=2, retry_on_timeout=True
    )
    queue = RedisQueue(client, settings.index_prefix, settings.reclaim_seconds)
    store = ElasticStore(es, client, settings.index_prefix, settings.retention_days, queue)
    return Context(settings, client, es, queue, store, Preparer())


# Set when `stacksift worker` is asked to stop (SIGTERM/SIGINT): a drain job finishes
# the batch in hand and returns instead of running out its time budget.
STOPPING = threading.Event()

_context: Context | None = None
_context_lock = threading.Lock()


def context() -> Context:
    """One context per worker process, reused by every job it runs."""
    global _context
    with _context_lock:
        if _context is None:
            _context = build(load_settings())
        return _context


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def transient(exc: BaseException) -> bool:
    """Trouble of the services (down, overloaded), not of the events: wait, do not give up."""
    if isinstance(exc, RetryableError | EsTransportError | redis.ConnectionError):
        return True
    if isinstance(exc, redis.TimeoutError):
        return True
    return isinstance(exc, EsApiError) and (exc.status_code == 429 or exc.status_code >= 500)


def drain(ctx: Context, budget: float = JOB_BUDGET_SECONDS, batch_size: int = BATCH_SIZE) -> int:
    """Process batches until the stream is empty or ``budget`` seconds have passed;
    returns how many entries were handled.

    A batch that keeps failing for another reason than an unavailable service (a bug, a
    request Elasticsearch refuses as a whole) is split: each event is tried on its own,
    and the ones that still fail use up attempts and end in the dead-letter store, so one
    bad event cannot hold the queue up."""
    ctx.queue.job_started()
    consumer = consumer_name()
    deadline = time.monotonic() + budget
    handled = 0
    failures = 0
    while time.monotonic() < deadline and not STOPPING.is_set():
        rows: list[InboxRow] = []
        try:
            rows = ctx.queue.read(consumer, batch_size)
            if not rows:
                return handled
            _process(ctx, rows)
            handled += len(rows)
            failures = 0
        except Exception as exc:
            failures += 1
            if rows and not transient(exc) and failures >= ISOLATE_AFTER:
                log.warning(
                    "batch failed %d times (%s); trying its events one by one", failures, exc
                )
                handled += _one_by_one(ctx, rows)
                failures = 0
                continue
            wait = min(2.0 ** (failures - 1), MAX_BACKOFF_SECONDS)
            log.warning("batch failed (%s: %s); retrying in %.0f s", type(exc).__name__, exc, wait)
            time.sleep(wait)
    ctx.queue.kick()  # more may be waiting: hand over to a new job (or another worker)
    return handled


def _process(ctx: Context, rows: list[InboxRow]) -> None:
    updates = process_batch(ctx.store, rows, ctx.prepare)
    if updates:
        ctx.alerts().on_updates(updates)  # never raises, never waits on the network


def _one_by_one(ctx: Context, rows: list[InboxRow]) -> int:
    for row in rows:
        try:
            _process(ctx, [row])
        except Exception as exc:
            if transient(exc):
                raise
            log.warning("event %s failed on its own: %s", row.id, exc)
            ctx.store.postpone([(row, f"{type(exc).__name__}: {exc}"[:2000])], MAX_ATTEMPTS)
    return len(rows)


class Sweeper(threading.Thread):
    """Once a second: return parked entries, make sure a drain job exists while
    anything waits; hourly: retention (when the cluster has no ILM)."""

    def __init__(self, ctx: Context, interval: float = 1.0) -> None:
        super().__init__(name="stacksift-sweeper", daemon=True)
        self.ctx = ctx
        self.interval = interval
        self.stopped = threading.Event()
        self._next_retention = 0.0

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.sweep_once()
            except Exception as exc:  # Redis or ES away: try again next tick
                log.warning("sweep failed: %s: %s", type(exc).__name__, exc)

    def sweep_once(self) -> None:
        self.ctx.queue.sweep()
        now = time.time()
        if now >= self._next_retention:
            self._next_retention = now + RETENTION_EVERY_SECONDS
            self.ctx.store.delete_expired(now)
            self.ctx.queue.forget_idle_consumers()


def run_worker(settings: Settings, burst: bool = False, metrics_port: int = 0) -> int:
    """``stacksift worker``: an RQ worker on this deployment's queue.

    SimpleWorker runs jobs in this process (no fork per job), so the Elasticsearch
    and Redis connections and the settings cache outlive a job.
    """
    from rq import SimpleWorker

    from app import logs

    # Before rq starts: finding the root logger's handler, rq adds no plain-text one.
    logs.configure(settings.log_level)
    global _context
    with _context_lock:
        _context = build(settings)
    ctx = _context
    ctx.store.setup()
    if metrics_port:
        from prometheus_client import REGISTRY, start_http_server

        from app.metrics import QueueCollector

        REGISTRY.register(QueueCollector(ctx.queue.stats))
        start_http_server(metrics_port)
    sweeper = Sweeper(ctx)
    if burst:
        ctx.queue.sweep()
    else:
        sweeper.start()

    class Worker(SimpleWorker):
        def request_stop(self, signum: Any, frame: Any) -> None:
            STOPPING.set()  # the running drain job ends after its current batch
            super().request_stop(signum, frame)

    worker = Worker([ctx.queue.rq_queue()], connection=ctx.redis)
    try:
        worker.work(burst=burst, logging_level=settings.log_level, with_scheduler=False)
    finally:
        sweeper.stopped.set()
    return 0


class QueueKicker:
    """What the API process has instead of the embedded worker thread: ``wake`` makes
    sure a drain job is queued (after a dead-letter replay, say)."""

    def __init__(self, queue: RedisQueue) -> None:
        self.queue = queue

    def start(self) -> None:
        pass

    def wake(self) -> None:
        self.queue.kick()

    def stop(self, timeout: float = 30.0) -> None:
        pass
