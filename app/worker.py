"""The embedded worker: a thread in the server process that drains the inbox.

Only one process at a time drains it (an advisory file lock), so running
``stacksift serve --workers N`` embedded does not process batches twice;
if the holder dies the lock is released and another process takes over.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from app.pipeline import Preparer, process_batch
from app.prepare_pool import PreparePool
from app.storage.models import IssueUpdate
from app.storage.sqlite import SqliteStore, encode_event

log = logging.getLogger("stacksift.worker")
IDLE_POLL_S = 0.1
CHECKPOINT_EVERY_S = 0.2
RETENTION_EVERY_S = 3600.0
RETENTION_STEP = 5000  # events deleted per housekeeping pass, so checkpoints keep running
# Niceness of the worker thread when it has a process of its own (`serve --workers N`):
# in a burst the API processes get the cores first, so clients are answered in
# milliseconds, and processing takes what is left and catches up once the burst ends
# (the inbox is durable). p99 measured: see docs/benchmarks.md, issue 8.
BACKGROUND_NICE = 10


class EmbeddedWorker:
    def __init__(
        self,
        store: SqliteStore,
        lock_path: Path,
        batch_size: int = 500,
        nice: int = 0,
        prepare: Preparer | PreparePool | None = None,
    ) -> None:
        self.store = store
        self.batch_size = batch_size
        self.nice = nice
        self._lock_path = lock_path
        self._prepare = prepare or Preparer(encode_event)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Alert evaluation (app.alerts.AlertService.on_updates): queues, never sends here.
        self.on_updates: Callable[[list[IssueUpdate]], object] | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="embedded-worker", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current batch, then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_once(self) -> int:
        rows = self.store.take_inbox(self.batch_size)
        if rows:
            updates = process_batch(self.store, rows, self._prepare)
            if updates and self.on_updates is not None:
                self.on_updates(updates)
        return len(rows)

    def _housekeeping(self) -> None:
        """WAL checkpoints (no commit makes one) and, hourly, retention."""
        next_retention = 0.0
        while not self._stop.wait(CHECKPOINT_EVERY_S):
            try:
                self.store.checkpoint()
                if time.monotonic() >= next_retention:
                    deleted = self.store.delete_expired(most=RETENTION_STEP)
                    if deleted:
                        log.info("retention: deleted %d events", deleted)
                    if deleted < RETENTION_STEP:  # else: the rest on the next pass
                        next_retention = time.monotonic() + RETENTION_EVERY_S
            except Exception as exc:  # disk full, say: the next try may do better
                log.warning("housekeeping failed: %s", exc)

    def _back_off(self, failures: int) -> None:
        """Wait before retrying a failed batch (a full disk, a lock held too long).  The
        batch's transaction rolled back, so its rows are still in the inbox: nothing is
        lost, and nothing is stored twice.  An inbox commit (wake) means the storage
        takes writes again, so it cuts the wait short: processing resumes as soon as
        space is back, not up to a full backoff later."""
        self._stop.wait(0.5)  # never a hot loop, however often ingest commits
        self._wake.clear()
        if not self._stop.is_set():
            self._wake.wait(min(2.0**failures, 30.0))

    def _run(self) -> None:
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as lock:
            while not self._stop.is_set():
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    self._stop.wait(1.0)
            # The process that drains also checkpoints the WALs and applies retention.
            housekeeper = threading.Thread(
                target=self._housekeeping, name="housekeeping", daemon=True
            )
            housekeeper.start()
            if self.nice:
                # Linux: this thread only. The housekeeper keeps the default: it holds
                # the inbox's write lock for its last pass, and a low-priority holder
                # would keep ingest waiting while other work runs (measured: 250 ms).
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            try:
                self._drain()
            finally:
                # Here, not in stop(): the pool's processes follow the thread that
                # started them (PDEATHSIG), and that is this one.
                self._prepare.close()

    def _drain(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                n = self.run_once()
                failures = 0
            except Exception:  # storage trouble: keep the rows, back off, try again
                failures += 1
                log.exception("processing batch failed (attempt %d)", failures)
                self._back_off(failures)
                continue
            if n < self.batch_size:
                # Ingest in this process wakes us at once; with `serve --workers N`
                # it commits in other processes, so the wait is also a short poll.
                self._wake.wait(IDLE_POLL_S)
                self._wake.clear()
                if n:
                    time.sleep(0.005)  # let a few more requests land to batch them
