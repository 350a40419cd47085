"""The one processing pipeline: normalize, filter, scrub, group, store.

Both modes run this: the embedded worker thread and the RQ jobs of the
distributed mode hand it a batch of inbox rows and a storage backend.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from app import metrics
from app.grouping import group
from app.normalize import normalize_event
from app.project_settings import ProjectSettings, SettingsCache
from app.storage.models import InboxRow, IssueUpdate, ProcessedEvent
from app.storage.sqlite import SqliteStore

log = logging.getLogger("stacksift.pipeline")

MAX_ATTEMPTS = 5


def user_key(event: dict[str, Any]) -> str | None:
    """Who was affected, for the issue's user count: the most stable identity we have."""
    user = event.get("user")
    if isinstance(user, dict):
        for name in ("id", "email", "username", "ip_address"):
            value = user.get(name)
            if value not in (None, ""):
                return f"{name}:{value}"
    return None


Encode = Callable[[dict[str, Any]], Any]  # a storage's encode (app.storage.sqlite.encode_event)


def prepare(
    row: InboxRow, settings: ProjectSettings, encode: Encode | None = None
) -> ProcessedEvent | str:
    """One event through normalize, filter, scrub, group and, given the storage's
    ``encode``, into the form it writes; a drop returns its reason."""
    meta = orjson.loads(row.meta)
    event = normalize_event(
        orjson.loads(row.payload),
        received=row.received,
        client_ip=meta.get("client_ip"),
        user_agent=meta.get("user_agent"),
        sdk_hint=meta.get("sdk"),
        event_id=meta.get("event_id"),
    )
    event["project_id"] = row.project_id
    reason = settings.inbound_filter().check(event)
    if reason is not None:
        return reason
    event = settings.scrubber().scrub(event)
    grouping = group(event)
    return ProcessedEvent(
        event,
        grouping.fingerprint,
        grouping.title,
        grouping.culprit,
        user_key(event),
        encode(event) if encode is not None else None,
    )


@dataclass(slots=True)
class Failed:
    """An event whose processing raised: retried later, then dead-lettered."""

    error: str


Outcome = ProcessedEvent | str | Failed  # str: the reason a filter dropped the event


def prepare_rows(
    rows: Sequence[InboxRow],
    settings: dict[int, str],
    cache: SettingsCache,
    encode: Encode | None = None,
) -> list[Outcome]:
    """``prepare`` for each row, in order; one event failing does not fail the others."""
    outcomes: list[Outcome] = []
    for row in rows:
        try:
            outcomes.append(
                prepare(row, cache.get(row.project_id, settings.get(row.project_id, "{}")), encode)
            )
        except Exception as exc:
            log.warning(
                "event %s of project %s failed processing: %s",
                row.id,
                row.project_id,
                type(exc).__name__,
            )
            outcomes.append(Failed(f"{type(exc).__name__}: {exc}"[:2000]))
    return outcomes


class Preparer:
    """Prepares slices of a batch in the calling thread, each one when the previous one
    is stored.  ``app.prepare_pool.PreparePool`` prepares them in other processes, ahead
    of the commits, so one batch uses more than one core; either one is the ``prepare``
    of ``process_batch``."""

    def __init__(self, encode: Encode | None = None) -> None:
        self.cache = SettingsCache()
        self.encode = encode

    def __call__(
        self, slices: Sequence[Sequence[InboxRow]], settings: dict[int, str]
    ) -> Iterator[list[Outcome]]:
        return (prepare_rows(rows, settings, self.cache, self.encode) for rows in slices)

    def close(self) -> None:
        pass


Prepare = Callable[[Sequence[Sequence[InboxRow]], dict[int, str]], Iterator[list[Outcome]]]


def process_batch(store: SqliteStore, rows: list[InboxRow], prepare: Prepare) -> list[IssueUpdate]:
    """Process and store a batch. An event that fails is retried later with backoff and,
    after MAX_ATTEMPTS, goes to the dead-letter store; the others are not held back."""
    step = store.commit_rows
    slices = [rows[start : start + step] for start in range(0, len(rows), step)]
    settings = store.project_settings(r.project_id for r in rows)
    updates: list[IssueUpdate] = []
    for part, outcomes in zip(slices, prepare(slices, settings), strict=True):
        updates += _commit_slice(store, part, outcomes)
    return updates


def _commit_slice(
    store: SqliteStore, rows: list[InboxRow], outcomes: list[Outcome]
) -> list[IssueUpdate]:
    processed: list[ProcessedEvent] = []
    done: list[InboxRow] = []
    failures: list[tuple[InboxRow, str]] = []
    counts: Counter[tuple[int, str]] = Counter()
    for row, result in zip(rows, outcomes, strict=True):
        if isinstance(result, Failed):
            failures.append((row, result.error))
            continue
        done.append(row)
        if isinstance(result, str):
            counts[(row.project_id, f"filtered:{result}")] += 1
        else:
            processed.append(result)
            counts[(row.project_id, "processed")] += 1
    with metrics.timed(store.backend, "commit"):
        updates = store.commit_processed(done, processed, counts)
    if failures:
        store.postpone(failures, MAX_ATTEMPTS)
    for (_, outcome), n in counts.items():
        metrics.EVENTS_PROCESSED.labels(outcome).inc(n)
    if failures:
        metrics.EVENTS_PROCESSED.labels("failed").inc(len(failures))
    for update in updates:
        if update.created:
            metrics.ISSUES_CREATED.labels(str(update.project_id)).inc()
    return updates
