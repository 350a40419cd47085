"""Alerts wired together for one process: rule store, engine, state, channels, delivery.

``AlertService.on_updates(updates)`` is the one call a worker makes after
``process_batch``; it never raises and never waits on the network.  The
distributed RQ job makes the same call with its batch's updates (a service
built once per worker process, with Redis state, so windows, throttles and
digests are shared by every worker).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from app.alerts.channels import Channels, Message, render
from app.alerts.delivery import Delivery
from app.alerts.engine import AlertEngine, Notification, RuleSource
from app.alerts.state import AlertState, MemoryState, RedisState
from app.settings import Settings
from app.storage.models import IssueUpdate
from app.storage.sqlite import SqliteStore
from app.storage.sqlite_alerts import AlertStore

log = logging.getLogger("stacksift.alerts")


def make_state(redis_url: str | None) -> AlertState:
    if not redis_url:
        return MemoryState()
    import redis

    return RedisState(redis.Redis.from_url(redis_url))


class AlertService:
    def __init__(
        self,
        store: SqliteStore,
        settings: Settings,
        *,
        rules: RuleSource | None = None,
        state: AlertState | None = None,
    ) -> None:
        self.store = store
        self.alert_store = getattr(store, "alert_store", None) or AlertStore(store)
        self.base_url = settings.public_base_url
        self.engine = AlertEngine(
            rules or self.alert_store, state or make_state(settings.redis_url)
        )
        self.channels = Channels(
            smtp_url=settings.smtp_url,
            postmark_token=settings.postmark_server_token,
            postmark_api_url=settings.postmark_api_url,
            sender=settings.alert_from,
            base_url=self.base_url,
        )
        self.delivery = Delivery(
            self.channels.send,
            self.render,
            self.alert_store.record_attempts,
            tick=self.engine.due_digests,
        )
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self.delivery.start()

    def close(self) -> None:
        if self._started:
            self.delivery.stop()
            self._started = False
        self.channels.close()

    def on_updates(self, updates: Sequence[IssueUpdate]) -> list[Notification]:
        """Evaluate a stored batch and queue what is due; never raises (the batch is
        already committed, an alert bug must not make the worker retry it)."""
        if not updates:
            return []
        try:
            notes = self.engine.evaluate(updates)
            self.delivery.submit(notes)
            return notes
        except Exception:
            log.exception("alert evaluation failed for a batch of %d updates", len(updates))
            return []

    def render(self, note: Notification) -> Message:
        issue: dict[str, Any] | None = None
        project = str(note.project_id)
        try:
            issue = self.store.get_issue(note.project_id, note.issue_id)
            found = self.store.get_project(note.project_id)
            if found:
                project = str(found["name"])
        except Exception:  # a message with less detail beats no message
            log.exception("reading issue %s for its notification failed", note.issue_id)
        return render(note, issue, project, self.base_url)
