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

import redis
from elasticsearch import Elasticsearch
from elasticsearch import TransportError as EsTransportError

from app.pipeline import SettingsCache, process_batch
from app.redis_queue import RedisQueue
from app.settings import Settings, load_settings
from app.storage.elastic import ElasticStore

log = logging.getLogger("stacksift.distributed")

BATCH_SIZE = 500
JOB_BUDGET_SECONDS = 60.0  # a drain job hands over to a fresh job after this long
MAX_BACKOFF_SECONDS = 15.0
RETENTION_EVERY_SECONDS = 3600.0


@dataclass
class Context:
    settings: Settings
    redis: redis.Redis
    es: Elasticsearch
    queue: RedisQueue
    store: ElasticStore
    cache: SettingsCache


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
    return Context(settings, client, es, queue, store, SettingsCache())


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


def drain(ctx: Context, budget: float = JOB_BUDGET_SECONDS, batch_size: int = BATCH_SIZE) -> int:
    """Process batches until the stream is empty or ``budget`` seconds have passed;
    returns how many entries were handled."""
    ctx.queue.job_started()
    consumer = consumer_name()
    deadline = time.monotonic() + budget
    handled = 0
    failures = 0
    while time.monotonic() < deadline:
        try:
            rows = ctx.queue.read(consumer, batch_size)
            if not rows:
                return handled
            process_batch(ctx.store, rows, ctx.cache)
            handled += len(rows)
            failures = 0
        except (EsTransportError, redis.ConnectionError, redis.TimeoutError, Exception) as exc:
            failures += 1
            wait = min(2.0 ** (failures - 1), MAX_BACKOFF_SECONDS)
            log.warning("batch failed (%s: %s); retrying in %.0f s", type(exc).__name__, exc, wait)
            time.sleep(wait)
    ctx.queue.kick()  # more may be waiting: hand over to a new job
    return handled


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


def run_worker(settings: Settings, burst: bool = False) -> int:
    """``stacksift worker``: an RQ worker on this deployment's queue.

    SimpleWorker runs jobs in this process (no fork per job), so the Elasticsearch
    and Redis connections and the settings cache outlive a job.
    """
    from rq import SimpleWorker

    global _context
    with _context_lock:
        _context = build(settings)
    ctx = _context
    ctx.store.setup()
    sweeper = Sweeper(ctx)
    if burst:
        ctx.queue.sweep()
    else:
        sweeper.start()
    worker = SimpleWorker([ctx.queue.rq_queue()], connection=ctx.redis)
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
