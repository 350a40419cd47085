"""The embedded store's two files: ingest writes inbox.db, processing stacksift.db.

What the split must not change: rows of a database from before it are processed,
failing events still reach the dead-letter table and come back on replay, counters
of both sides add up, and a batch processed again (a crash between processing's
two commits) is stored and counted once.  And embedded retention.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import time
from pathlib import Path

import orjson
import pytest
import zstandard

from app.pipeline import MAX_ATTEMPTS
from app.storage.sqlite import ZSTD_MAGIC, SqliteStore
from app.worker import EmbeddedWorker

# The inbox and dead-letter tables as stacksift.db had them before inbox.db.
OLD_TABLES = """
CREATE TABLE inbox (
    id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, received REAL NOT NULL,
    payload BLOB NOT NULL, meta BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0
);
CREATE TABLE dead_letter (
    id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, received REAL NOT NULL,
    payload BLOB NOT NULL, meta BLOB NOT NULL, error TEXT NOT NULL, failed_at REAL NOT NULL
);
CREATE TABLE counters (
    project_id INTEGER NOT NULL, reason TEXT NOT NULL, day TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (project_id, reason, day)
) WITHOUT ROWID;
"""


def row(project_id: int, message: str, event_id: str) -> tuple[int, float, bytes, bytes]:
    payload = orjson.dumps({"message": message, "level": "error", "platform": "python"})
    return project_id, time.time(), payload, orjson.dumps({"event_id": event_id})


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path / "stacksift.db")
    store.setup()
    return store


def drain(store: SqliteStore, tmp_path: Path) -> int:
    worker = EmbeddedWorker(store, tmp_path / "worker.lock")
    total = 0
    while n := worker.run_once():
        total += n
    return total


def event_ids(store: SqliteStore, project_id: int) -> list[str]:
    rows = store.conn().execute(
        "SELECT event_id FROM events WHERE project_id = ? ORDER BY event_id", (project_id,)
    )
    return [r[0] for r in rows]


def test_ingest_writes_only_inbox_db(store: SqliteStore, tmp_path: Path) -> None:
    project = store.create_project("p")
    one = row(project, "one", "a" * 32)
    store.enqueue([one], {(project, "accepted"): 1})
    with sqlite3.connect(tmp_path / "inbox.db") as inbox:
        (stored,) = inbox.execute("SELECT payload FROM inbox").fetchall()
    assert stored[0][:4] == ZSTD_MAGIC and zstandard.decompress(stored[0]) == one[2]
    tables = {r[0] for r in store.conn().execute("SELECT name FROM sqlite_master")}
    assert "inbox" not in tables and "dead_letter" not in tables
    assert drain(store, tmp_path) == 1
    assert event_ids(store, project) == ["a" * 32]
    assert store.inbox_stats() == (0, None)


def test_rows_of_an_older_database_move_to_inbox_db_once(tmp_path: Path) -> None:
    path = tmp_path / "stacksift.db"
    first = SqliteStore(path)
    first.setup()
    project = first.create_project("p")
    with sqlite3.connect(path) as old:  # the layout before inbox.db, with rows waiting
        old.executescript(OLD_TABLES)
        old.executemany(
            "INSERT INTO inbox (project_id, received, payload, meta) VALUES (?,?,?,?)",
            [row(project, f"waiting {i}", f"{i:032x}") for i in range(3)],
        )
        old.execute(
            "INSERT INTO dead_letter (project_id, received, payload, meta, error, failed_at) "
            "VALUES (?,?,?,?,?,?)",
            (*row(project, "dead", "d" * 32), "ValueError: x", time.time()),
        )
        old.execute(
            "INSERT INTO counters VALUES (?, 'accepted', ?, 4)",
            (project, time.strftime("%Y-%m-%d", time.gmtime())),
        )
    first.enqueue([], {(project, "accepted"): 1})  # a counter in inbox.db already
    store = SqliteStore(path)
    store.setup()
    store.setup()  # every process runs it; the second finds nothing to move
    assert store.inbox_stats()[0] == 3
    assert [d["event_id"] for d in store.list_dead_letters()] == ["d" * 32]
    tables = {r[0] for r in store.conn().execute("SELECT name FROM sqlite_master")}
    assert "inbox" not in tables and "dead_letter" not in tables
    assert drain(store, tmp_path) == 3
    assert event_ids(store, project) == [f"{i:032x}" for i in range(3)]
    assert store.counters(project) == {"accepted": 5, "processed": 3}


def test_failing_events_become_dead_letters_and_replay(store: SqliteStore, tmp_path: Path) -> None:
    project = store.create_project("p")
    broken = (project, time.time(), b"{not json", orjson.dumps({"event_id": "b" * 32}))
    store.enqueue([broken, row(project, "fine", "f" * 32)], {})
    inbox = sqlite3.connect(tmp_path / "inbox.db", isolation_level=None)
    for attempt in range(MAX_ATTEMPTS):
        assert drain(store, tmp_path) >= 1, attempt
        inbox.execute("UPDATE inbox SET not_before = 0")  # skip the backoff
    assert store.inbox_stats()[0] == 0
    (dead,) = store.list_dead_letters()
    assert dead["event_id"] == "b" * 32 and "JSONDecodeError" in dead["error"]
    assert event_ids(store, project) == ["f" * 32]  # the good one was not held back
    assert store.replay_dead_letters([dead["id"]]) == 1
    assert store.list_dead_letters() == [] and store.inbox_stats()[0] == 1


def test_counters_of_ingest_and_processing_add_up(store: SqliteStore, tmp_path: Path) -> None:
    project = store.create_project("p")
    store.enqueue(
        [row(project, "x", "1" * 32), row(project, "y", "2" * 32)],
        {(project, "accepted"): 2, (project, "rate_limited"): 5},
    )
    store.enqueue([row(project, "z", "3" * 32)], {(project, "accepted"): 1})
    drain(store, tmp_path)
    counts = store.counters(project)
    assert counts["accepted"] == 3 and counts["rate_limited"] == 5
    assert counts["processed"] == 3


def test_a_batch_processed_again_is_stored_once(
    store: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the events' commit and before the inbox rows' delete leaves the
    rows behind: processing them again must not store or count the events twice."""
    project = store.create_project("p")
    store.enqueue([row(project, "same error", f"{i:032x}") for i in range(4)], {})

    def crash() -> None:
        raise RuntimeError("killed between the two commits")

    with monkeypatch.context() as m:
        m.setattr(store.inbox_db, "transaction", crash)
        with pytest.raises(RuntimeError):
            drain(store, tmp_path)
    assert len(event_ids(store, project)) == 4 and store.inbox_stats()[0] == 4
    assert drain(store, tmp_path) == 4
    assert len(event_ids(store, project)) == 4 and store.inbox_stats()[0] == 0
    issues = store.conn().execute("SELECT count FROM issues WHERE project_id = ?", (project,))
    assert [r[0] for r in issues] == [4]
    assert store.counters(project)["processed"] == 4  # counted with the delete, once


