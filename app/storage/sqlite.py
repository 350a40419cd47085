"""Embedded storage: SQLite files in WAL mode (stacksift.db, and inbox.db for ingest).

Connections are per thread (sqlite3 objects must not cross threads).  WAL with
``synchronous=NORMAL`` means a committed transaction survives the crash of any
process (the WAL is in the OS page cache); only a power loss can cost the last
transactions.  That is the promise a ``200`` makes in embedded mode.
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import functools
import logging
import math
import mmap
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import zstandard

from app import fields, text
from app.normalize import MAX_SECS_IN_FUTURE
from app.query.sqlite import register as register_text_match
from app.search import Search
from app.storage.models import InboxRow, IssueUpdate, Page, ProcessedEvent
from app.timefmt import iso

log = logging.getLogger("stacksift.sqlite")

SCHEMA = (Path(__file__).parent / "sqlite_schema.sql").read_text()
INBOX_SCHEMA = (Path(__file__).parent / "sqlite_inbox_schema.sql").read_text()
_INBOX_COLUMNS = "project_id, received, payload, meta, attempts, not_before"
_DEAD_LETTER_COLUMNS = "project_id, received, payload, meta, error, failed_at"

# sort name -> position of its column in ISSUE_COLUMNS
ISSUE_SORTS = {"last_seen": 8, "first_seen": 7, "count": 9}
ISSUE_COLUMNS = (
    "id, project_id, fingerprint, title, culprit, level, status, first_seen, last_seen, "
    "count, user_count, regressed_at, resolved_at"
)
EVENT_COLUMNS = "id, event_id, issue_id, timestamp, data"


# What Database.checkpoint leaves for its pass under the write lock, at most.
_LOCKED_CHECKPOINT_BYTES = 1 << 20
_INSERT_CHUNK = 4000  # 4 values a row, under SQLite's 32,766 bound variables


# Inbox payloads are zstd frames (level 1: 24 us an event, 2.5x smaller): every inbox
# byte is written to the WAL, copied to the file by a checkpoint and freed again, and
# the checkpoint's locked pass is what ingest's tail latency waits on (docs/benchmarks.md,
# issue 8).  A payload that is not a frame is stored JSON: rows of older versions and
# replayed dead letters (those keep their JSON, readable through the API).
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_codecs = threading.local()  # zstandard's (de)compressors are one thread's each


def pack_payload(payload: bytes) -> bytes:
    compressor = getattr(_codecs, "compressor", None)
    if compressor is None:
        compressor = _codecs.compressor = zstandard.ZstdCompressor(level=1)
    return compressor.compress(payload)


def unpack_payload(blob: bytes) -> bytes:
    if blob[:4] != ZSTD_MAGIC:
        return blob
    decompressor = getattr(_codecs, "decompressor", None)
    if decompressor is None:
        decompressor = _codecs.decompressor = zstandard.ZstdDecompressor()
    return decompressor.decompress(blob)


@functools.lru_cache(maxsize=64)
def _inbox_insert(rows: int) -> str:
    return "INSERT INTO inbox (project_id, received, payload, meta) VALUES " + ",".join(
        ["(?,?,?,?)"] * rows
    )


class CursorError(ValueError):
    """A cursor that this server did not hand out."""

    status = 400
    code = "invalid_cursor"


def encode_cursor(values: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(values))).decode().rstrip("=")


INT64 = (-(2**63), 2**63 - 1)


def _cursor_value_ok(value: Any, kind: type) -> bool:
    """``kind`` int: a signed 64-bit int; float: a finite number in that range; str: a str."""
    if kind is str:
        return isinstance(value, str)
    if type(value) is int:  # not bool, which a JSON true would be
        return INT64[0] <= value <= INT64[1]
    return kind is float and type(value) is float and INT64[0] <= value <= INT64[1]


def decode_cursor(cursor: str, kinds: Sequence[type]) -> list[Any]:
    """The values of a cursor, each of the type ``kinds`` names (int, float or str), so a
    tampered cursor is a 400 and never reaches a query."""
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError):
        raise CursorError("cursor is not one this server handed out") from None
    if (
        not isinstance(values, list)
        or len(values) != len(kinds)
        or not all(map(_cursor_value_ok, values, kinds))
    ):
        raise CursorError("cursor is not one this server handed out")
    return values


class EncodedEvent(NamedTuple):
    """A processed event in the form the events tables store it.  Computed before the
    write lock, by whoever prepared the event (a pool process with ``serve --workers
    N``), so that under the lock only SQL runs and only these strings cross processes."""

    columns: tuple[Any, ...]  # _INSERT_EVENT's values but the last two
    data: bytes  # the event's JSON without issue_id, which the insert appends
    words: str  # the full-text row (app.text.streams)
    parts: str
    values: list[tuple[str, str, int]]  # field_values rows: (field, value, first)


def encode_event(event: dict[str, Any]) -> EncodedEvent:
    multi = {name: fields.multi(event, name) for name in fields.MULTI_FIELDS}
    tags = fields.tags(event)
    if "issue_id" in event:  # the insert appends the one the event gets
        event = {k: v for k, v in event.items() if k != "issue_id"}
    streams = text.streams(fields.text(event))
    return EncodedEvent(
        (
            event["project_id"],
            event["event_id"],
            event["timestamp"],
            event["received"],
            event["level"],
            fields.level_num(event["level"]),
            *(fields.scalar(event, name) for name in fields.SCALAR_FIELDS if name != "level"),
            orjson.dumps(tags).decode(),
            orjson.dumps({k: v for k, v in multi.items() if v}).decode(),
        ),
        orjson.dumps(event),
        streams.words,
        streams.parts,
        value_items(tags, multi),
    )


def event_json(encoded: EncodedEvent, issue_id: int) -> bytes:
    """The stored JSON: the event as prepared, issue_id last (``event["issue_id"] = ...``
    on the dict, then dumping it, gives the same bytes)."""
    return b'%s,"issue_id":%d}' % (encoded.data[:-1], issue_id)


_INSERT_EVENT = (
    "INSERT OR IGNORE INTO events (project_id, event_id, timestamp, received, level, "
    'level_num, environment, release, platform, logger, server_name, "transaction", message, '
    "user_id, user_email, tags, multi, issue_id, data) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


# Multi-valued fields kept in field_values (see sqlite_schema.sql). frame.* were
# measured too: ~10 more rows per event raised field_values' storage cost from
# ~22-26 % to ~39-42 % (docs/benchmarks.md).
VALUE_FIELDS = ("exception.type",)
_INSERT_VALUES = "INSERT INTO field_values VALUES (?,?,?,?,?,?)"


def value_items(tags: dict[str, Any], multi: dict[str, list[str]]) -> list[tuple[str, str, int]]:
    """An event's ``field_values`` rows as (field, value, first): each distinct value once
    per field."""
    # normalize_event makes every tag value a string; the backfill keeps JSON text only.
    rows = [("tags." + k, v, 1) for k, v in tags.items() if isinstance(v, str)]
    for name in VALUE_FIELDS:
        values = multi[name]
        if values:
            first = 1
            for value in dict.fromkeys(values):
                rows.append((name, value, first))
                first = 0
    return rows


_DELETE_VALUES = (
    "DELETE FROM field_values WHERE project_id = ? AND field = ? AND value = ? "
    "AND timestamp = ? AND event = ? AND first = ?"
)


def _stored_value_rows(project_id: int, rows: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The field_values rows of stored events, from their (id, timestamp, tags, multi)."""
    out: list[tuple[Any, ...]] = []
    for rowid, ts, tags, multi in rows:
        stored = orjson.loads(multi)
        items = value_items(orjson.loads(tags), {n: stored.get(n, []) for n in VALUE_FIELDS})
        out += [(project_id, f, v, ts, rowid, first) for f, v, first in items]
    return out


