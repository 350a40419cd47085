"""``q``, ``from`` and ``to`` of the read API, turned into one parsed search.

The query language itself lives in :mod:`app.query`; this module adds the
time range every list and statistic reports back, so a dashboard knows what
window a number covers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from app.query import Node, QueryError, parse, to_sqlite
from app.query.ast import Compare
from app.query.parser import UNIT_SECONDS
from app.timefmt import iso

# Auto intervals for histograms: the smallest giving at most MAX_AUTO_BUCKETS.
AUTO_STEPS = (60, 300, 900, 3600, 10800, 21600, 43200, 86400, 604800)
MAX_AUTO_BUCKETS = 120
MAX_BUCKETS = 2000


class SearchError(ValueError):
    """A bad ``from``, ``to`` or ``interval``; the API answers 400."""

    status = 400
    code = "invalid_parameter"


@dataclass(slots=True)
class Search:
    node: Node | None
    start: float | None  # inclusive
    end: float | None  # exclusive
    now: float

    def span(self) -> dict[str, str | None]:
        return {
            "from": iso(self.start) if self.start is not None else None,
            "to": iso(self.end if self.end is not None else self.now),
        }

    def time_clauses(self) -> tuple[list[str], list[Any]]:
        """SQL conditions on a ``timestamp`` column for the time range, and their values."""
        clauses: list[str] = []
        args: list[Any] = []
        if self.start is not None:
            clauses.append("timestamp >= ?")
            args.append(self.start)
        if self.end is not None:
            clauses.append("timestamp < ?")
            args.append(self.end)
        return clauses, args

    def sqlite(self, project_id: int) -> tuple[str, list[Any]]:
        """WHERE fragment over ``events`` of the project (empty when nothing to filter)."""
        clauses, args = self.time_clauses()
        if self.node is not None:
            where, params = to_sqlite(self.node, self.now, project_id)
            clauses.append(f"({where})")
            args.extend(params)
        return " AND ".join(clauses), args


def _time(name: str, value: str | None, op: str, now: float) -> float | None:
    if not value:
        return None
    try:
        node = parse(f"timestamp:{op}{value}")
    except QueryError:
        node = None
    if not isinstance(node, Compare):
        raise SearchError(
            f"'{name}' must be an ISO 8601 time (2026-11-01 or 2026-11-01T10:00:00Z) "
            f"or a relative time like -24h, got {value!r}"
        )
    ((_, point),) = node.bounds(now)[-1:]
    return point


def build(
    q: str, from_: str | None, to: str | None, *, default_from: float | None = None
) -> Search:
    now = time.time()
    start = _time("from", from_, ">=", now)
    end = _time("to", to, "<", now)
    if start is None and default_from is not None:
        start = now - default_from
    if start is not None and end is not None and start >= end:
        raise SearchError("'from' must be before 'to'")
    return Search(parse(q), start, end, now)


def interval_seconds(value: str | None, start: float, end: float) -> int:
    """``5m``/``1h``/``1d``/... or, when omitted, the smallest step giving a readable chart."""
    if not value:
        for step in AUTO_STEPS:
            if (end - start) / step <= MAX_AUTO_BUCKETS:
                return step
        return AUTO_STEPS[-1]
    unit = value[-1:]
    if unit not in UNIT_SECONDS or not value[:-1].isdigit() or int(value[:-1]) == 0:
        raise SearchError(f"interval must look like 30s, 5m, 1h, 1d or 1w, got {value!r}")
    seconds = int(value[:-1]) * UNIT_SECONDS[unit]
    if (end - start) / seconds > MAX_BUCKETS:
        raise SearchError(
            f"interval {value} gives more than {MAX_BUCKETS} buckets for this "
            "range; use a larger interval or a shorter range"
        )
    return seconds
