"""stats/top and stats/histogram give what the query language's matcher says they should.

The SQLite store answers these from indexes (``field_values``, written at insert,
and covering indexes) for speed; the reference here is plain Python over the
events the in-process matcher selects, so any drift between the fast paths and
the query semantics shows up as a counterexample.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import fields
from app.query import compile_matcher, parse
from app.search import Search
from app.storage.sqlite import SqliteStore, encode_event, insert_event
from tests.test_query_consistency import NOW, TAG_KEYS, TIMES, event_batches, queries

TOP_FIELDS = [
    *(f"tags.{key}" for key in TAG_KEYS),
    "exception.type",
    "release",
    "environment",
    "level",
    "user.id",
    "frame.function",
]
BOUNDS = [None, *TIMES[1:4]]


@contextmanager
def stored(batch: list[dict[str, Any]]) -> Iterator[SqliteStore]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "s.db")
        store.setup()
        with store.transaction() as conn:
            for event in batch:
                assert insert_event(conn, encode_event(event), event["issue_id"]) is not None
        yield store
        store.conn().close()


def values_of(event: dict[str, Any], field: str) -> set[str]:
    if field.startswith("tags."):
        tags = fields.tags(event)
        return {tags[field[5:]]} if field[5:] in tags else set()
    if field in fields.MULTI_FIELDS:
        return set(fields.multi(event, field))
    if field == "level":
        return {event["level"]}
    value = fields.scalar(event, field)
    return set() if value is None else {value}


def selected(batch: list[dict[str, Any]], search: Search) -> list[dict[str, Any]]:
    match = compile_matcher(search.node, search.now) if search.node else None
    return [
        e
        for e in batch
        if (search.start is None or e["timestamp"] >= search.start)
        and (search.end is None or e["timestamp"] < search.end)
        and (match is None or match(e))
    ]


def reference_top(
    batch: list[dict[str, Any]], field: str, search: Search, limit: int
) -> tuple[list[tuple[str, int]], int, int]:
    counts: Counter[str] = Counter()
    total = 0
    for event in selected(batch, search):
        values = values_of(event, field)
        counts.update(values)
        total += bool(values)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].encode()))[:limit]
    return top, total - sum(n for _, n in top), total


searches = st.builds(
    Search,
    node=st.none() | queries.map(parse),
    start=st.sampled_from(BOUNDS),
    end=st.sampled_from(BOUNDS),
    now=st.just(NOW),
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    batch=event_batches(),
    checks=st.lists(
        st.tuples(st.sampled_from(TOP_FIELDS), searches, st.integers(1, 4)), min_size=1, max_size=6
    ),
)
def test_top_values_agree_with_the_matcher(
    batch: list[dict[str, Any]], checks: list[tuple[str, Search, int]]
) -> None:
    with stored(batch) as store:
        for field, search, limit in checks:
            got = store.top_values(1, field, search, limit)
            assert got == reference_top(batch, field, search, limit), (field, search)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=event_batches(), search=searches, interval=st.sampled_from([60, 3600, 86400]))
def test_histogram_agrees_with_the_matcher(
    batch: list[dict[str, Any]], search: Search, interval: int
) -> None:
    start, end = TIMES[0] - 5, TIMES[-1] + 5
    with stored(batch) as store:
        buckets = store.histogram(1, search, start, end, interval)
    first = start - start % interval
    expected = Counter(int((e["timestamp"] - first) // interval) for e in selected(batch, search))
    assert [n for _, n in buckets] == [expected.get(i, 0) for i in range(len(buckets))]
    assert sum(n for _, n in buckets) == sum(expected.values())


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=event_batches())
def test_field_values_backfill_equals_what_insert_writes(batch: list[dict[str, Any]]) -> None:
    """A database from before field_values gets, at setup, the rows insert_event writes."""
    with stored(batch) as store:
        conn = store.conn()
        select = "SELECT * FROM field_values ORDER BY project_id, field, value, timestamp, event"
        written = conn.execute(select).fetchall()
        conn.execute("DELETE FROM field_values")
        conn.execute("DELETE FROM meta WHERE key = 'field_values'")
        store.setup()
        assert conn.execute(select).fetchall() == written
