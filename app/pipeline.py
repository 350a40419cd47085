"""The one processing pipeline: normalize, filter, scrub, group, store.

Both modes run this: the embedded worker thread and the RQ jobs of the
distributed mode hand it a batch of inbox rows and a storage backend.
"""

from __future__ import annotations

import logging
from collections import Counter
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


def prepare(row: InboxRow, settings: ProjectSettings) -> ProcessedEvent | str:
    """One event through normalize, filter, scrub, group; a drop returns its reason."""
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
        event, grouping.fingerprint, grouping.title, grouping.culprit, user_key(event)
    )


def process_batch(
    store: SqliteStore, rows: list[InboxRow], cache: SettingsCache
) -> list[IssueUpdate]:
    """Process and store a batch. An event that fails is retried later with backoff and,
    after MAX_ATTEMPTS, goes to the dead-letter store; the others are not held back."""
    settings = store.project_settings(r.project_id for r in rows)
    updates: list[IssueUpdate] = []
    step = store.commit_rows
    for start in range(0, len(rows), step):
        updates += _process_slice(store, rows[start : start + step], cache, settings)
    return updates


def _process_slice(
    store: SqliteStore, rows: list[InboxRow], cache: SettingsCache, settings: dict[int, str]
) -> list[IssueUpdate]:
    processed: list[ProcessedEvent] = []
    done: list[InboxRow] = []
    failures: list[tuple[InboxRow, str]] = []
    counts: Counter[tuple[int, str]] = Counter()
    for row in rows:
        try:
            result = prepare(row, cache.get(row.project_id, settings.get(row.project_id, "{}")))
        except Exception as exc:
            log.warning(
                "event %s of project %s failed processing: %s",
                row.id,
                row.project_id,
                type(exc).__name__,
            )
            failures.append((row, f"{type(exc).__name__}: {exc}"[:2000]))
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
            metrics.ISSUES_CREATED.labels(str(update.event["project_id"])).inc()
    return updates
