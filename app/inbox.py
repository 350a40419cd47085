"""Group commit into the embedded inbox.

Every accepted event must be committed before its ``200``; one transaction
per request would cap ingest at the commit rate.  Requests hand their rows to
one writer thread, which commits whatever has queued up in a single
transaction and then wakes all the waiting requests at once.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Sequence

from app import metrics
from app.storage.sqlite import SqliteStore

log = logging.getLogger("stacksift.inbox")

Row = tuple[int, float, bytes, bytes]  # project_id, received, payload, meta
_MAX_BATCH = 2000


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
            except Exception as exc:  # disk full, locked for too long, ...
                log.error("inbox commit failed: %s", exc)
                error = exc
            for _, _, loop, future in batch:
                if loop is not None and future is not None:
                    loop.call_soon_threadsafe(_resolve, future, error)
            if error is None and rows:
                self._on_commit()


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the client went away
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
