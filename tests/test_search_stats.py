"""stats/top and stats/histogram give what the query language's matcher says they should.

The SQLite store answers these from indexes (``field_values``, written at insert,
and covering indexes) for speed; the reference here is plain Python over the
events the in-process matcher selects, so any drift between the fast paths and
the query semantics shows up as a counterexample.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import fields
from app.query import compile_matcher, parse
from app.search import Search
from app.storage.sqlite import SqliteStore, encode_event, insert_event
from tests.conftest import ADMIN_TOKEN, Server
from tests.test_ingest import event as new_event
from tests.test_query_consistency import NOW, TAG_KEYS, TIMES, event_batches, queries
from tests.test_read_api import send

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
    return top, counts.total() - sum(n for _, n in top), total


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


# -- through the server, on both backends ---------------------------------------------

BACKENDS = ("embedded", "distributed")


def framed(functions: list[str], exc_type: str, env: str) -> dict[str, Any]:
    frames = [{"function": f, "module": "shop", "in_app": True} for f in functions]
    return new_event(
        None,
        environment=env,
        tags={"region": env},
        exception={
            "values": [
                {"type": exc_type, "value": "x", "stacktrace": {"frames": frames}},
                {"type": "Wrapper", "value": "y"},
            ]
        },
    )


def test_other_is_the_counts_of_the_values_not_listed(server: Server) -> None:
    """``other`` adds up the counts of the values left out, so ``data`` and ``other``
    together describe every value; an event with several values of a field (frames,
    chained exceptions) counts for each, which is why ``other`` once went negative
    when it was ``total`` minus the listed counts."""
    p = server.project()
    batch = [
        framed(["main", "handler", "charge", "charge"], "CardError", "prod"),
        framed(["main", "handler", "refund"], "CardError", "prod"),
        framed(["main", "worker", "sync", "retry", "backoff"], "Timeout", "staging"),
    ]
    send(server, p, batch)
    server.wait_events(p, len(batch))

    def top(field: str, limit: int, q: str = "") -> dict[str, Any]:
        resp = server.get(
            f"/api/v1/projects/{p.id}/stats/top", p.read_token, field=field, limit=limit, q=q
        )
        assert resp.status_code == 200, resp.text
        return resp.json()

    got = top("frame.function", 2)
    assert got["data"] == [{"value": "main", "count": 3}, {"value": "handler", "count": 2}]
    # charge, refund, worker, sync, retry, backoff: once each ("charge" twice in one event)
    assert (got["other"], got["total"]) == (6, 3)
    got = top("frame.function", 2, q="environment:prod")
    assert (got["other"], got["total"]) == (2, 2)  # charge, refund
    got = top("frame.function", 100)
    assert got["other"] == 0 and sum(d["count"] for d in got["data"]) == 11

    # exception.type (chained: every event has "Wrapper" too), the field_values path
    # without q and the events path with q.
    for q in ("", "level:error"):
        got = top("exception.type", 1, q=q)
        assert got["data"] == [{"value": "Wrapper", "count": 3}], q
        assert (got["other"], got["total"]) == (3, 3), q  # CardError 2, Timeout 1
    for q in ("", "level:error"):
        got = top("tags.region", 1, q=q)
        assert got["data"] == [{"value": "prod", "count": 2}], q
        assert (got["other"], got["total"]) == (1, 3), q
    got = top("environment", 1)
    assert (got["data"], got["other"], got["total"]) == ([{"value": "prod", "count": 2}], 1, 3)


def test_project_times_are_iso_like_every_other_time(server: Server) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    created = httpx.post(f"{server.url}/api/v1/projects", json={"name": "iso"}, headers=admin)
    assert created.status_code == 201, created.text
    listed = server.get("/api/v1/projects", ADMIN_TOKEN).json()["data"]
    (mine,) = [row for row in listed if row["id"] == created.json()["id"]]
    for value in (created.json()["created_at"], mine["created_at"]):
        assert isinstance(value, str) and value.endswith("Z"), value
        when = dt.datetime.fromisoformat(value)
        assert abs(when.timestamp() - time.time()) < 600, value
    assert created.json()["created_at"] == mine["created_at"]
