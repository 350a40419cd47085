"""Plain records passed between the pipeline and the storage backends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson


class InboxRow(NamedTuple):
    id: int
    project_id: int
    received: float
    payload: bytes
    meta: bytes
    attempts: int


@dataclass(slots=True)
class ProcessedEvent:
    """An event ready to store: normalized, filtered, scrubbed and fingerprinted."""

    # None once ``encoded`` holds it (what a pool process sends back: the strings the
    # storage writes cross processes, not the nested dicts).
    event: dict[str, Any] | None
    fingerprint: str
    title: str
    culprit: str
    user_key: str | None
    # The storage's own form of the event, made before its write lock (Storage.encode).
    encoded: Any = None


class IssueUpdate:
    """What storing one event did to its issue; alert rules look at this.

    The event may be given as its JSON without the issue id (``EncodedEvent.data``),
    decoded on first use: when no alert rule of the project looks at it, it is never
    decoded."""

    __slots__ = ("issue_id", "project_id", "created", "regressed", "_event", "_json")

    def __init__(
        self,
        issue_id: int,
        event: dict[str, Any] | bytes,
        created: bool,
        regressed: bool,
        project_id: int | None = None,
    ) -> None:
        self.issue_id = issue_id
        self.created = created
        self.regressed = regressed
        if isinstance(event, bytes):
            assert project_id is not None
            self._event, self._json = None, event
        else:
            self._event, self._json = event, b""
        self.project_id: int = event["project_id"] if project_id is None else project_id  # type: ignore[index]

    @property
    def event(self) -> dict[str, Any]:
        if self._event is None:
            self._event = orjson.loads(self._json)
            self._event["issue_id"] = self.issue_id  # last, as in the stored JSON
        return self._event

    def __repr__(self) -> str:
        return (
            f"IssueUpdate(issue_id={self.issue_id}, project_id={self.project_id}, "
            f"created={self.created}, regressed={self.regressed})"
        )


class Page(NamedTuple):
    data: list[dict[str, Any]]
    next_cursor: str | None
