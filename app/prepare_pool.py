"""Preparing a batch in other processes, so processing uses more than one core.

Normalize, filter, scrub and group are pure Python over one event and hold the GIL;
with ``stacksift serve --workers N`` (embedded) they run in N processes of their own,
while the one worker thread keeps taking rows, storing results and feeding alerts:
grouping into issues stays under one writer, as before, and nothing about the order
of commits changes.  After a burst this is what lets the backlog drain on all cores.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from app.pipeline import Encode, Outcome, prepare_rows
from app.project_settings import SettingsCache
from app.storage.models import InboxRow, ProcessedEvent

log = logging.getLogger("stacksift.worker")

_cache = SettingsCache()  # one per pool process, kept across batches
PROCESS_NAME = "stacksift-prep"  # what ps and top show (at most 15 characters)


def _start(idle: bool, log_level: str) -> None:
    from app import logs
    from app.services import follow_parent, name_process

    logs.configure(log_level)
    # Ctrl-C and a service stop signal the whole process group: the worker thread
    # finishes its batch and then shuts the pool down, so the pool must not die first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    follow_parent(signal.SIGKILL)  # nothing to finish here: the rows are in the inbox
    name_process(PROCESS_NAME)
    if idle and hasattr(os, "SCHED_IDLE"):
        # Only CPU time that nothing else wants: in a burst the API processes answer
        # first, and preparing (pure CPU, holding no lock, so no inversion) takes every
        # idle moment, and both cores once the burst is over.
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def _prepare(rows: Sequence[InboxRow], settings: dict[int, str], encode: Encode) -> list[Outcome]:
    outcomes = prepare_rows(rows, settings, _cache, encode)
    for outcome in outcomes:
        if isinstance(outcome, ProcessedEvent):
            outcome.event = None  # sent as encoded: strings pickle fast, nested dicts do not
    return outcomes


class PreparePool:
    """A ``Prepare`` for ``process_batch``: each batch split over the processes."""

    def __init__(
        self, processes: int, encode: Encode, idle: bool = False, log_level: str = "INFO"
    ) -> None:
        self.processes = processes
        self.encode = encode
        self._args = (idle, log_level)
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.processes,
            # spawn, not fork: the server process has threads (and their locks) by now.
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=self._args,
        )

    def __call__(
        self, slices: Sequence[Sequence[InboxRow]], settings: dict[int, str]
    ) -> Iterator[list[Outcome]]:
        """All slices are submitted at once; the caller stores each one as it comes
        while the pool prepares the next ones."""
        try:
            futures = [self._pool.submit(_prepare, rows, settings, self.encode) for rows in slices]
            for future in futures:
                yield future.result()
        except BrokenProcessPool:
            # A pool process died (the OOM killer, say): the rest of the batch stays in
            # the inbox and is retried on a new pool.
            log.warning("a processing process died; starting new ones")
            self._discard()
            self._pool = self._new_pool()
            raise

    def _discard(self) -> None:
        """Kill what is left of a broken pool.  Its processes ignore SIGTERM (see _start),
        so the executor's own terminate() does not stop them, and one of them can wait
        forever for the call queue's lock, which the dead process held.  The executor's
        thread then waits forever for that queue, and the interpreter for the thread:
        the server never exited (seen as a test run that hung after its last test)."""
        for process in tuple((self._pool._processes or {}).values()):  # no public handle
            process.kill()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
