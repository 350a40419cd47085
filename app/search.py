"""``q``, ``from`` and ``to`` of the read API, turned into one parsed search.

The query language itself lives in :mod:`app.query`; this module adds the
time range every list and statistic reports back, so a dashboard knows what
window a number covers.
"""

from __future__ import annotations

import math
import re
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
# What storage and ISO 8601 output can hold: the Unix epoch up to the end of year 9999.
MIN_TIME = 0.0
MAX_TIME = 253402300800.0
_INTERVAL = re.compile(r"([0-9]{1,9})([smhdw])")


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
    if not MIN_TIME <= point <= MAX_TIME:
        raise SearchError(
            f"'{name}' must be between 1970-01-01 and 9999-12-31 (UTC), got {value!r}"
        )
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


def bucket_count(start: float, end: float, interval: int) -> int:
    """Buckets a histogram of ``[start, end)`` has: they are aligned to the epoch."""
    first = start - start % interval
    return int((end - first + interval - 1) // interval)


def interval_seconds(value: str | None, start: float, end: float) -> int:
    """``5m``/``1h``/``1d``/... or, when omitted, the smallest step giving a readable chart;
    either way the histogram has at most MAX_BUCKETS buckets."""
    if not value:
        for step in AUTO_STEPS:
            if bucket_count(start, end, step) <= MAX_AUTO_BUCKETS:
                return step
        # Longer than AUTO_STEPS covers: whole weeks, as many as keep the chart readable.
        week = AUTO_STEPS[-1]
        weeks = math.ceil((end - start) / (week * (MAX_AUTO_BUCKETS - 1)))
        return week * max(weeks, 1)
    match = _INTERVAL.fullmatch(value)
    if match is None or int(match[1]) == 0:
        raise SearchError(
            f"'interval' must look like 30s, 5m, 1h, 1d or 1w (at most 9 digits), got {value!r}"
        )
    seconds = int(match[1]) * UNIT_SECONDS[match[2]]
    if seconds > MAX_TIME or bucket_count(start, end, seconds) > MAX_BUCKETS:
        raise SearchError(
            f"'interval' {value} gives more than {MAX_BUCKETS} buckets or more than the "
            "storable time range; use a larger interval or a shorter range"
        )
    return seconds
