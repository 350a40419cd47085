"""Alert rules and notification attempts on Elasticsearch: the distributed twin of
:class:`app.storage.sqlite_alerts.AlertStore`, with the same methods and shapes.

Ids come from Redis counters; every rule change increments a Redis version, so each
worker re-reads the rules once after a change (the engine asks ``rules_version`` per
batch) instead of on every batch.  Rule writes refresh the index, so the admin API and
the workers see a change at once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from elasticsearch import NotFoundError

from app.storage.models import Page
from app.storage.sqlite import decode_cursor, encode_cursor
from app.timefmt import iso

if TYPE_CHECKING:
    from app.storage.elastic import ElasticStore

_NOTE_FIELDS = (
    "project_id",
    "rule_id",
    "rule_name",
    "issue_id",
    "kind",
    "channel",
    "target",
    "attempt",
    "outcome",
    "error",
    "events",
    "at",
)
_RULE_FIELDS = ("name", "query", "trigger", "threshold", "window", "throttle", "channels")


def _rule_out(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["id"],
        "project_id": doc["project_id"],
        "name": doc["name"],
        "query": doc["query"],
        "trigger": doc["trigger"],
        "threshold": doc.get("threshold"),
        "window": doc.get("window"),
        "throttle": doc["throttle"],
        "channels": doc["channels"],
        "enabled": bool(doc["enabled"]),
        "created_at": iso(doc["created_at"]),
        "updated_at": iso(doc["updated_at"]),
        "updated_ts": doc["updated_at"],
    }


class ElasticAlertStore:
    def __init__(self, store: ElasticStore) -> None:
        self.es = store.es
        self.redis = store.redis
        self.prefix = store.prefix
        self.rules_index = store.names.alert_rules
        self.notes_index = store.names.alert_notifications
        self._version_key = f"{store.prefix}:alert-rules-version"

    # -- rules -------------------------------------------------------------

    def rules_version(self) -> int:
        return int(self.redis.get(self._version_key) or 0)

    def _doc(self, project_id: int, rule: dict[str, Any]) -> dict[str, Any]:
        doc = {name: rule.get(name) for name in _RULE_FIELDS}
        # the SQLite store keeps channels as JSON text: the same round trip here
        doc["channels"] = orjson.loads(orjson.dumps(rule["channels"]))
        doc["enabled"] = bool(rule.get("enabled", True))
        doc["project_id"] = project_id
        return doc

    def create_rule(self, project_id: int, rule: dict[str, Any]) -> dict[str, Any]:
        rule_id = int(self.redis.incr(f"{self.prefix}:seq:alert-rule"))
        now = time.time()
        doc = {**self._doc(project_id, rule), "id": rule_id, "created_at": now, "updated_at": now}
        self.es.index(
            index=self.rules_index, id=str(rule_id), document=doc, op_type="create", refresh=True
        )
        self.redis.incr(self._version_key)
        return _rule_out(doc)

    def _get(self, project_id: int, rule_id: int) -> dict[str, Any] | None:
        try:
            doc = self.es.get(index=self.rules_index, id=str(rule_id))["_source"]
        except NotFoundError:
            return None
        return doc if doc["project_id"] == project_id else None

    def get_rule(self, project_id: int, rule_id: int) -> dict[str, Any] | None:
        doc = self._get(project_id, rule_id)
        return _rule_out(doc) if doc else None

    def list_rules(self, project_id: int) -> list[dict[str, Any]]:
        return self._rules({"term": {"project_id": project_id}})

    def enabled_rules(self) -> list[dict[str, Any]]:
        return self._rules({"term": {"enabled": True}})

    def _rules(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        resp = self.es.search(
            index=self.rules_index,
            size=10_000,
            query=query,
            sort=[{"project_id": "asc"}, {"id": "asc"}],
        )
        return [_rule_out(h["_source"]) for h in resp["hits"]["hits"]]

    def replace_rule(
        self, project_id: int, rule_id: int, rule: dict[str, Any]
    ) -> dict[str, Any] | None:
        old = self._get(project_id, rule_id)
        if old is None:
            return None
        doc = {
            **self._doc(project_id, rule),
            "id": rule_id,
            "created_at": old["created_at"],
            "updated_at": time.time(),
        }
        self.es.index(index=self.rules_index, id=str(rule_id), document=doc, refresh=True)
        self.redis.incr(self._version_key)
        return _rule_out(doc)

    def delete_rule(self, project_id: int, rule_id: int) -> bool:
        if self._get(project_id, rule_id) is None:
            return False
        self.es.delete(index=self.rules_index, id=str(rule_id), refresh=True)
        self.redis.incr(self._version_key)
        return True

    # -- notification attempts ---------------------------------------------

    def record_attempts(self, attempts: Sequence[dict[str, Any]]) -> None:
        if not attempts:
            return
        last = int(self.redis.incrby(f"{self.prefix}:seq:notification", len(attempts)))
        ops: list[bytes] = []
        for offset, attempt in enumerate(attempts):
            note_id = last - len(attempts) + 1 + offset
            ops.append(orjson.dumps({"index": {"_index": self.notes_index, "_id": note_id}}))
            ops.append(orjson.dumps({k: attempt.get(k) for k in _NOTE_FIELDS} | {"id": note_id}))
        self.es.bulk(operations=b"\n".join(ops) + b"\n", refresh=True)

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
        filters: list[dict[str, Any]] = [{"term": {"project_id": project_id}}]
        if rule_id is not None:
            filters.append({"term": {"rule_id": rule_id}})
        if issue_id is not None:
            filters.append({"term": {"issue_id": issue_id}})
        kwargs: dict[str, Any] = {}
        if cursor:
            (last_id,) = decode_cursor(cursor, (int,))
            kwargs["search_after"] = [last_id]
        resp = self.es.search(
            index=self.notes_index,
            size=limit + 1,
            query={"bool": {"filter": filters}},
            sort=[{"id": "desc"}],
            **kwargs,
        )
        hits = [h["_source"] for h in resp["hits"]["hits"]]
        data = [
            {k: h.get(k) for k in ("id", *_NOTE_FIELDS)} | {"at": iso(h["at"])}
            for h in hits[:limit]
        ]
        next_cursor = encode_cursor([hits[limit - 1]["id"]]) if len(hits) > limit else None
        return Page(data, next_cursor)
