"""Group commit into the embedded inbox.

Every accepted event must be committed before its ``200``; one transaction
per request would cap ingest at the commit rate.  Requests hand their rows to
one writer thread, which commits whatever has queued up in a single
transaction and then wakes all the waiting requests at once.

A commit that fails (data disk full, Redis away) fails every request of its
batch with :class:`Unavailable` (503, or 507 for a full disk) and nothing of
them is stored; the thread carries on, so ingest recovers by itself as soon
as the storage does.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

import redis

from app import metrics
from app.storage.sqlite import SqliteStore

log = logging.getLogger("stacksift.inbox")

Row = tuple[int, float, bytes, bytes]  # project_id, received, payload, meta
_MAX_BATCH = 2000
_SQLITE_FULL = 13
_SQLITE_AWAY = {5, 6, 10, 14, 15}  # busy, locked, I/O error, cannot open, lock protocol
_LOG_EVERY_SECONDS = 10.0  # a full disk fails every commit: log it, not each one


class Unavailable(Exception):
    """The events of a request could not be stored; none of them was.  Retry later."""

    status = 503
    code = "unavailable"


class StorageFull(Unavailable):
    status = 507
    code = "insufficient_storage"


def unavailable(exc: BaseException) -> Unavailable | None:
    """The refusal a storage failure stands for, or None for anything else (a bug)."""
    if isinstance(exc, Unavailable):
        return exc
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF if isinstance(exc, sqlite3.Error) else 0
    if code == _SQLITE_FULL:
        return StorageFull("the data disk is full: nothing was stored; retry when space is freed")
    if code in _SQLITE_AWAY:
        return Unavailable(f"sqlite: {exc}: nothing was stored; retry later")
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return Unavailable(f"redis: {exc}: nothing was stored; retry later")
    return None


class InboxWriter:
    def __init__(self, store: SqliteStore, on_commit: Callable[[], None]) -> None:
        self._store = store
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[
            tuple[
                Sequence[Row],
                Counter[tuple[int, str]],
                asyncio.AbstractEventLoop,
                asyncio.Future[None],
            ]
            | None
        ] = queue.SimpleQueue()
        self._failing_since = 0.0
        self._logged_at = 0.0
        self._thread = threading.Thread(target=self._run, name="inbox-writer", daemon=True)
        self._thread.start()

    async def submit(self, rows: Sequence[Row], counts: Counter[tuple[int, str]]) -> None:
        """Return once ``rows`` (and the counters) are committed; raise if they could not be."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put((rows, counts, loop, future))
        await future

    def count(self, counts: Counter[tuple[int, str]]) -> None:
        """Record counters without waiting: refusals must stay cheap under a flood."""
        self._queue.put(((), counts, None, None))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            size = len(first[0])
            while size < _MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
                size += len(item[0])
            rows: list[Row] = []
            counts: Counter[tuple[int, str]] = Counter()
            for item_rows, item_counts, _, _ in batch:
                rows.extend(item_rows)
                counts.update(item_counts)
            error: BaseException | None = None
            try:
                with metrics.timed("sqlite", "enqueue"):
                    self._store.enqueue(rows, counts)
            except Exception as exc:  # disk full, locked for too long, Redis away, ...
                error = unavailable(exc) or exc
                self._failed(exc)
            else:
                self._recovered()
            # One wake-up per event loop, not per request: each is a syscall.
            waiting: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
            for _, _, loop, future in batch:
                if loop is not None and future is not None:
                    waiting.setdefault(loop, []).append(future)
            for loop, futures in waiting.items():
                loop.call_soon_threadsafe(_resolve, futures, error)
            if error is None and rows:
                self._on_commit()

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        self._failing_since = self._failing_since or now
        if now - self._logged_at >= _LOG_EVERY_SECONDS:
            self._logged_at = now
            log.error("inbox commit failed: %s: %s", type(exc).__name__, exc)

    def _recovered(self) -> None:
        if self._failing_since:
            log.warning("inbox commits again after %.1f s", time.monotonic() - self._failing_since)
            self._failing_since = self._logged_at = 0.0


def _resolve(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():  # the client went away
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
