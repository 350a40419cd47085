"""Percolator-style rule evaluation: rules are stored queries, events are matched against them.

Each rule is compiled to a predicate once (cached by id and ``updated_at``) and
re-compiled only when rules change or, every RECOMPILE_EVERY seconds, so that
relative times such as ``timestamp:>-1h`` keep moving.  Evaluating a batch costs
one version read plus, per stored event, a dict lookup for its project's rules
and the predicates of those rules whose trigger applies.  Sending is someone
else's job: :meth:`AlertEngine.evaluate` only returns the notifications due.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from app import fields
from app.alerts.rules import duration
from app.alerts.state import AlertKey, AlertState
from app.query import compile_matcher, parse
from app.storage.models import IssueUpdate

log = logging.getLogger("stacksift.alerts")

RECOMPILE_EVERY = 60.0
TOP_FRAMES = 5


class RuleSource(Protocol):
    """Where enabled rules live (AlertStore embedded; anything with these two methods)."""

    def rules_version(self) -> int: ...

    def enabled_rules(self) -> list[dict[str, Any]]: ...


@dataclass(slots=True)
class CompiledRule:
    id: int
    project_id: int
    name: str
    trigger: str
    threshold: int
    window: float
    throttle: float
    channels: list[dict[str, Any]]
    updated: float
    query: str
    match: Callable[[dict[str, Any]], bool]
    q: int = 0  # index of its query among its project's distinct queries


@dataclass(slots=True)
class _ProjectRules:
    """A project's rules by the kind of update they can fire on, and its distinct queries:
    an ongoing event never meets new_issue/regression rules, and rules sharing a query
    cost one match per event."""

    ongoing: list[CompiledRule] = field(default_factory=list)  # every_event, frequency
    created: list[CompiledRule] = field(default_factory=list)  # ongoing + new_issue
    regressed: list[CompiledRule] = field(default_factory=list)  # ongoing + regression
    queries: list[Callable[[dict[str, Any]], bool]] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict)

    def add(self, rule: CompiledRule) -> None:
        q = self._index.get(rule.query)
        if q is None:
            q = self._index[rule.query] = len(self.queries)
            self.queries.append(rule.match)
        rule.q = q
        if rule.trigger in ("every_event", "frequency"):
            self.ongoing.append(rule)
        if rule.trigger != "regression":
            self.created.append(rule)
        if rule.trigger != "new_issue":
            self.regressed.append(rule)


@dataclass(slots=True)
class Notification:
    """One message to send to every channel of a rule; plain data, so a queue can carry it."""

    rule_id: int
    rule_name: str
    trigger: str
    project_id: int
    issue_id: int
    channels: list[dict[str, Any]]
    summary: dict[str, Any]
    kind: str = "alert"  # alert | digest
    events: int = 1  # matching events this message stands for
    since: float | None = None  # digest: first folded match
    created: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notification:
        return cls(**data)


def summarize(update: IssueUpdate) -> dict[str, Any]:
    """What a message needs from the event, small enough to keep while throttled."""
    event = update.event
    frames = [f for f in fields.frames(event) if f.get("in_app") is True]
    if not frames:
        frames = list(fields.frames(event))
    top = [
        {k: f.get(k) for k in ("function", "module", "filename", "lineno") if f.get(k) is not None}
        for f in reversed(frames[-TOP_FRAMES:])  # Sentry frames run oldest call first
    ]
    exc = fields.exceptions(event)
    title = ""
    if exc:
        last = exc[-1]
        title = ": ".join(str(x) for x in (last.get("type"), last.get("value")) if x)
    return {
        "event_id": event.get("event_id"),
        "title": title or fields.message(event) or str(event.get("message") or ""),
        "level": event.get("level"),
        "environment": event.get("environment"),
        "release": event.get("release"),
        "timestamp": event.get("timestamp"),
        "created": update.created,
        "regressed": update.regressed,
        "frames": top,
    }


class AlertEngine:
    """Turns issue updates into due notifications; holds no I/O but the two given objects."""

    def __init__(self, source: RuleSource, state: AlertState) -> None:
        self.source = source
        self.state = state
        self._version = -1
        self._compiled_at = 0.0
        self._by_project: dict[int, _ProjectRules] = {}
        self._by_id: dict[int, CompiledRule] = {}
        self._cache: dict[tuple[int, float], CompiledRule] = {}

    def refresh(self, now: float) -> None:
        version = self.source.rules_version()
        stale = now - self._compiled_at > RECOMPILE_EVERY
        if version == self._version and not stale:
            return
        if stale:
            self._cache.clear()
        cache: dict[tuple[int, float], CompiledRule] = {}
        by_project: dict[int, _ProjectRules] = {}
        for row in self.source.enabled_rules():
            key = (row["id"], row["updated_ts"])
            rule = self._cache.get(key)
            if rule is None:
                try:
                    rule = _compile(row, now)
                except Exception as exc:  # validated on save; a later parser change must not stop
                    log.warning("alert rule %s does not compile: %s", row["id"], exc)
                    continue
            cache[key] = rule
            if rule.project_id not in by_project:
                by_project[rule.project_id] = _ProjectRules()
            by_project[rule.project_id].add(rule)
        self._cache = cache
        self._by_project = by_project
        self._by_id = {r.id: r for r in cache.values()}
        self._version = version
        if stale:
            self._compiled_at = now

    def evaluate(
        self, updates: Sequence[IssueUpdate], now: float | None = None
    ) -> list[Notification]:
        """Notifications due for a processed batch (events dropped before storing never get
        here, so never alert)."""
        now = time.time() if now is None else now
        self.refresh(now)
        if not self._by_project:
            return []
        out: list[Notification] = []
        state = self.state
        by_project = self._by_project
        for update in updates:
            project = by_project.get(update.project_id)
            if project is None:
                continue
            if update.created:
                rules = project.created
            elif update.regressed:
                rules = project.regressed
            else:
                rules = project.ongoing
            if not rules:
                continue
            event = update.event
            queries = project.queries
            matched: list[bool | None] = [None] * len(queries)
            summary: dict[str, Any] | None = None
            for rule in rules:
                trigger = rule.trigger
                hit = matched[rule.q]
                if hit is None:
                    hit = matched[rule.q] = queries[rule.q](event)
                if not hit:
                    continue
                key = AlertKey(rule.project_id, rule.id, update.issue_id)
                event_id = str(event.get("event_id"))
                if trigger == "frequency" and not state.hit(
                    key, event_id, now, rule.window, rule.threshold
                ):
                    continue
                if summary is None:
                    summary = summarize(update)
                if state.admit(key, now, rule.throttle, summary):
                    out.append(
                        Notification(
                            rule.id,
                            rule.name,
                            trigger,
                            rule.project_id,
                            update.issue_id,
                            rule.channels,
                            summary,
                            created=now,
                        )
                    )
        return out

    def due_digests(self, now: float | None = None) -> list[Notification]:
        """Digests whose throttle ended; those of rules since deleted or disabled are dropped."""
        now = time.time() if now is None else now
        self.refresh(now)  # a process that never evaluated must still know the rules
        out: list[Notification] = []
        for d in self.state.due_digests(now):
            rule = self._by_id.get(d.key.rule_id)
            if rule is None or rule.project_id != d.key.project_id:
                continue
            out.append(
                Notification(
                    rule.id,
                    rule.name,
                    rule.trigger,
                    rule.project_id,
                    d.key.issue_id,
                    rule.channels,
                    d.summary,
                    kind="digest",
                    events=d.count,
                    since=d.since,
                    created=now,
                )
            )
        return out

    def rule_count(self) -> int:
        return len(self._by_id)


def _compile(row: dict[str, Any], now: float) -> CompiledRule:
    window = row.get("window")
    return CompiledRule(
        id=row["id"],
        project_id=row["project_id"],
        name=row["name"],
        trigger=row["trigger"],
        threshold=int(row.get("threshold") or 1),
        window=duration(window) if window else 0.0,
        throttle=duration(row["throttle"]),
        channels=row["channels"],
        updated=row["updated_ts"],
        query=row["query"],
        match=compile_matcher(parse(row["query"]), now),
    )
