"""Group commit into the inbox, on the event loop.

Every accepted event must be committed before its ``200``; one transaction
per request would cap ingest at the commit rate.  Requests append their rows
to a list, and one callback, run once the event loop has served whatever was
ready, commits the whole list in a single transaction and resolves every
waiting request at once.

The commit runs on the loop itself when the store is a local SQLite file:
handing each batch to a writer thread cost more CPU than the commit (the two
threads took turns on the GIL for every compressed payload and SQLite call,
and the thread, woken early, committed batches of 2): 224-314 us of CPU per
request against 128-137 us inline (docs/benchmarks.md, issue 8).  A store
behind the network (Redis) commits on a thread instead, so a slow server
stalls only the requests that wait for it, not the loop.

A commit that fails (data disk full, Redis away) fails every request of its
batch with :class:`Unavailable` (503, or 507 for a full disk) and nothing of
them is stored; ingest recovers by itself as soon as the storage does.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import redis

from app import metrics

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


class Inbox(Protocol):
    def enqueue(self, rows: Sequence[Row], counts: dict[tuple[int, str], int]) -> None: ...


# rows, counters, and the future of the request that waits (None: counters only)
Waiting = tuple[Sequence[Row], Counter[tuple[int, str]], "asyncio.Future[None] | None"]


class InboxWriter:
    def __init__(
        self, store: Inbox, on_commit: Callable[[], None], *, in_thread: bool = False
    ) -> None:
        self._store = store
        self._on_commit = on_commit
        self._thread = ThreadPoolExecutor(1, "inbox-writer") if in_thread else None
        self._pending: list[Waiting] = []
        self._committing = False  # a commit runs on the thread: the next group waits for it
        self._failing_since = 0.0
        self._logged_at = 0.0

    async def submit(self, rows: Sequence[Row], counts: Counter[tuple[int, str]]) -> None:
        """Return once ``rows`` (and the counters) are committed; raise if they could not be."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._add((rows, counts, future))
        await future

    def count(self, counts: Counter[tuple[int, str]]) -> None:
        """Record counters without waiting: refusals must stay cheap under a flood."""
        self._add(((), counts, None))

    def close(self) -> None:
        """Commit what still waits (refusal counters: the requests have finished)."""
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        if self._pending:
            batch, self._pending = self._pending, []
            self._finish(batch, self._commit(batch))

    def _add(self, item: Waiting) -> None:
        self._pending.append(item)
        if len(self._pending) == 1 and not self._committing:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._finish(batch, self._commit(batch))
            if self._pending:
                loop.call_soon(self._flush)
            return
        self._committing = True
        done = loop.run_in_executor(self._thread, self._commit, batch)
        done.add_done_callback(lambda f: self._committed(batch, f.result()))

    def _committed(self, batch: list[Waiting], error: BaseException | None) -> None:
        self._committing = False
        self._finish(batch, error)
        if self._pending:  # what came in during the commit: the next group
            self._flush()

    def _commit(self, batch: list[Waiting]) -> BaseException | None:
        rows: list[Row] = []
        counts: Counter[tuple[int, str]] = Counter()
        for item_rows, item_counts, _ in batch:
            rows.extend(item_rows)
            counts.update(item_counts)
        try:
            with metrics.timed("sqlite", "enqueue"):
                self._store.enqueue(rows, counts)
        except Exception as exc:  # disk full, locked for too long, Redis away, ...
            self._failed(exc)
            return unavailable(exc) or exc
        self._recovered()
        if rows:
            self._on_commit()
        return None

    @staticmethod
    def _finish(batch: list[Waiting], error: BaseException | None) -> None:
        for _, _, future in batch:
            if future is None or future.done():  # counters only, or the client went away
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

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
