"""Distributed storage: Elasticsearch for events, issues and configuration, Redis for
the queue, counters and issue state.  Same public interface as SqliteStore.

Where things live (``{p}`` is STACKSIFT_INDEX_PREFIX):

- events: daily indices ``{p}-events-YYYY.MM.DD`` by the UTC day the event was
  *received* (always recent, so retention by index name never drops fresh
  events, and a retry lands in the same index), read through the alias
  ``{p}-events``.  Timestamps are clamped to [received - 30 days, received +
  60 s] by normalization, so a time range needs only the indices from the
  day of ``from`` - 60 s on: that is all a search reads.  Document id
  ``{project_id}-{event_id}``, written with ``op_type=create``.
- issues: ``{p}-issues``, one document per issue; the counters are decided in
  Redis (:mod:`app.storage.issue_state`) and copied here.
- projects, keys, dead letters: ``{p}-projects``, ``{p}-keys``, ``{p}-dead-letters``;
  ids come from Redis counters.  Ingest/outcome counters: Redis hashes.

Order of one batch (``commit_processed``), chosen so a crash at any point is
repaired by processing the batch again: issue ids, dedup markers, bulk-create
events, count (idempotent per event), copy issues to ES and refresh issues
before events (a reader that sees an event sees its issue counted), then
acknowledge the queue entries together with the outcome counters.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import math
import threading
import time
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import Any

import orjson
import redis
from elasticsearch import ApiError, Elasticsearch, NotFoundError

from app import fields
from app.pipeline import MAX_ATTEMPTS
from app.query.es import es_document, tag_kv, to_es
from app.redis_queue import RedisQueue
from app.search import Search
from app.storage import elastic_setup
from app.storage.elastic_alerts import ElasticAlertStore
from app.storage.elastic_setup import DAY_FORMAT, Names, day_of
from app.storage.issue_state import CountArgs, IssueState
from app.storage.models import InboxRow, IssueUpdate, Page, ProcessedEvent
from app.storage.sqlite import KeyInfo, decode_cursor, encode_cursor
from app.timefmt import iso

log = logging.getLogger("stacksift.elastic")

ISSUE_SORTS = ("last_seen", "first_seen", "count")
# normalize_event clamps timestamps to this window around the received time.
MAX_FUTURE = 60.0
MAX_PAST = 30 * 86400.0
MAX_NAMED_INDICES = 45
# Issues filtered by a query: at most this many issues with matching events.
MAX_MATCHING_ISSUES = 10_000
# One bulk request stays well below Elasticsearch's 100 MB http.max_content_length.
MAX_BULK_BYTES = 16 * 1_048_576


class RetryableError(Exception):
    """Elasticsearch pushed back (429, 5xx): the whole batch is tried again later."""


def _field_name(name: str) -> str:
    return name.replace(".", "_")


class ElasticStore:
    backend = "elasticsearch"  # metrics label

    # Events per processing step: one _bulk request each, so as large as a batch.
    commit_rows = 10_000

    def __init__(
        self,
        es: Elasticsearch,
        client: redis.Redis,
        prefix: str,
        retention_days: int,
        queue: RedisQueue | None = None,
    ) -> None:
        self.es = es
        self.redis = client
        self.prefix = prefix
        self.names = Names(prefix)
        self.retention_days = retention_days
        self.queue = queue or RedisQueue(client, prefix)
        self.issues_state = IssueState(client, prefix)
        self._version_key = f"{prefix}:config-version"
        self._version: bytes | None = b""
        # (hash, kind) -> (project id, when the key stops working)
        self._key_cache: dict[tuple[str, str], tuple[int, float]] = {}
        self._settings_cache: dict[int, str] = {}
        self._watcher: threading.Thread | None = None
        self._subscribed = threading.Event()
        self._setup_key = f"{prefix}:setup-done"

    # -- set-up ----------------------------------------------------------------

    def setup(self, force: bool = False) -> list[str]:
        """Install the layout unless this exact layout was installed already."""
        marker = self._layout_marker()
        if not force and self.redis.get(self._setup_key) == marker:
            self.queue.setup()
            return []
        done = elastic_setup.install(self.es, self.prefix, self.retention_days)
        self.queue.setup()
        self.redis.set(self._setup_key, marker)
        return done

    def _layout_marker(self) -> bytes:
        return _digest(elastic_setup.layout(self.prefix), self.retention_days)

    @cached_property
    def alert_store(self) -> ElasticAlertStore:
        """Alert rules and notifications (app.alerts picks this up instead of SQLite's)."""
        return ElasticAlertStore(self)

    def ping(self) -> None:
        """Raise naming the part that is not reachable (``/readyz`` shows the message)."""
        try:
            self.redis.ping()
        except Exception as exc:
            raise RuntimeError(f"redis: {exc}") from exc
        try:
            health = self.es.cluster.health()
        except Exception as exc:
            raise RuntimeError(f"elasticsearch: {exc}") from exc
        if health["status"] == "red":
            raise RuntimeError("elasticsearch: cluster is red")

    def delete_expired(self, now: float | None = None) -> list[str]:
        return elastic_setup.delete_expired(
            self.es, self.prefix, self.retention_days, now or time.time()
        )

    # -- projects and keys -------------------------------------------------------

    def create_project(self, name: str) -> int:
        project_id = int(self.redis.incr(f"{self.prefix}:seq:project"))
        self.es.index(
            index=self.names.projects,
            id=str(project_id),
            document={"id": project_id, "name": name, "created_at": time.time(), "settings": "{}"},
            op_type="create",
            refresh=True,
        )
        return project_id

    def list_projects(self) -> list[dict[str, Any]]:
        resp = self.es.search(
            index=self.names.projects,
            size=10_000,
            sort=[{"id": "asc"}],
            source_includes=["id", "name", "created_at"],
        )
        return [_project_out(h["_source"]) for h in resp["hits"]["hits"]]

    def get_project(self, project_id: int) -> dict[str, Any] | None:
        try:
            doc = self.es.get(index=self.names.projects, id=str(project_id))["_source"]
        except NotFoundError:
            return None
        return {**_project_out(doc), "settings": orjson.loads(doc["settings"])}

    def project_settings(self, project_ids: Iterable[int]) -> dict[int, str]:
        ids = [str(i) for i in set(project_ids)]
        if not ids:
            return {}
        resp = self.es.mget(index=self.names.projects, ids=ids, source_includes=["settings"])
        return {int(d["_id"]): d["_source"]["settings"] for d in resp["docs"] if d.get("found")}

    def set_project_settings(self, project_id: int, settings_json: str) -> None:
        self.es.update(
            index=self.names.projects,
            id=str(project_id),
            doc={"settings": settings_json},
            refresh=True,
        )
        self._config_changed()

    def add_key(self, project_id: int, kind: str, key_hash: str, hint: str, label: str = "") -> int:
        key_id = int(self.redis.incr(f"{self.prefix}:seq:key"))
        self.es.index(
            index=self.names.keys,
            id=key_hash,
            document={
                "id": key_id,
                "project_id": project_id,
                "kind": kind,
                "label": label,
                "key_hash": key_hash,
                "hint": hint,
                "created_at": time.time(),
            },
            op_type="create",
            refresh=True,
        )
        return key_id

    def list_keys(self, project_id: int) -> list[KeyInfo]:
        resp = self.es.search(
            index=self.names.keys,
            size=10_000,
            query={"term": {"project_id": project_id}},
            sort=[{"id": "asc"}],
        )
        return [_key_info(h["_source"]) for h in resp["hits"]["hits"]]

    def revoke_key(self, project_id: int, key_id: int, grace_seconds: float = 0.0) -> bool:
        """Stop accepting a live key now, or ``grace_seconds`` from now (key rotation);
        as in SQLite, ``revoked_at`` is when it stops and can only move closer."""
        now = time.time()
        at = now + max(grace_seconds, 0.0)
        resp = self.es.search(
            index=self.names.keys,
            size=1,
            query={
                "bool": {
                    "filter": [{"term": {"id": key_id}}, {"term": {"project_id": project_id}}],
                    "should": [
                        {"bool": {"must_not": [{"exists": {"field": "revoked_at"}}]}},
                        {"range": {"revoked_at": {"gt": now}}},
                    ],
                    "minimum_should_match": 1,
                }
            },
        )
        hits = resp["hits"]["hits"]
        if not hits:
            return False
        current = hits[0]["_source"].get("revoked_at")
        self.es.update(
            index=self.names.keys,
            id=hits[0]["_id"],
            doc={"revoked_at": at if current is None else min(current, at)},
            refresh=True,
        )
        self._config_changed()
        return True

    def _check_version(self) -> None:
        """Keys and settings are read on every ingest request, so hits are cached in
        memory.  Revoking a key or saving settings increments a Redis counter and
        publishes on a channel; while this process is subscribed (a watcher thread),
        a message drops the caches within milliseconds and requests cost no Redis
        round trip.  Without a live subscription every lookup compares the counter
        (one GET), so a revocation still applies at once."""
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="config-watch", daemon=True)
            self._watcher.start()
        if self._subscribed.is_set():
            return
        version = self.redis.get(self._version_key)
        if version != self._version:
            self._clear_caches()
            self._version = version

    def _clear_caches(self) -> None:
        self._key_cache.clear()
        self._settings_cache.clear()

    def _config_changed(self) -> None:
        self.redis.incr(self._version_key)
        self.redis.publish(self._version_key, b"1")
        self._clear_caches()

    def _watch(self) -> None:
        while True:
            pubsub = None
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self._version_key)
                pubsub.get_message(timeout=5)  # the subscribe confirmation
                self._clear_caches()  # whatever changed before we listened
                self._subscribed.set()
                while True:
                    if pubsub.get_message(timeout=30) is not None:
                        self._clear_caches()
            except Exception:
                self._subscribed.clear()  # back to one GET per lookup
                self._version = b""
                time.sleep(1)
            finally:
                self._subscribed.clear()
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()

    def project_config(self, project_id: int) -> str:
        self._check_version()
        cached = self._settings_cache.get(project_id)
        if cached is None:
            project = self.project_settings([project_id])
            cached = project.get(project_id, "{}")
            self._settings_cache[project_id] = cached
        return cached

    def key_project(self, key_hash: str, kind: str) -> int | None:
        """Project of a live key of this kind (cached; see _check_version).  A key in its
        rotation grace period is cached with its end, checked on every hit."""
        self._check_version()
        now = time.time()
        cached = self._key_cache.get((key_hash, kind))
        if cached is not None:
            if cached[1] > now:
                return cached[0]
            self._key_cache.pop((key_hash, kind), None)
            return None
        try:
            doc = self.es.get(index=self.names.keys, id=key_hash)["_source"]
        except NotFoundError:
            return None
        ends = doc.get("revoked_at")
        if doc.get("kind") != kind or (ends is not None and ends <= now):
            return None
        if len(self._key_cache) > 10_000:
            self._key_cache.clear()
        project_id = int(doc["project_id"])
        self._key_cache[(key_hash, kind)] = (project_id, math.inf if ends is None else ends)
        return project_id

    # -- queue ---------------------------------------------------------------------

    def enqueue(
        self, rows: Sequence[tuple[int, float, bytes, bytes]], counts: dict[tuple[int, str], int]
    ) -> None:
        self.queue.enqueue(rows, counts)

    def inbox_stats(self) -> tuple[int, float | None]:
        return self.queue.stats()

    def postpone(self, failures: Sequence[tuple[InboxRow, str]], max_attempts: int) -> None:
        """Back off rows that failed; those out of attempts become dead letters."""
        now = time.time()
        dead = [(row, error) for row, error in failures if row.attempts + 1 >= max_attempts]
        if dead:
            self._dead_letters(dead, now)
            self.queue.ack([row.id for row, _ in dead], {})
        self.queue.park(
            [
                (row, now + min(2.0 ** (row.attempts + 1), 300.0))
                for row, _ in failures
                if row.attempts + 1 < max_attempts
            ]
        )

    def _dead_letters(self, dead: Sequence[tuple[InboxRow, str]], now: float) -> None:
        ops: list[bytes] = []
        for row, error in dead:
            meta = orjson.loads(row.meta)
            # The queue entry's id: writing the same dead letter twice is harmless.
            ops.append(orjson.dumps({"index": {"_index": self.names.dead_letters, "_id": row.id}}))
            ops.append(
                orjson.dumps(
                    {
                        "id": row.id,
                        "project_id": row.project_id,
                        "event_id": meta.get("event_id"),
                        "received": row.received,
                        "failed_at": now,
                        "error": error[:2000],
                        "payload": row.payload.decode(),
                        "meta": row.meta.decode(),
                    }
                )
            )
        self._bulk(ops, refresh=True)

    def list_dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        resp = self.es.search(
            index=self.names.dead_letters,
            size=limit,
            sort=[{"id": "asc"}],
            source_excludes=["payload", "meta"],
        )
        return [h["_source"] for h in resp["hits"]["hits"]]

    def replay_dead_letters(self, ids: Sequence[int] | None = None) -> int:
        """Move dead letters back to the queue (all of them, or the given ids)."""
        query = {"match_all": {}} if ids is None else {"ids": {"values": [str(i) for i in ids]}}
        replayed = 0
        while True:
            hits = self.es.search(
                index=self.names.dead_letters, size=500, query=query, sort=[{"id": "asc"}]
            )["hits"]["hits"]
            if not hits:
                return replayed
            rows = [
                (
                    h["_source"]["project_id"],
                    h["_source"]["received"],
                    h["_source"]["payload"].encode(),
                    h["_source"]["meta"].encode(),
                )
                for h in hits
            ]
            self.queue.append(rows)
            ops = [orjson.dumps({"delete": {"_index": h["_index"], "_id": h["_id"]}}) for h in hits]
            self._bulk(ops, refresh=True)
            replayed += len(hits)
            if ids is not None:
                return replayed

    # -- processing results ----------------------------------------------------------

    def commit_processed(
        self,
        done: Sequence[InboxRow],
        events: Sequence[ProcessedEvent],
        counts: dict[tuple[int, str], int],
    ) -> list[IssueUpdate]:
        """Store a processed batch, then acknowledge its queue entries (see module doc)."""
        now = time.time()
        issue_ids = self.issues_state.resolve(
            [(pe.event["project_id"], pe.fingerprint) for pe in events]
        )
        markers = [f"{pe.event['project_id']}:{pe.event['event_id']}" for pe in events]
        claims = self.issues_state.claim(
            [(m, day_of(pe.event["received"])) for m, pe in zip(markers, events, strict=True)]
        )
        ops: list[bytes] = []
        todo: list[int] = []  # positions of events that go to Elasticsearch
        indices: set[str] = set()
        for i, (pe, claim, issue_id) in enumerate(zip(events, claims, issue_ids, strict=True)):
            pe.event["issue_id"] = issue_id
            if claim.endswith(("+", "!")):
                continue  # a duplicate of an event already stored (and counted)
            index = self.names.events_index(claim or day_of(pe.event["received"]))
            indices.add(index)
            doc = es_document(pe.event)
            doc["sort_ts"] = pe.event["timestamp"]
            doc["data"] = pe.event
            ops.append(
                orjson.dumps(
                    {
                        "create": {
                            "_index": index,
                            "_id": f"{pe.event['project_id']}-{pe.event['event_id']}",
                        }
                    }
                )
            )
            ops.append(orjson.dumps(doc))
            todo.append(i)
        statuses = self._bulk(ops) if ops else []
        count_args: list[CountArgs] = []
        counted_pos: list[int] = []
        failed: list[tuple[int, str]] = []
        for i, (status, error) in zip(todo, statuses, strict=True):
            pe = events[i]
            if status in (200, 201) or status == 409:
                # 409 on a marker this batch created: the id was stored before the marker
                # existed (a duplicate older than DEDUP_SECONDS) or by a worker processing
                # another copy right now, which counts it (see issue_state): count nothing.
                apply = status != 409 or claims[i] != ""
                count_args.append(
                    CountArgs(
                        markers[i],
                        issue_ids[i],
                        pe.event["timestamp"],
                        pe.title,
                        pe.culprit,
                        pe.event["level"],
                        pe.user_key,
                        apply,
                    )
                )
                counted_pos.append(i)
            else:
                failed.append((i, error))
        results = self.issues_state.count(count_args, now)
        updates = [
            IssueUpdate(issue_ids[i], events[i].event, r.created, r.regressed)
            for i, r in zip(counted_pos, results, strict=True)
            if r.counted
        ]
        touched = sorted(set(issue_ids))
        self._mirror_issues(touched)
        if touched:
            self.es.indices.refresh(index=self.names.issues)
        if indices:
            self.es.indices.refresh(index=",".join(sorted(indices)), ignore_unavailable=True)
        if failed:
            by_event = {(r.project_id, orjson.loads(r.meta).get("event_id")): r for r in done}
            bad = []
            for i, error in failed:
                row = by_event.get((events[i].event["project_id"], events[i].event["event_id"]))
                if row is not None:
                    bad.append((row, f"elasticsearch: {error}"))
            bad_ids = {row.id for row, _ in bad}
            self.queue.ack([r.id for r in done if r.id not in bad_ids], counts)
            self.postpone(bad, MAX_ATTEMPTS)
        else:
            self.queue.ack([r.id for r in done], counts)
        return updates

    def _bulk(self, ops: list[bytes], refresh: bool = False) -> list[tuple[int, str]]:
        """Send NDJSON actions (in requests of at most MAX_BULK_BYTES); (status, error) per
        action.  Pushback (429) or a server error on any item fails the whole call, so the
        batch is retried later."""
        out: list[tuple[int, str]] = []
        chunk: list[bytes] = []
        size = 0
        i = 0
        while i < len(ops):
            # an action line, then its document unless it is a delete
            step = 1 if ops[i].startswith(b'{"delete"') else 2
            lines = ops[i : i + step]
            i += step
            chunk.extend(lines)
            size += sum(len(line) + 1 for line in lines)
            if size >= MAX_BULK_BYTES or i >= len(ops):
                out.extend(self._bulk_request(chunk, refresh))
                chunk, size = [], 0
        return out

    def _bulk_request(self, ops: list[bytes], refresh: bool) -> list[tuple[int, str]]:
        resp = self.es.bulk(operations=b"\n".join(ops) + b"\n", refresh=refresh)
        out: list[tuple[int, str]] = []
        for item in resp["items"]:
            result = next(iter(item.values()))
            status = int(result.get("status", 500))
            if status == 429 or status >= 500:
                raise RetryableError(f"bulk item answered {status}: {result.get('error')}")
            error = result.get("error")
            out.append((status, orjson.dumps(error).decode()[:1000] if error else ""))
        return out

    def _mirror_issues(self, issue_ids: Sequence[int]) -> None:
        """Copy issue state to Elasticsearch; external versions keep the newest copy."""
        ops: list[bytes] = []
        for issue in self.issues_state.issues(issue_ids):
            if issue is None or not issue.get("count"):
                continue
            ops.append(
                orjson.dumps(
                    {
                        "index": {
                            "_index": self.names.issues,
                            "_id": str(issue["id"]),
                            "version": issue["rev"],
                            "version_type": "external",
                        }
                    }
                )
            )
            ops.append(orjson.dumps(_issue_doc(issue)))
        if ops:
            for status, error in self._bulk(ops):
                if status not in (200, 201, 409):
                    raise RetryableError(f"issue copy failed ({status}): {error}")

    # -- reading ---------------------------------------------------------------------

    def _event_indices(self, search: Search | None) -> str:
        """The daily indices a time range can have events in, or the alias."""
        if search is None or search.start is None:
            return self.names.events_alias
        first = _date(search.start - MAX_FUTURE)
        last = _date(search.now if search.end is None else min(search.now, search.end + MAX_PAST))
        days = (last - first).days + 1
        if days > MAX_NAMED_INDICES:
            return self.names.events_alias
        if days < 1:
            days = 1
        return ",".join(
            self.names.events_index((first + dt.timedelta(days=d)).strftime(DAY_FORMAT))
            for d in range(days)
        )

    def _search_filters(self, project_id: int, search: Search | None) -> list[dict[str, Any]]:
        filters: list[dict[str, Any]] = [{"term": {"project_id": project_id}}]
        if search is None:
            return filters
        bounds: dict[str, float] = {}
        if search.start is not None:
            bounds["gte"] = search.start
        if search.end is not None:
            bounds["lt"] = search.end
        if bounds:
            filters.append({"range": {"sort_ts": bounds}})
        if search.node is not None:
            filters.append(to_es(search.node, search.now))
        return filters

    def _search_events(self, search: Search | None, **kwargs: Any) -> Any:
        return self.es.search(
            index=self._event_indices(search),
            ignore_unavailable=True,
            allow_no_indices=True,
            **kwargs,
        )

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
        if sort not in ISSUE_SORTS:
            raise ValueError(f"unknown sort {sort!r}")
        filters: list[dict[str, Any]] = [{"term": {"project_id": project_id}}]
        if status:
            filters.append({"term": {"status": status}})
        if search is not None and (
            search.node is not None or search.start is not None or search.end is not None
        ):
            resp = self._search_events(
                search,
                size=0,
                query={"bool": {"filter": self._search_filters(project_id, search)}},
                aggs={"issues": {"terms": {"field": "issue_id", "size": MAX_MATCHING_ISSUES}}},
            )
            ids = [b["key"] for b in resp["aggregations"]["issues"]["buckets"]]
            filters.append({"terms": {"id": ids}})
        kwargs: dict[str, Any] = {}
        if cursor:
            value, last_id = decode_cursor(cursor, (float, int))
            kwargs["search_after"] = [value, last_id]
        resp = self.es.search(
            index=self.names.issues,
            size=limit + 1,
            query={"bool": {"filter": filters}},
            sort=[{sort: "desc"}, {"id": "desc"}],
            **kwargs,
        )
        hits = resp["hits"]["hits"]
        items = [_issue_out(h["_source"]) for h in hits[:limit]]
        next_cursor = None
        if len(hits) > limit:
            last = hits[limit - 1]["_source"]
            next_cursor = encode_cursor([last[sort], last["id"]])
        return Page(items, next_cursor)

    def get_issue(self, project_id: int, issue_id: int) -> dict[str, Any] | None:
        """From Redis, where issue state is decided: always the latest."""
        (issue,) = self.issues_state.issues([issue_id])
        if issue is None or issue["project_id"] != project_id or not issue.get("count"):
            return None
        return _issue_out(_issue_doc(issue))

    def set_issue_status(self, project_id: int, issue_id: int, status: str) -> bool:
        if not self.issues_state.set_status(project_id, issue_id, status, time.time()):
            return False
        self._mirror_issues([issue_id])
        self.es.indices.refresh(index=self.names.issues)
        return True

    def list_events(
        self,
        project_id: int,
        *,
        issue_id: int | None,
        limit: int,
        cursor: str | None,
        search: Search | None = None,
    ) -> Page:
        filters = self._search_filters(project_id, search)
        if issue_id is not None:
            filters.append({"term": {"issue_id": issue_id}})
        kwargs: dict[str, Any] = {}
        if cursor:
            ts, last_id = decode_cursor(cursor, (float, str))
            kwargs["search_after"] = [ts, last_id]
        resp = self._search_events(
            search,
            size=limit + 1,
            query={"bool": {"filter": filters}},
            sort=[{"sort_ts": "desc"}, {"event_id": "desc"}],
            source_includes=["data"],
            **kwargs,
        )
        hits = resp["hits"]["hits"]
        items = [h["_source"]["data"] for h in hits[:limit]]
        next_cursor = None
        if len(hits) > limit:
            last = hits[limit - 1]["_source"]["data"]
            next_cursor = encode_cursor([last["timestamp"], last["event_id"]])
        return Page(items, next_cursor)

    def get_event(self, project_id: int, event_id: str) -> dict[str, Any] | None:
        resp = self.es.search(
            index=self.names.events_alias,
            size=1,
            query={"ids": {"values": [f"{project_id}-{event_id}"]}},
            source_includes=["data"],
            ignore_unavailable=True,
            allow_no_indices=True,
        )
        hits = resp["hits"]["hits"]
        return hits[0]["_source"]["data"] if hits else None

    def histogram(
        self, project_id: int, search: Search, start: float, end: float, interval: int
    ) -> list[tuple[float, int]]:
        first = start - start % interval
        resp = self._search_events(
            search,
            size=0,
            query={"bool": {"filter": self._search_filters(project_id, search)}},
            aggs={
                "h": {"histogram": {"field": "sort_ts", "interval": interval, "min_doc_count": 1}}
            },
        )
        counts: dict[int, int] = {}
        for bucket in resp["aggregations"]["h"]["buckets"]:
            index = int((bucket["key"] - first) // interval)
            counts[index] = counts.get(index, 0) + bucket["doc_count"]
        buckets = int((end - first + interval - 1) // interval)
        return [(first + i * interval, counts.get(i, 0)) for i in range(buckets)]

    def top_values(
        self, project_id: int, field: str, search: Search, limit: int
    ) -> tuple[list[tuple[str, int]], int, int]:
        filters = self._search_filters(project_id, search)
        if field.startswith("tags."):
            key = field[5:]
            filters.append({"term": {"tags_keys": key}})
            prefix = tag_kv(key, "")
            terms: dict[str, Any] = {
                "field": "tags_kv",
                "size": limit,
                "include": _regex_escape(prefix) + ".*",
                "order": [{"_count": "desc"}, {"_key": "asc"}],
            }
        else:
            if field not in fields.SCALAR_FIELDS and field not in fields.MULTI_FIELDS:
                raise ValueError(f"unknown field {field!r}")
            prefix = ""
            name = _field_name(field)
            filters.append({"exists": {"field": name}})
            terms = {"field": name, "size": limit, "order": [{"_count": "desc"}, {"_key": "asc"}]}
        resp = self._search_events(
            search,
            size=0,
            track_total_hits=True,
            query={"bool": {"filter": filters}},
            aggs={"top": {"terms": terms}},
        )
        top = resp["aggregations"]["top"]
        values = [(str(b["key"])[len(prefix) :], int(b["doc_count"])) for b in top["buckets"]]
        # sum_other_doc_count: the counts of the values not listed, added up (an event
        # with several values counts for each), as SqliteStore.top_values defines it.
        return values, int(top["sum_other_doc_count"]), int(resp["hits"]["total"]["value"])

    def counters(self, project_id: int) -> dict[str, int]:
        return self.queue.counts(project_id)


def _date(epoch_seconds: float) -> dt.date:
    return dt.datetime.fromtimestamp(epoch_seconds, dt.UTC).date()


def _regex_escape(text: str) -> str:
    """Lucene regexp: a backslash makes any character literal."""
    return "".join(c if c.isalnum() else "\\" + c for c in text)


def _digest(objects: Any, retention_days: int) -> bytes:
    return hashlib.sha256(orjson.dumps([objects, retention_days])).hexdigest().encode()


def _key_info(doc: dict[str, Any]) -> KeyInfo:
    return KeyInfo(
        doc["id"],
        doc["project_id"],
        doc["kind"],
        doc.get("label", ""),
        doc["hint"],
        doc["created_at"],
        doc.get("revoked_at"),
    )


def _issue_doc(issue: dict[str, Any]) -> dict[str, Any]:
    doc = {
        "id": issue["id"],
        "project_id": issue["project_id"],
        "fingerprint": issue["fingerprint"],
        "title": issue.get("title", ""),
        "culprit": issue.get("culprit", ""),
        "level": issue.get("level", "error"),
        "status": issue["status"],
        "first_seen": issue.get("first_seen", 0.0),
        "last_seen": issue.get("last_seen", 0.0),
        "count": issue["count"],
        "user_count": issue["user_count"],
    }
    for name in ("regressed_at", "resolved_at"):
        if issue.get(name) is not None:
            doc[name] = issue[name]
    return doc


def _project_out(doc: dict[str, Any]) -> dict[str, Any]:
    """A project document as answers show it: times stored as Unix seconds, shown ISO."""
    return {"id": doc["id"], "name": doc["name"], "created_at": iso(doc["created_at"])}


def _issue_out(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["id"],
        "project_id": doc["project_id"],
        "fingerprint": doc["fingerprint"],
        "title": doc["title"],
        "culprit": doc["culprit"],
        "level": doc["level"],
        "status": doc["status"],
        "first_seen": iso(doc["first_seen"]),
        "last_seen": iso(doc["last_seen"]),
        "count": doc["count"],
        "user_count": doc["user_count"],
        "regressed_at": iso(doc["regressed_at"]) if doc.get("regressed_at") else None,
        "resolved_at": iso(doc["resolved_at"]) if doc.get("resolved_at") else None,
    }


__all__ = ["ApiError", "ElasticStore", "RetryableError"]