def insert_event(conn: sqlite3.Connection, encoded: EncodedEvent, issue_id: int) -> int | None:
    """Store one processed event, its full-text row and its field_values rows; None if
    its id was already stored."""
    cur = conn.execute(_INSERT_EVENT, (*encoded.columns, issue_id, event_json(encoded, issue_id)))
    if cur.rowcount == 0:
        return None
    rowid = cur.lastrowid or 0
    conn.execute(
        "INSERT INTO events_fts (rowid, words, parts) VALUES (?,?,?)",
        (rowid, encoded.words, encoded.parts),
    )
    if encoded.values:
        pid, ts = encoded.columns[0], encoded.columns[2]
        conn.executemany(
            _INSERT_VALUES, [(pid, f, v, ts, rowid, first) for f, v, first in encoded.values]
        )
    return rowid


@dataclass(slots=True)
class KeyInfo:
    id: int
    project_id: int
    kind: str
    label: str
    hint: str
    created_at: float
    revoked_at: float | None  # when it stops working: in the future during a rotation grace

    def active(self, now: float) -> bool:
        return self.revoked_at is None or self.revoked_at > now


def _fsync(path: str) -> None:
    """Flush a file's dirty pages (the page cache is the inode's: any descriptor will do)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Database:
    """One SQLite file in WAL mode: a connection per thread, and a lock file that its
    writers queue on."""

    def __init__(
        self, path: Path, on_connect: Callable[[sqlite3.Connection], None] | None = None
    ) -> None:
        self.path = path
        self._on_connect = on_connect
        self._local = threading.local()
        self._page_bytes = 0

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            # Scrubbed-away secrets must not survive in freed pages (inbox rows hold
            # the raw event until processing deletes them).
            conn.execute("PRAGMA secure_delete=ON")
            conn.execute("PRAGMA cache_size=-16384")  # 16 MiB per thread
            # No commit checkpoints: one fsyncs and copies the WAL inside the commit that
            # crosses 1000 pages, stalling a whole batch of requests 10-25 ms (and 35 % of
            # processing time). checkpoint() runs on a thread of its own instead.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            if self._on_connect is not None:
                self._on_connect(conn)
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` so writers queue on the lock instead of failing mid-way.

        Writers first queue on a file lock: the kernel hands it over the moment it is
        released, where SQLite's busy handler would sleep 1, 2, 5, 10 ... ms between
        tries (p99 134 ms with two API processes against 24 ms here)."""
        conn = self.conn()
        lock = self._write_lock()
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # a failed COMMIT (busy, I/O) leaves it open
                    conn.execute("ROLLBACK")
                raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    @contextmanager
    def write_locked(self) -> Iterator[None]:
        """Hold off this file's writers (of every process) without a transaction."""
        lock = self._write_lock()
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    def _write_lock(self) -> int:
        """This thread's descriptor of the write lock file (flock is per descriptor, so
        threads of one process exclude each other too)."""
        fd = getattr(self._local, "write_lock", None)
        if fd is None:
            fd = os.open(f"{self.path}.writelock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._local.write_lock = fd
        return fd

    def checkpoint(self, wal_limit: int = 64 << 20) -> None:
        """Copy the WAL into the database without blocking anyone (PASSIVE).

        Under steady writes that never lets the WAL start over (writers append during
        every pass), and it grew by ~50 MB/s here.  So once it holds ``wal_limit``
        bytes, a second pass runs with writers held off: it has only the frames of
        the first pass's few milliseconds to copy, and afterwards every frame is in
        the database, so the next writer reuses the WAL from its start.  (TRUNCATE or
        RESTART copy and fsync under the lock from scratch: 90 ms stalls.)  Each
        unlocked pass copies what arrived during the one before, so a few of them
        first leave the locked pass little to copy.  And a pass that does not reach the
        end of the WAL does not fsync the database: the locked one, which does, used to
        flush every page the unlocked ones had copied (32 ms median held under full
        load, p99 of ingest 27-35 ms).  Flushing both files first leaves it only its own
        few frames: 8.5 ms held, p99 14-16 ms (docs/benchmarks.md, issue 8)."""
        conn = self.conn()
        page = self._page_size()
        _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames * page <= wal_limit:
            return
        for _ in range(4):
            if (frames - copied) * page <= _LOCKED_CHECKPOINT_BYTES:
                break
            _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        for path in (f"{self.path}-wal", str(self.path)):
            _fsync(path)
        with self.write_locked():
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def release_free_pages(self, keep_bytes: int = 64 << 20, step_pages: int = 512) -> int:
        """Give free pages beyond ``keep_bytes`` back to the file system, ``step_pages``
        at a time (each step holds the write lock for a few milliseconds); returns how
        many pages were released.  Only for a file created with auto_vacuum=INCREMENTAL."""
        conn = self.conn()
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        if free * self._page_size() <= keep_bytes:
            return 0
        with self.transaction() as conn:
            # Each step of the statement releases one page: run it to its end.
            conn.execute(f"PRAGMA incremental_vacuum({int(step_pages)})").fetchall()
        return free - int(conn.execute("PRAGMA freelist_count").fetchone()[0])

    def _page_size(self) -> int:
        if not self._page_bytes:
            self._page_bytes = int(self.conn().execute("PRAGMA page_size").fetchone()[0])
        return self._page_bytes


class ConfigVersion:
    """A counter of changes to keys and project settings, in a file every process maps.

    Revoking a key or saving settings bumps it, and a process that reads a new value
    drops its caches: changes apply at once everywhere.  Reading is a memory read; the
    ``stat()`` of a stamp file it replaces, three per ingest request, took ~3 % of an
    API process's CPU (docs/benchmarks.md, issue 8).  Two bumps at once may count as
    one: a reader only needs to see that the value changed after both commits, and
    each bump comes after its commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._map: mmap.mmap | None = None

    def _mapped(self) -> mmap.mmap:
        if self._map is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if os.fstat(fd).st_size < 8:
                    os.ftruncate(fd, 8)
                self._map = mmap.mmap(fd, 8)
            finally:
                os.close(fd)
        return self._map

    def read(self) -> bytes:
        return self._mapped()[:8]

    def bump(self) -> None:
        shared = self._mapped()
        shared[:8] = (int.from_bytes(shared[:8], "little") + 1).to_bytes(8, "little")


class SqliteStore:
    """All embedded persistence: projects, keys, events, issues in ``stacksift.db``;
    the inbox in ``inbox.db`` beside it.

    Two files, because a file has one writer at a time: with the inbox in the main
    file every ingest commit queued behind processing's transactions and WAL
    checkpoints (held ~70 % of the time under full load, request p99 ~56 ms).
    Ingest now writes only ``inbox.db``; processing commits its events to the main
    file, then deletes the inbox rows (see commit_processed)."""

    backend = "sqlite"  # metrics label

    # Events committed per transaction: readers of the main file's WAL and the
    # checkpointer wait on long ones, so processing commits in short steps (~10 ms).
    commit_rows = 50

    def __init__(self, path: Path, retention_days: int = 90) -> None:
        self.path = path
        self.retention_days = retention_days
        self.db = Database(path, register_text_match)
        self.inbox_db = Database(path.with_name("inbox.db"))
        self._config = ConfigVersion(path.with_name("config.version"))
        self._config_seen = b""
        # (hash, kind) -> (project id, when the key stops working)
        self._key_cache: dict[tuple[str, str], tuple[int, float]] = {}
        self._settings_cache: dict[int, str] = {}

    # -- connections -------------------------------------------------------

    def conn(self) -> sqlite3.Connection:
        return self.db.conn()

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return self.db.transaction()

    def checkpoint(self) -> None:
        self.db.checkpoint()
        self.inbox_db.checkpoint()
        self.inbox_db.release_free_pages()  # after a backlog; events only grow

    def setup(self) -> None:
        with self.inbox_db.write_locked():  # inbox_size's count and triggers at once
            self.inbox_db.conn().executescript(f"BEGIN IMMEDIATE;\n{INBOX_SCHEMA}\nCOMMIT;")
        self._incremental_inbox()
        self.conn().executescript(SCHEMA)
        self._move_old_inbox()

    def backup(self, dest: Path) -> list[Path]:
        """Consistent copies of both files into ``dest`` while others keep writing
        (SQLite's online backup, one step each, so a writer cannot make it restart).

        The inbox goes first: an event processed between the two copies is then in both
        (processing skips an event id already stored), never in neither."""
        copies = []
        for db in (self.inbox_db, self.db):
            target = dest / db.path.name
            with closing(sqlite3.connect(target)) as out:
                db.conn().backup(out)
            copies.append(target)
        return copies

    def _incremental_inbox(self) -> None:
        """A backlog can fill gigabytes of inbox.db that are free again once it drains,
        and SQLite keeps a file's size after deletes unless it can release pages
        (auto_vacuum=INCREMENTAL; checkpoint() releases them).  Switching a file over
        takes a VACUUM, which rewrites it: done only while the inbox is empty, when
        that costs nothing."""
        conn = self.inbox_db.conn()
        mode = "SELECT auto_vacuum FROM pragma_auto_vacuum"
        empty = "SELECT NOT EXISTS (SELECT 1 FROM inbox) AND NOT EXISTS (SELECT 1 FROM dead_letter)"
        if conn.execute(mode).fetchone()[0] == 2 or not conn.execute(empty).fetchone()[0]:
            return
        with self.inbox_db.write_locked():
            if conn.execute(mode).fetchone()[0] != 2 and conn.execute(empty).fetchone()[0]:
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                try:
                    conn.execute("VACUUM")
                except sqlite3.OperationalError as exc:  # a reader in the way: next start
                    log.warning("inbox.db not switched to incremental vacuum yet: %s", exc)

    def _move_old_inbox(self) -> None:
        """Databases from before inbox.db hold their inbox, dead letters and counters in
        the main file: move those rows over, once, under both write locks (every process of a
        ``serve --workers N`` runs setup at start)."""
        old = "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?"
        conn = self.conn()
        if conn.execute(old, ("inbox",)).fetchone() is None:
            return
        with self.inbox_db.write_locked(), self.db.write_locked():
            if conn.execute(old, ("inbox",)).fetchone() is None:
                return  # another process moved them meanwhile
            conn.execute("ATTACH DATABASE ? AS inbox_db", (str(self.inbox_db.path),))
            try:
                conn.execute("BEGIN IMMEDIATE")
                for table, columns, conflict in (
                    ("inbox", _INBOX_COLUMNS, ""),
                    ("dead_letter", _DEAD_LETTER_COLUMNS, ""),
                    (
                        "counters",
                        "project_id, reason, day, count",
                        " WHERE true ON CONFLICT DO UPDATE SET count = count + excluded.count",
                    ),
                ):
                    conn.execute(
                        f"INSERT INTO inbox_db.{table} ({columns}) "
                        f"SELECT {columns} FROM main.{table}{conflict}"
                    )
                    conn.execute(f"DROP TABLE main.{table}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            finally:
                conn.execute("DETACH DATABASE inbox_db")

    def ping(self) -> None:
        try:
            self.conn().execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise RuntimeError(f"sqlite: {exc}") from exc

    # -- projects and keys -------------------------------------------------

    def create_project(self, name: str) -> int:
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO projects (name, created_at) VALUES (?, ?)", (name, time.time())
            )
            return int(cur.lastrowid or 0)

    def list_projects(self) -> list[dict[str, Any]]:
        rows = self.conn().execute("SELECT id, name, created_at FROM projects ORDER BY id")
        return [{"id": r[0], "name": r[1], "created_at": iso(r[2])} for r in rows]

    def get_project(self, project_id: int) -> dict[str, Any] | None:
        row = (
            self.conn()
            .execute(
                "SELECT id, name, created_at, settings FROM projects WHERE id = ?", (project_id,)
            )
            .fetchone()
        )
        if row is None:
            return None
        return {
            "id": row[0],
            "name": row[1],
            "created_at": iso(row[2]),
            "settings": orjson.loads(row[3]),
        }

    def project_settings(self, project_ids: Iterable[int]) -> dict[int, str]:
        ids = list(set(project_ids))
        marks = ",".join("?" * len(ids))
        rows = self.conn().execute(f"SELECT id, settings FROM projects WHERE id IN ({marks})", ids)
        return {r[0]: r[1] for r in rows}

    def set_project_settings(self, project_id: int, settings_json: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE projects SET settings = ? WHERE id = ?", (settings_json, project_id)
            )
        self._config.bump()

    def add_key(self, project_id: int, kind: str, key_hash: str, hint: str, label: str = "") -> int:
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO keys (project_id, kind, label, key_hash, hint, created_at) "
                "VALUES (?,?,?,?,?,?)",
                (project_id, kind, label, key_hash, hint, time.time()),
            )
            return int(cur.lastrowid or 0)

    def list_keys(self, project_id: int) -> list[KeyInfo]:
        rows = self.conn().execute(
            "SELECT id, project_id, kind, label, hint, created_at, revoked_at FROM keys "
            "WHERE project_id = ? ORDER BY id",
            (project_id,),
        )
        return [KeyInfo(*r) for r in rows]

    def revoke_key(self, project_id: int, key_id: int, grace_seconds: float = 0.0) -> bool:
        """Stop accepting a live key now, or ``grace_seconds`` from now (key rotation).

        ``revoked_at`` is the moment the key stops working, so a grace period is a
        ``revoked_at`` in the future; a later revocation can only bring it closer."""
        now = time.time()
        at = now + max(grace_seconds, 0.0)
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE keys SET revoked_at = MIN(COALESCE(revoked_at, ?), ?) "
                "WHERE id = ? AND project_id = ? AND (revoked_at IS NULL OR revoked_at > ?)",
                (at, at, key_id, project_id, now),
            )
        if cur.rowcount == 1:
            self._config.bump()
        return cur.rowcount == 1

    def _check_config(self) -> None:
        """Keys and settings are read on every ingest request, so hits are cached in
        memory; every process drops its caches when it sees a new ConfigVersion."""
        version = self._config.read()
        if version != self._config_seen:
            self._key_cache.clear()
            self._settings_cache.clear()
            self._config_seen = version

    def project_config(self, project_id: int) -> str:
        """The project's settings JSON (cached; see _check_config)."""
        self._check_config()
        cached = self._settings_cache.get(project_id)
        if cached is None:
            row = (
                self.conn()
                .execute("SELECT settings FROM projects WHERE id = ?", (project_id,))
                .fetchone()
            )
            cached = row[0] if row else "{}"
            self._settings_cache[project_id] = cached
        return cached

    def key_project(self, key_hash: str, kind: str) -> int | None:
        """Project of a live key of this kind (cached; see _check_config).

        A key in its rotation grace period is cached with its end, checked on every
        hit: it stops working on time even though nothing invalidates the cache then."""
        self._check_config()
        now = time.time()
        cached = self._key_cache.get((key_hash, kind))
        if cached is not None:
            if cached[1] > now:
                return cached[0]
            del self._key_cache[(key_hash, kind)]
            return None
        row = (
            self.conn()
            .execute(
                "SELECT project_id, revoked_at FROM keys WHERE key_hash = ? AND kind = ? "
                "AND (revoked_at IS NULL OR revoked_at > ?)",
                (key_hash, kind, now),
            )
            .fetchone()
        )
        if row is None:
            return None
        if len(self._key_cache) > 10_000:
            self._key_cache.clear()
        self._key_cache[(key_hash, kind)] = (row[0], math.inf if row[1] is None else row[1])
        return row[0]

    # -- inbox -------------------------------------------------------------

    def enqueue(
        self, rows: Sequence[tuple[int, float, bytes, bytes]], counts: dict[tuple[int, str], int]
    ) -> None:
        """Commit (project_id, received, payload, meta) rows and ingest counters at once."""
        rows = [(p, received, pack_payload(payload), m) for p, received, payload, m in rows]
        with self.inbox_db.transaction() as conn:
            # One statement for the whole batch: executemany releases and re-takes the
            # GIL around every row, and each re-take waits for the busy event loop.
            for start in range(0, len(rows), _INSERT_CHUNK):
                chunk = rows[start : start + _INSERT_CHUNK]
                conn.execute(_inbox_insert(len(chunk)), [v for row in chunk for v in row])
            if counts:
                self._count(conn, counts)

    def _count(self, conn: sqlite3.Connection, counts: dict[tuple[int, str], int]) -> None:
        day = time.strftime("%Y-%m-%d", time.gmtime())
        conn.executemany(
            "INSERT INTO counters (project_id, reason, day, count) VALUES (?,?,?,?) "
            "ON CONFLICT (project_id, reason, day) DO UPDATE SET "
            "count = count + excluded.count",
            [(p, reason, day, n) for (p, reason), n in counts.items()],
        )

    def take_inbox(self, limit: int) -> list[InboxRow]:
        rows = self.inbox_db.conn().execute(
            "SELECT id, project_id, received, payload, meta, attempts FROM inbox "
            "WHERE not_before <= ? ORDER BY id LIMIT ?",
            (time.time(), limit),
        )
        return [InboxRow(i, p, r, unpack_payload(b), m, a) for i, p, r, b, m, a in rows]

    def inbox_stats(self) -> tuple[int, float | None]:
        """(rows waiting, received time of the first); both read one row."""
        conn = self.inbox_db.conn()
        count = conn.execute("SELECT n FROM inbox_size").fetchone()[0]
        first = conn.execute("SELECT received FROM inbox ORDER BY id LIMIT 1").fetchone()
        return count, first[0] if first else None

    def postpone(self, failures: Sequence[tuple[InboxRow, str]], max_attempts: int) -> None:
        """Back off rows that failed; move those out of attempts to the dead-letter table."""
        now = time.time()
        with self.inbox_db.transaction() as conn:
            for row, error in failures:
                attempts = row.attempts + 1
                if attempts >= max_attempts:
                    conn.execute(
                        "INSERT INTO dead_letter (project_id, received, payload, meta, error, "
                        "failed_at) VALUES (?,?,?,?,?,?)",
                        (row.project_id, row.received, row.payload, row.meta, error, now),
                    )
                    conn.execute("DELETE FROM inbox WHERE id = ?", (row.id,))
                else:
                    conn.execute(
                        "UPDATE inbox SET attempts = ?, not_before = ? WHERE id = ?",
                        (attempts, now + min(2.0**attempts, 300.0), row.id),
                    )

    # -- processing results --------------------------------------------------

    def commit_processed(
        self,
        done: Sequence[InboxRow],
        events: Sequence[ProcessedEvent],
        counts: dict[tuple[int, str], int],
    ) -> list[IssueUpdate]:
        """Store a processed batch, then remove its inbox rows.

        Grouping into issues happens here, under the write lock, so two
        processes can never both decide that a fingerprint is new.  An event id
        already stored is skipped, which makes processing a row again harmless:
        that happens when a crash falls between the two commits.  The counters go
        with the delete, so they count each row once either way.
        """
        updates: list[IssueUpdate] = []
        with self.transaction() as conn:
            for pe in events:
                update = self._group(conn, pe)
                if update is not None:
                    updates.append(update)
        with self.inbox_db.transaction() as conn:
            conn.executemany("DELETE FROM inbox WHERE id = ?", [(r.id,) for r in done])
            self._count(conn, counts)
        return updates

    def _group(self, conn: sqlite3.Connection, pe: ProcessedEvent) -> IssueUpdate | None:
        encoded: EncodedEvent = pe.encoded or encode_event(pe.event)  # type: ignore[arg-type]
        project_id, ts, level = encoded.columns[0], encoded.columns[2], encoded.columns[4]
        row = conn.execute(
            "SELECT id, status FROM issues WHERE project_id = ? AND fingerprint = ?",
            (project_id, pe.fingerprint),
        ).fetchone()
        created = row is None
        if created:
            cur = conn.execute(
                "INSERT INTO issues (project_id, fingerprint, title, culprit, level, first_seen, "
                "last_seen) VALUES (?,?,?,?,?,?,?)",
                (project_id, pe.fingerprint, pe.title, pe.culprit, level, ts, ts),
            )
            issue_id, status = int(cur.lastrowid or 0), "unresolved"
        else:
            issue_id, status = row
        if insert_event(conn, encoded, issue_id) is None:
            return None  # duplicate event id: counted once already
        regressed = status == "resolved"
        new_user = 0
        if pe.user_key:
            new_user = conn.execute(
                "INSERT OR IGNORE INTO issue_users (issue_id, user_key) VALUES (?, ?)",
                (issue_id, pe.user_key),
            ).rowcount
        conn.execute(
            "UPDATE issues SET count = count + 1, user_count = user_count + ?, "
            "first_seen = min(first_seen, ?), last_seen = max(last_seen, ?), "
            "title = CASE WHEN ? >= last_seen THEN ? ELSE title END, "
            "level = CASE WHEN ? >= last_seen THEN ? ELSE level END, "
            "status = CASE WHEN status = 'resolved' THEN 'unresolved' ELSE status END, "
            "regressed_at = CASE WHEN status = 'resolved' THEN ? ELSE regressed_at END "
            "WHERE id = ?",
            (new_user, ts, ts, ts, pe.title, ts, level, time.time(), issue_id),
        )
        if pe.event is not None:
            pe.event["issue_id"] = issue_id
            return IssueUpdate(issue_id, pe.event, created, regressed)
        return IssueUpdate(issue_id, encoded.data, created, regressed, project_id=project_id)

    # -- retention -----------------------------------------------------------

    def delete_expired(
        self, now: float | None = None, batch: int = 500, most: int | None = None
    ) -> int:
        """Delete the events received on a UTC day older than the retention (the days
        whose daily indices Elasticsearch drops, so both modes keep the same events);
        returns how many (at most about ``most``, if given).  Issues stay, as they do
        there.  Short transactions: processing waits for the write lock at most one of them."""
        now = time.time() if now is None else now
        day = dt.datetime.fromtimestamp(now, dt.UTC).date()
        day -= dt.timedelta(days=self.retention_days)
        cutoff = dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()
        deleted = 0
        projects = [r[0] for r in self.conn().execute("SELECT id FROM projects")]
        for project_id in projects:
            while True:
                with self.transaction() as conn:
                    # received < cutoff implies timestamp < cutoff + 60 s (normalize
                    # clamps it), which lets the (project_id, timestamp) index find them.
                    rows = conn.execute(
                        "SELECT id, timestamp, tags, multi FROM events WHERE project_id = ? "
                        "AND timestamp < ? AND received < ? LIMIT ?",
                        (project_id, cutoff + MAX_SECS_IN_FUTURE, cutoff, batch),
                    ).fetchall()
                    ids = [(r[0],) for r in rows]
                    conn.executemany("DELETE FROM events WHERE id = ?", ids)
                    conn.executemany("DELETE FROM events_fts WHERE rowid = ?", ids)
                    conn.executemany(_DELETE_VALUES, _stored_value_rows(project_id, rows))
                deleted += len(rows)
                if len(rows) < batch or (most is not None and deleted >= most):
                    break
            if most is not None and deleted >= most:
                break
        return deleted

    # -- dead letters ------------------------------------------------------

    def list_dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.inbox_db.conn().execute(
            "SELECT id, project_id, received, meta, error, failed_at FROM dead_letter "
            "ORDER BY id LIMIT ?",
            (limit,),
        )
        return [
            {
                "id": r[0],
                "project_id": r[1],
                "received": r[2],
                "event_id": orjson.loads(r[3]).get("event_id"),
                "error": r[4],
                "failed_at": r[5],
            }
            for r in rows
        ]

    def replay_dead_letters(self, ids: Sequence[int] | None = None) -> int:
        """Move dead letters back to the inbox (all of them, or the given ids)."""
        where, args = (
            ("", ()) if ids is None else (f"WHERE id IN ({','.join('?' * len(ids))})", tuple(ids))
        )
        with self.inbox_db.transaction() as conn:
            conn.execute(
                "INSERT INTO inbox (project_id, received, payload, meta) "
                f"SELECT project_id, received, payload, meta FROM dead_letter {where}",
                args,
            )
            return conn.execute(f"DELETE FROM dead_letter {where}", args).rowcount

    # -- reading -------------------------------------------------------------

    def list_issues(
        self,
        project_id: int,
        *,
        status: str | None,
        sort: str,
        limit: int,
        cursor: str | None,
        search: Search | None = None,
    ) -> Page:
        """Issues with at least one event matching ``search``, newest/oldest/biggest first."""
        where, args = search.sqlite(project_id) if search else ("", [])
        if where:
            # With a full-text term, SQLite 3.40 would walk every event of the project
            # through a project_id index and test it against the FTS rowid list; a
            # unary + makes it look the FTS rowids up instead (x4 at 100k events).
            pid = "+project_id" if "events_fts" in where else "project_id"
            where = f"id IN (SELECT issue_id FROM events WHERE {pid} = ? AND {where})"
            args = [project_id, *args]
        column, position = sort, ISSUE_SORTS[sort]
        clauses = ["project_id = ?"]
        params: list[Any] = [project_id]
        if status:
            clauses.append("status = ?")
            params.append(status)
        if where:
            clauses.append(where)
            params.extend(args)
        if cursor:
            value, last_id = decode_cursor(cursor, (float, int))
            clauses.append(f"({column}, id) < (?, ?)")
            params.extend((value, last_id))
        rows = (
            self.conn()
            .execute(
                f"SELECT {ISSUE_COLUMNS} FROM issues WHERE {' AND '.join(clauses)} "
                f"ORDER BY {column} DESC, id DESC LIMIT ?",
                (*params, limit + 1),
            )
            .fetchall()
        )
        items = [issue_dict(r) for r in rows[:limit]]
        last = rows[limit - 1] if len(rows) > limit else None
        return Page(items, encode_cursor([last[position], last[0]]) if last else None)

    def get_issue(self, project_id: int, issue_id: int) -> dict[str, Any] | None:
        row = (
            self.conn()
            .execute(
                f"SELECT {ISSUE_COLUMNS} FROM issues WHERE project_id = ? AND id = ?",
                (project_id, issue_id),
            )
            .fetchone()
        )
        return issue_dict(row) if row else None

    def set_issue_status(self, project_id: int, issue_id: int, status: str) -> bool:
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE issues SET status = ?, resolved_at = CASE WHEN ? = 'resolved' "
                "THEN ? ELSE NULL END WHERE project_id = ? AND id = ?",
                (status, status, time.time(), project_id, issue_id),
            )
            return cur.rowcount == 1

    def list_events(
        self,
        project_id: int,
        *,
        issue_id: int | None,
        limit: int,
        cursor: str | None,
        search: Search | None = None,
    ) -> Page:
        where, args = search.sqlite(project_id) if search else ("", [])
        if issue_id is None:
            clauses, params = ["project_id = ?"], [project_id]
        else:
            clauses, params = ["issue_id = ?", "project_id = ?"], [issue_id, project_id]
        if where:
            clauses.append(where)
            params.extend(args)
        if cursor:
            ts, last_id = decode_cursor(cursor, (float, int))
            clauses.append("(timestamp, id) < (?, ?)")
            params.extend((ts, last_id))
        rows = (
            self.conn()
            .execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE {' AND '.join(clauses)} "
                "ORDER BY timestamp DESC, id DESC LIMIT ?",
                (*params, limit + 1),
            )
            .fetchall()
        )
        items = [orjson.loads(r[4]) for r in rows[:limit]]
        next_cursor = (
            encode_cursor([rows[limit - 1][3], rows[limit - 1][0]]) if len(rows) > limit else None
        )
        return Page(items, next_cursor)

    def get_event(self, project_id: int, event_id: str) -> dict[str, Any] | None:
        row = (
            self.conn()
            .execute(
                "SELECT data FROM events WHERE project_id = ? AND event_id = ?",
                (project_id, event_id),
            )
            .fetchone()
        )
        return orjson.loads(row[0]) if row else None

    def histogram(
        self, project_id: int, search: Search, start: float, end: float, interval: int
    ) -> list[tuple[float, int]]:
        """Event counts per ``interval`` seconds from ``start`` (aligned to the epoch, so
        UTC days and hours), empty buckets included."""
        first = start - start % interval
        where, args = search.sqlite(project_id)
        clause = f" AND {where}" if where else ""
        rows = self.conn().execute(
            f"SELECT CAST((timestamp - ?) / ? AS INTEGER) AS b, count(*) FROM events "
            f"WHERE project_id = ?{clause} GROUP BY b",
            (first, interval, project_id, *args),
        )
        counts = dict(rows.fetchall())
        buckets = int((end - first + interval - 1) // interval)
        return [(first + i * interval, counts.get(i, 0)) for i in range(buckets)]

    def top_values(
        self, project_id: int, field: str, search: Search, limit: int
    ) -> tuple[list[tuple[str, int]], int, int]:
        """The most frequent values of a field: (values with event counts, the counts of
        all other values added up, events with the field at all).  An event counts once
        for each of its distinct values, so for a multi-valued field (frame.*, ...) the
        counts can add up to more than the events."""
        if search.node is None and (field.startswith("tags.") or field in VALUE_FIELDS):
            return self._top_field_values(project_id, field, search, limit)
        where, args = search.sqlite(project_id)
        clause = f" AND {where}" if where else ""
        if field.startswith("tags.") or field in fields.MULTI_FIELDS:
            # Filter first in a subquery: the query fragment names events' columns,
            # which json_each's own columns (id, key, value) would make ambiguous.
            matching = f"SELECT id, tags, multi FROM events WHERE project_id = ?{clause}"
            if field.startswith("tags."):
                each, params = "json_each(e.tags) AS v WHERE v.key = ?", [field[5:]]
            else:
                each, params = "json_each(e.multi, ?) AS v", [f'$."{field}"']
            base = f"FROM ({matching}) AS e, {each}"
            order = [project_id, *args, *params]
            rows = (
                self.conn()
                .execute(
                    f"SELECT value, n, sum(n) OVER () FROM (SELECT v.value AS value, "
                    f"count(DISTINCT e.id) AS n {base} GROUP BY v.value) "
                    "ORDER BY n DESC, value LIMIT ?",
                    (*order, limit),
                )
                .fetchall()
            )
            total = self.conn().execute(f"SELECT count(DISTINCT e.id) {base}", order).fetchone()[0]
        else:
            # One pass: the window sum over all groups is the total (an
            # events_<field> index, where there is one, makes the pass index-only).
            column = fields.SQL_COLUMNS[field]
            rows = (
                self.conn()
                .execute(
                    f"SELECT v, n, sum(n) OVER () FROM (SELECT {column} AS v, count(*) AS n "
                    f"FROM events WHERE project_id = ? AND {column} IS NOT NULL{clause} "
                    f"GROUP BY {column}) ORDER BY n DESC, v LIMIT ?",
                    (project_id, *args, limit),
                )
                .fetchall()
            )
            total = rows[0][2] if rows else 0
        values = [(str(r[0]), r[1]) for r in rows]
        counted = rows[0][2] if rows else 0
        return values, counted - sum(n for _, n in values), total

    def _top_field_values(
        self, project_id: int, field: str, search: Search, limit: int
    ) -> tuple[list[tuple[str, int]], int, int]:
        """top_values from field_values: one index-only pass over the field's rows (a
        time range filters inside it; a ``q`` needs the events, so it never comes here)."""
        times, time_args = search.time_clauses()
        clauses = ["project_id = ?", "field = ?", *times]
        args: list[Any] = [project_id, field, *time_args]
        rows = (
            self.conn()
            .execute(
                "SELECT value, n, sum(n) OVER (), sum(events) OVER () FROM (SELECT value, "
                "count(*) AS n, sum(first) AS events FROM field_values "
                f"WHERE {' AND '.join(clauses)} GROUP BY value) ORDER BY n DESC, value LIMIT ?",
                (*args, limit),
            )
            .fetchall()
        )
        counted, total = (rows[0][2], rows[0][3]) if rows else (0, 0)
        values = [(r[0], r[1]) for r in rows]
        return values, counted - sum(n for _, n in values), total

    def counters(self, project_id: int) -> dict[str, int]:
        rows = self.inbox_db.conn().execute(
            "SELECT reason, sum(count) FROM counters WHERE project_id = ? GROUP BY reason",
            (project_id,),
        )
        return {r[0]: r[1] for r in rows}


def issue_dict(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": row[0],
        "project_id": row[1],
        "fingerprint": row[2],
        "title": row[3],
        "culprit": row[4],
        "level": row[5],
        "status": row[6],
        "first_seen": iso(row[7]),
        "last_seen": iso(row[8]),
        "count": row[9],
        "user_count": row[10],
        "regressed_at": iso(row[11]) if row[11] else None,
        "resolved_at": iso(row[12]) if row[12] else None,
    }
