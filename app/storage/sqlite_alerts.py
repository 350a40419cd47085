"""Embedded storage of alert rules and notification attempts (tables in the "-- alerts"
section of sqlite_schema.sql).

Every change to a rule bumps a version in ``meta`` in the same transaction, so
the worker, possibly in another process, notices with one indexed read per
batch instead of re-reading every rule.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import orjson

from app.storage.models import Page
from app.storage.sqlite import SqliteStore, decode_cursor, encode_cursor
from app.timefmt import iso

RULE_COLUMNS = (
    'id, project_id, name, query, "trigger", threshold, "window", throttle, channels, enabled, '
    "created_at, updated_at"
)
NOTIFICATION_COLUMNS = (
    "id, project_id, rule_id, rule_name, issue_id, kind, channel, target, attempt, outcome, "
    "error, events, at"
)
_VERSION_KEY = "alert_rules_version"


def rule_dict(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": row[0],
        "project_id": row[1],
        "name": row[2],
        "query": row[3],
        "trigger": row[4],
        "threshold": row[5],
        "window": row[6],
        "throttle": row[7],
        "channels": orjson.loads(row[8]),
        "enabled": bool(row[9]),
        "created_at": iso(row[10]),
        "updated_at": iso(row[11]),
        "updated_ts": row[11],
    }


def _values(rule: dict[str, Any]) -> tuple[Any, ...]:
    return (
        rule["name"],
        rule["query"],
        rule["trigger"],
        rule.get("threshold"),
        rule.get("window"),
        rule["throttle"],
        orjson.dumps(rule["channels"]).decode(),
        int(bool(rule.get("enabled", True))),
    )


class AlertStore:
    """Rules and notification attempts, on the SqliteStore's per-thread connections."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    # -- rules -------------------------------------------------------------

    def _bump(self, conn: Any) -> None:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT(key) DO UPDATE "
            "SET value = CAST(value AS INTEGER) + 1",
            (_VERSION_KEY,),
        )

    def rules_version(self) -> int:
        row = (
            self.store.conn()
            .execute("SELECT value FROM meta WHERE key = ?", (_VERSION_KEY,))
            .fetchone()
        )
        return int(row[0]) if row else 0

    def create_rule(self, project_id: int, rule: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        with self.store.transaction() as conn:
            rule_id = _next_rule_id(conn)
            conn.execute(
                'INSERT INTO alert_rules (id, project_id, name, query, "trigger", threshold, '
                '"window", throttle, channels, enabled, created_at, updated_at) '
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (rule_id, project_id, *_values(rule), now, now),
            )
            self._bump(conn)
        return self.get_rule(project_id, rule_id) or {}

    def get_rule(self, project_id: int, rule_id: int) -> dict[str, Any] | None:
        row = (
            self.store.conn()
            .execute(
                f"SELECT {RULE_COLUMNS} FROM alert_rules WHERE project_id = ? AND id = ?",
                (project_id, rule_id),
            )
            .fetchone()
        )
        return rule_dict(row) if row else None

    def list_rules(self, project_id: int) -> list[dict[str, Any]]:
        rows = self.store.conn().execute(
            f"SELECT {RULE_COLUMNS} FROM alert_rules WHERE project_id = ? ORDER BY id",
            (project_id,),
        )
        return [rule_dict(r) for r in rows]

    def enabled_rules(self) -> list[dict[str, Any]]:
        rows = self.store.conn().execute(
            f"SELECT {RULE_COLUMNS} FROM alert_rules WHERE enabled = 1 ORDER BY project_id, id"
        )
        return [rule_dict(r) for r in rows]

    def replace_rule(
        self, project_id: int, rule_id: int, rule: dict[str, Any]
    ) -> dict[str, Any] | None:
        with self.store.transaction() as conn:
            cur = conn.execute(
                'UPDATE alert_rules SET name = ?, query = ?, "trigger" = ?, threshold = ?, '
                '"window" = ?, throttle = ?, channels = ?, enabled = ?, updated_at = ? '
                "WHERE project_id = ? AND id = ?",
                (*_values(rule), time.time(), project_id, rule_id),
            )
            if cur.rowcount == 0:
                return None
            self._bump(conn)
        return self.get_rule(project_id, rule_id)

    def delete_rule(self, project_id: int, rule_id: int) -> bool:
        with self.store.transaction() as conn:
            cur = conn.execute(
                "DELETE FROM alert_rules WHERE project_id = ? AND id = ?", (project_id, rule_id)
            )
            if cur.rowcount:
                self._bump(conn)
            return cur.rowcount == 1

    # -- notification attempts ---------------------------------------------

    def record_attempts(self, attempts: Sequence[dict[str, Any]]) -> None:
        if not attempts:
            return
        with self.store.transaction() as conn:
            conn.executemany(
                "INSERT INTO alert_notifications (project_id, rule_id, rule_name, issue_id, "
                "kind, channel, target, attempt, outcome, error, events, at) "
                "VALUES (:project_id, :rule_id, :rule_name, :issue_id, :kind, :channel, "
                ":target, :attempt, :outcome, :error, :events, :at)",
                attempts,
            )

    def list_notifications(
        self,
        project_id: int,
        *,
        limit: int,
        cursor: str | None,
        rule_id: int | None = None,
        issue_id: int | None = None,
    ) -> Page:
        """Newest attempt first."""
        clauses, params = ["project_id = ?"], [project_id]
        if rule_id is not None:
            clauses.append("rule_id = ?")
            params.append(rule_id)
        if issue_id is not None:
            clauses.append("issue_id = ?")
            params.append(issue_id)
        if cursor:
            (last_id,) = decode_cursor(cursor, (int,))
            clauses.append("id < ?")
            params.append(last_id)
        rows = (
            self.store.conn()
            .execute(
                f"SELECT {NOTIFICATION_COLUMNS} FROM alert_notifications "
                f"WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT ?",
                (*params, limit + 1),
            )
            .fetchall()
        )
        data = [
            {
                "id": r[0],
                "project_id": r[1],
                "rule_id": r[2],
                "rule_name": r[3],
                "issue_id": r[4],
                "kind": r[5],
                "channel": r[6],
                "target": r[7],
                "attempt": r[8],
                "outcome": r[9],
                "error": r[10],
                "events": r[11],
                "at": iso(r[12]),
            }
            for r in rows[:limit]
        ]
        next_cursor = encode_cursor([rows[limit - 1][0]]) if len(rows) > limit else None
        return Page(data, next_cursor)


def _next_rule_id(conn: sqlite3.Connection) -> int:
    """An id never used before, even by a deleted rule (``INTEGER PRIMARY KEY`` reuses
    the largest one freed): a rule id names its throttles, digests and notifications."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'alert_rule_seq'").fetchone()
    (largest,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM alert_rules").fetchone()
    rule_id = max(int(row[0]) if row else 0, int(largest)) + 1
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('alert_rule_seq', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (str(rule_id),),
    )
    return rule_id