def test_retention_deletes_events_received_on_expired_days(tmp_path: Path) -> None:
    """The days the Elasticsearch test drops whole indices for: the events go, with their
    full-text and field_values rows; the issue stays (as it does there)."""
    store = SqliteStore(tmp_path / "stacksift.db", retention_days=7)
    store.setup()
    project = store.create_project("p")
    now = time.time()

    def received_at(at: float, message: str, event_id: str) -> tuple[int, float, bytes, bytes]:
        payload = orjson.dumps({"message": message, "level": "error", "tags": {"k": message}})
        return project, at, payload, orjson.dumps({"event_id": event_id})

    store.enqueue(
        [
            received_at(now - 30 * 86400, "ancient", "0" * 32),
            received_at(now - 8 * 86400 - 60, "expired", "1" * 32),
            received_at(now - 6 * 86400, "edge", "2" * 32),
            received_at(now, "fresh", "3" * 32),
        ],
        {},
    )
    drain(store, tmp_path)
    assert store.delete_expired(now, batch=1, most=1) == 1  # the worker's step-by-step pass
    assert store.delete_expired(now) == 1
    assert event_ids(store, project) == ["2" * 32, "3" * 32]
    fts = store.conn().execute("SELECT count(*) FROM events_fts").fetchone()[0]
    values = store.conn().execute("SELECT value FROM field_values ORDER BY value").fetchall()
    assert fts == 2 and [v[0] for v in values] == ["edge", "fresh"]
    assert store.conn().execute("SELECT count(*) FROM issues").fetchone()[0] >= 1
    assert store.delete_expired(now) == 0


def test_inbox_file_gives_back_the_space_of_a_drained_backlog(
    store: SqliteStore, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox.db"
    assert store.inbox_db.conn().execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    project = store.create_project("p")
    # Random text: the inbox compresses payloads, and this one must still take ~6 KB.
    blob = orjson.dumps({"message": base64.b64encode(os.urandom(6000)).decode()})
    store.enqueue([(project, time.time(), blob, b"{}")] * 3000, {})  # ~18 MB of backlog
    with store.inbox_db.transaction() as conn:  # processed
        conn.execute("DELETE FROM inbox")
    store.checkpoint()  # the default keeps up to 64 MB free for the next burst
    store.inbox_db.conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    full = inbox.stat().st_size
    assert full > 16_000_000
    released = 0
    while step := store.inbox_db.release_free_pages(keep_bytes=1 << 20, step_pages=1000):
        released += step
    store.inbox_db.conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert released > 3000 and inbox.stat().st_size < 2_000_000 < full
    store.enqueue([row(project, "after", "e" * 32)], {})  # still a working inbox
    assert drain(store, tmp_path) == 1
