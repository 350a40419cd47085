"""Preparing in a process pool (`serve --workers N`, embedded) stores exactly what
preparing in the worker thread stores, and a pool process that dies loses nothing.

Events come from the real sentry-sdk (the benchmark's generator), so the pool sees
what production sends: several exception types, breadcrumbs, locals, request data.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.envelope import parse_envelope
from app.ingest import Client, accept_envelope
from app.prepare_pool import PreparePool
from app.storage.models import IssueUpdate
from app.storage.sqlite import SqliteStore, encode_event
from app.worker import EmbeddedWorker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from bench.events import generate_envelopes  # noqa: E402

SETTINGS = {
    "filters": {"error_messages": ["*InventoryError*"]},
    "scrubbing": {"custom_patterns": [r"cart-\d+"]},
}


Row = tuple[int, float, bytes, bytes]


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    """Inbox rows of project 1, as ingest made them; one of them is not JSON."""
    client = Client(ip="203.0.113.9", user_agent="test", sdk=None)
    out: list[Row] = []
    for body in generate_envelopes(120, "http://key@localhost/1"):
        out += accept_envelope(parse_envelope(body, 1 << 20), 1, client).rows
    broken = (1, time.time(), b"{not json", orjson.dumps({"event_id": "b" * 32}))
    return [*out[:50], broken, *out[50:]]


def fill(store: SqliteStore, rows: list[Row]) -> None:
    if not store.list_projects():
        assert store.create_project("p") == 1
        store.set_project_settings(1, orjson.dumps(SETTINGS).decode())
    store.enqueue(rows, {})


def drain(worker: EmbeddedWorker) -> list[IssueUpdate]:
    updates: list[IssueUpdate] = []
    worker.on_updates = updates.extend
    while worker.run_once():
        pass
    return updates


def stored(path: Path) -> dict[str, list[Any]]:
    db = sqlite3.connect(path)
    tables = {
        "events": "SELECT * FROM events ORDER BY id",
        "fts": "SELECT rowid, words, parts FROM events_fts ORDER BY rowid",
        "values": "SELECT * FROM field_values ORDER BY event, field, value",
        "issues": "SELECT * FROM issues ORDER BY id",
        "users": "SELECT * FROM issue_users ORDER BY issue_id, user_key",
    }
    out = {name: db.execute(sql).fetchall() for name, sql in tables.items()}
    inbox = sqlite3.connect(path.parent / "inbox.db")
    out["inbox"] = inbox.execute("SELECT project_id, attempts FROM inbox").fetchall()
    out["counters"] = inbox.execute("SELECT project_id, reason, count FROM counters").fetchall()
    return out


def test_the_pool_stores_what_the_thread_stores(rows: list[Row], tmp_path: Path) -> None:
    results = {}
    for name in ("thread", "pool"):
        (tmp_path / name).mkdir()
        store = SqliteStore(tmp_path / name / "stacksift.db")
        store.setup()
        fill(store, rows)
        prepare = PreparePool(2, encode_event) if name == "pool" else None
        worker = EmbeddedWorker(store, tmp_path / name / "lock", batch_size=64, prepare=prepare)
        try:
            updates = drain(worker)
        finally:
            if prepare is not None:
                prepare.close()
        results[name] = (stored(store.path), updates)

    (thread, thread_updates), (pool, pool_updates) = results["thread"], results["pool"]
    assert pool == thread
    counters = dict(((reason, n) for _, reason, n in thread["counters"]))
    assert counters["processed"] > 0 and counters["filtered:error_message"] > 0
    assert thread["inbox"] == [(1, 1)]  # the broken row waits for its retry
    # Stored JSON is what dumping the event with its issue id gave before the pool.
    data = {row[2]: row[-1] for row in thread["events"]}  # event_id -> data
    for ours, theirs in zip(thread_updates, pool_updates, strict=True):
        assert ours.event == theirs.event and ours.project_id == theirs.project_id
        assert (ours.issue_id, ours.created, ours.regressed) == (
            theirs.issue_id,
            theirs.created,
            theirs.regressed,
        )
        assert data[ours.event["event_id"]] == orjson.dumps(ours.event)
        assert ours.event["issue_id"] == ours.issue_id
    assert "[Filtered]" in str(thread["events"]) and "cart-" not in str(thread["events"])


def test_a_pool_process_that_dies_loses_no_event(rows: list[Row], tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "stacksift.db")
    store.setup()
    fill(store, rows[:40])
    pool = PreparePool(2, encode_event)
    worker = EmbeddedWorker(store, tmp_path / "lock", batch_size=64, prepare=pool)
    try:
        drain(worker)  # starts the pool's processes
        first = len(stored(store.path)["events"])
        fill(store, rows[40:])
        broken = pool._pool._processes  # the pool's own dict: it spawns processes on demand
        os.kill(next(iter(broken)), signal.SIGKILL)
        with pytest.raises(BrokenProcessPool):
            worker.run_once()
        assert len(stored(store.path)["events"]) == first  # nothing half-stored
        # Nothing of the broken pool is left: a survivor stuck on the queue lock the dead
        # one held kept the pool's thread, and so the server, from ever exiting.
        deadline = time.monotonic() + 10
        while any(p.is_alive() for p in broken.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(p.is_alive() for p in broken.values())
        drain(worker)  # a new pool takes the same rows
    finally:
        pool.close()
    db = stored(store.path)
    ids = [r[2] for r in db["events"]]
    assert len(ids) == len(set(ids)) > first
    assert db["inbox"] == [(1, 1)]  # the broken row only, waiting for its retry
    counters = dict(((reason, n) for _, reason, n in db["counters"]))
    assert counters["processed"] + counters["filtered:error_message"] == len(rows) - 1
