"""Sending off the processing path: a queue, a few sender threads, retries with backoff.

The worker thread only appends to a queue; senders block on SMTP or HTTP
instead.  Each (notification, channel) is tried up to len(DELAYS)+1 times
and every attempt, successful or not, goes to ``record`` so the API can show
a bad address or a dead webhook.  The queue is in memory: notifications not
yet sent when the process stops are lost (the attempts list shows the last
``retrying``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from app.alerts.channels import Message, Sent, target
from app.alerts.engine import Notification

log = logging.getLogger("stacksift.alerts")

DELAYS = (1.0, 4.0, 16.0, 64.0)  # seconds before attempts 2..5
TICK = 0.25  # how often due digests are looked for


@dataclass(slots=True)
class _Job:
    note: Notification
    message: Message | None  # rendered once, on the first attempt, shared by the channels
    channel: dict[str, Any] | None  # None: render and fan out to every channel
    attempt: int = 1


class Delivery:
    def __init__(
        self,
        send: Callable[[dict[str, Any], Message], Sent],
        render: Callable[[Notification], Message],
        record: Callable[[list[dict[str, Any]]], None],
        *,
        tick: Callable[[], Sequence[Notification]] | None = None,
        threads: int = 4,
        delays: Sequence[float] = DELAYS,
    ) -> None:
        self._send = send
        self._render = render
        self._record = record
        self._tick = tick
        self._delays = tuple(delays)
        self._threads_n = threads
        self._heap: list[tuple[float, int, _Job]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stop = False
        self._threads: list[threading.Thread] = []
        self._ticker: threading.Thread | None = None
        self._stopped = threading.Event()  # the ticker's own: it must not eat senders' wake-ups

    def start(self) -> None:
        for i in range(self._threads_n):
            t = threading.Thread(target=self._run, name=f"alert-sender-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        if self._tick is not None:
            self._ticker = threading.Thread(
                target=self._run_ticker, name="alert-digests", daemon=True
            )
            self._ticker.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in [*self._threads, *([self._ticker] if self._ticker else [])]:
            t.join(max(0.0, deadline - time.monotonic()))

    def submit(self, notes: Sequence[Notification]) -> None:
        if not notes:
            return
        now = time.monotonic()
        with self._cond:
            for note in notes:
                heapq.heappush(self._heap, (now, next(self._seq), _Job(note, None, None)))
            self._cond.notify(len(notes))

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def _push(self, due: float, job: _Job) -> None:
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._seq), job))
            self._cond.notify()

    def _take(self) -> _Job | None:
        with self._cond:
            while not self._stop:
                if self._heap:
                    due = self._heap[0][0]
                    wait = due - time.monotonic()
                    if wait <= 0:
                        return heapq.heappop(self._heap)[2]
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            return None

    def _run(self) -> None:
        while (job := self._take()) is not None:
            try:
                self._handle(job)
            except Exception:
                log.exception("alert delivery failed for rule %s", job.note.rule_id)

    def _handle(self, job: _Job) -> None:
        if job.channel is None:
            message = self._render(job.note)
            now = time.monotonic()
            fan = [_Job(job.note, message, ch) for ch in job.note.channels]
            if not fan:
                return
            first, rest = fan[0], fan[1:]
            for other in rest:
                self._push(now, other)
            job = first
        assert job.message is not None and job.channel is not None
        result = self._send(job.channel, job.message)
        retry = result.outcome == "failed" and result.retry and job.attempt <= len(self._delays)
        outcome = "retrying" if retry else result.outcome
        self._record([_attempt(job, outcome, result.error)])
        if retry:
            job.attempt += 1
            self._push(time.monotonic() + self._delays[job.attempt - 2], job)

    def _run_ticker(self) -> None:
        assert self._tick is not None
        while not self._stopped.wait(TICK):
            try:
                self.submit(self._tick())
            except Exception:
                log.exception("looking for due alert digests failed")


def _attempt(job: _Job, outcome: str, error: str | None) -> dict[str, Any]:
    note, channel = job.note, job.channel or {}
    return {
        "project_id": note.project_id,
        "rule_id": note.rule_id,
        "rule_name": note.rule_name,
        "issue_id": note.issue_id,
        "kind": note.kind,
        "channel": str(channel.get("type")),
        "target": target(channel),
        "attempt": job.attempt,
        "outcome": outcome,
        "error": error,
        "events": note.events,
        "at": time.time(),
    }
