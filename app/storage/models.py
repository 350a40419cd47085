"""Plain records passed between the pipeline and the storage backends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


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

    event: dict[str, Any]
    fingerprint: str
    title: str
    culprit: str
    user_key: str | None


@dataclass(slots=True)
class IssueUpdate:
    """What storing one event did to its issue; alert rules look at this."""

    issue_id: int
    event: dict[str, Any]
    created: bool
    regressed: bool


class Page(NamedTuple):
    data: list[dict[str, Any]]
    next_cursor: str | None
