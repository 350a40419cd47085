"""Distributed mode only: Elasticsearch layout, Redis queue, several workers, crashes.

Every test here needs Redis and Elasticsearch on 127.0.0.1 (scripts/services.sh
start); without them they fail, they do not skip.  The behavioural tests
(test_ingest, test_read_api, test_e2e_sdk) also run on this backend through the
``server`` fixture.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import orjson
import pytest
import redis
from elasticsearch import Elasticsearch

from app.redis_queue import RedisQueue
from app.search import Search
from app.storage.elastic import ElasticStore
from app.storage.elastic_setup import day_of
from app.timefmt import iso
from tests.conftest import (
    ADMIN_TOKEN,
    ES_URL,
    REDIS_URL,
    Project,
    Server,
    backend_server,
    free_port,
)

BACKENDS = ("distributed",)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def idle(tmp_path: Path) -> Iterator[Server]:
    """A distributed server with no worker: events wait in Redis until a test starts one."""
    with backend_server("distributed", tmp_path / "data") as srv:
        srv.auto_worker = False
        srv.start()
        try:
            yield srv
        finally:
            srv.stop(signal.SIGKILL)


@pytest.fixture
def es() -> Elasticsearch:
    return Elasticsearch(ES_URL, request_timeout=60)


def send(server: Server, p: Project, events: list[dict]) -> list[str]:
    resp = httpx.post(
        f"{server.url}/api/v1/projects/{p.id}/events",
        content=orjson.dumps({"events": events}),
        headers={"Authorization": f"Bearer {p.ingest_key}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["ids"]


def crash(kind: str, i: int, ts: float, user: int | None = None) -> dict:
    frames = [{"function": "charge", "module": f"shop.{kind.lower()}", "lineno": 7, "in_app": True}]
    return {
        "event_id": uuid.uuid4().hex,
        "timestamp": ts,
        "level": "error",
        "user": {"id": f"user-{user}"} if user is not None else None,
        "tags": {"n": str(i % 7)},
        "exception": {
            "values": [{"type": kind, "value": f"failure {i}", "stacktrace": {"frames": frames}}]
        },
    }


def queue_depth(server: Server) -> int:
    return int(httpx.get(server.url + "/readyz", timeout=10).json()["queue_depth"])


def drained(server: Server, timeout: float = 120.0) -> None:
    server.wait_for(lambda: queue_depth(server) == 0, timeout)


def issues_by_title(server: Server, p: Project) -> dict[str, dict]:
    body = server.get(f"/api/v1/projects/{p.id}/issues", p.read_token, limit=500).json()
    return {i["title"].split(":")[0]: i for i in body["data"]}


def assert_exactly_once(server: Server, p: Project, sent: list[str]) -> list[dict]:
    events = server.all_events(p)
    ids = Counter(e["event_id"] for e in events)
    assert [i for i, n in ids.items() if n > 1] == []
    assert sorted(ids) == sorted(set(sent))
    return events


def test_setup_is_idempotent_and_the_layout_is_what_the_code_expects(
    idle: Server, es: Elasticsearch
) -> None:
    first = idle.cli("setup").stdout
    again = idle.cli("setup").stdout
    assert "index template" in first and "index template" in again
    prefix = idle.prefix
    template = es.indices.get_index_template(name=f"{prefix}-events")["index_templates"][0]
    assert template["index_template"]["index_patterns"] == [f"{prefix}-events-*"]
    today = f"{prefix}-events-{day_of(time.time())}"
    settings = es.indices.get_settings(index=today)[today]["settings"]["index"]
    assert settings["number_of_replicas"] == "0"
    assert es.indices.get_alias(name=f"{prefix}-events")  # today's index is behind the alias
    mapping = es.indices.get_mapping(index=f"{prefix}-issues")[f"{prefix}-issues"]
    assert mapping["mappings"]["dynamic"] == "strict"
    assert es.cluster.health(index=f"{prefix}-*")["status"] == "green"


def test_revoked_key_stops_at_once_and_secrets_are_not_stored(
    idle: Server, es: Elasticsearch
) -> None:
    p = idle.project()
    out = idle.cli("key", "create", str(p.id)).stdout
    key_id, secret = out.split()[1], out.split()[3]
    path = f"{idle.url}/api/{p.id}/envelope/"
    body = b'{}\n{"type":"event"}\n{"message":"x"}\n'
    headers = {"X-Sentry-Auth": f"Sentry sentry_key={secret}"}
    assert httpx.post(path, content=body, headers=headers).status_code == 200
    idle.cli("key", "revoke", str(p.id), key_id)  # another process: the API's cache must drop
    resp = httpx.post(path, content=body, headers=headers)
    assert resp.status_code == 403 and "revoked" in resp.json()["error"]["message"]
    es.indices.refresh(index=f"{idle.prefix}-*")
    docs = es.search(index=f"{idle.prefix}-*", size=1000)["hits"]["hits"]
    assert any(d["_index"] == f"{idle.prefix}-keys" for d in docs)
    raw = orjson.dumps(docs)
    for value in (secret, p.ingest_key, p.read_token):
        assert value.encode() not in raw


def test_two_workers_on_one_issue_count_exactly(idle: Server) -> None:
    """12,000 events of two issues wait in Redis; two workers drain them at once (enough
    events that the second worker has started long before the first could finish)."""
    p = idle.project()
    now = time.time()
    sent: list[str] = []
    batches = []
    for start in range(0, 12000, 1000):
        batch = [
            crash("CardDeclined" if i % 5 else "Timeout", i, now - 7200 + i * 0.5, user=i % 41)
            for i in range(start, start + 1000)
        ]
        batches.append(batch)
    for batch in batches:
        sent += send(idle, p, batch)
    dup = batches[0][:50]  # the same event ids again: stored and counted once
    send(idle, p, dup)
    assert queue_depth(idle) == 12050
    idle.start_worker()
    idle.start_worker()
    drained(idle)
    events = assert_exactly_once(idle, p, sent)
    assert len(events) == 12000
    issues = issues_by_title(idle, p)
    assert set(issues) == {"CardDeclined", "Timeout"}
    declined = [e for b in batches for e in b if e["exception"]["values"][0]["type"] != "Timeout"]
    assert issues["CardDeclined"]["count"] == len(declined) == 9600
    assert issues["Timeout"]["count"] == 2400
    assert issues["CardDeclined"]["user_count"] == 41 and issues["Timeout"]["user_count"] == 41
    assert issues["CardDeclined"]["first_seen"] == iso(min(e["timestamp"] for e in declined))
    assert issues["CardDeclined"]["last_seen"] == iso(max(e["timestamp"] for e in declined))
    # both workers really took part: each one read from the stream's consumer group
    client = redis.Redis.from_url(f"{REDIS_URL}/{idle.redis_db}")
    consumers = client.xinfo_consumers(f"{idle.prefix}:inbox", "workers")
    assert len(consumers) == 2, consumers
    counts = idle.get(f"/api/v1/projects/{p.id}/outcomes", ADMIN_TOKEN).json()["counts"]
    assert counts["accepted"] == 12050 and counts["processed"] == 12050


def test_worker_killed_mid_batch_loses_and_duplicates_nothing(idle: Server) -> None:
    p = idle.project()
    now = time.time()
    sent: list[str] = []
    for start in range(0, 6000, 1000):
        sent += send(
            idle, p, [crash("Boom", i, now - 100 + i * 0.01) for i in range(start, start + 1000)]
        )
    first = idle.start_worker()
    client = redis.Redis.from_url(f"{REDIS_URL}/{idle.redis_db}")
    # kill while a batch is taken but not acknowledged
    idle.wait_for(
        lambda: client.xpending(f"{idle.prefix}:inbox", "workers")["pending"] > 0, timeout=60
    )
    idle.stop_worker(first, signal.SIGKILL)
    assert queue_depth(idle) > 0
    idle.start_worker()  # takes over the dead worker's entries after STACKSIFT_RECLAIM_SECONDS
    drained(idle)
    assert_exactly_once(idle, p, sent)
    assert issues_by_title(idle, p)["Boom"]["count"] == 6000


@pytest.fixture
def private_es() -> Iterator[tuple[str, dict[str, str]]]:
    """An Elasticsearch of this test's own (scripts/services.sh with its own directory and
    port, the downloaded distribution shared): restarting it disturbs no other test run."""
    shared = Path(
        os.environ.get("STACKSIFT_SERVICES_DIR", Path.home() / ".cache/stacksift-services")
    )
    base = Path(tempfile.mkdtemp(prefix="stacksift-es-"))
    for name in ("downloads", "dist"):
        (base / name).symlink_to(shared / name)
    port = free_port()
    env = {
        **os.environ,
        "STACKSIFT_SERVICES_DIR": str(base),
        "STACKSIFT_ES_PORT": str(port),
        "STACKSIFT_ES_HEAP": "512m",
    }
    script = str(ROOT / "scripts/services.sh")
    subprocess.run([script, "start", "es"], env=env, check=True, timeout=300)
    try:
        yield f"http://127.0.0.1:{port}", env
    finally:
        subprocess.run([script, "stop", "es"], env=env, check=False, timeout=300)
        shutil.rmtree(base, ignore_errors=True)


def test_elasticsearch_restart_mid_load_loses_nothing(
    tmp_path: Path, private_es: tuple[str, dict[str, str]]
) -> None:
    """Ingest keeps answering 200 while Elasticsearch restarts; the backlog drains after."""
    es_url, es_env = private_es
    with backend_server("distributed", tmp_path / "data", es_url=es_url) as server:
        server.start()
        try:
            p = server.project()
            # warm the key and settings caches: ingest must not need Elasticsearch
            send(server, p, [crash("Warm", 0, time.time())])
            sent: list[str] = []
            failures: list[str] = []
            stop = threading.Event()

            def load() -> None:
                i = 0
                while not stop.is_set():
                    batch = [crash("Outage", i + k, time.time()) for k in range(20)]
                    try:
                        sent.extend(send(server, p, batch))
                    except AssertionError as exc:  # a non-200: must not happen
                        failures.append(str(exc))
                    i += 20
                    time.sleep(0.05)

            thread = threading.Thread(target=load)
            thread.start()
            try:
                time.sleep(1.0)
                subprocess.run(
                    [str(ROOT / "scripts/services.sh"), "restart", "es"],
                    env=es_env,
                    check=True,
                    timeout=300,
                )
                time.sleep(1.0)
            finally:
                stop.set()
                thread.join(timeout=60)
            assert failures == []
            drained(server, timeout=180)
            events = server.all_events(p)
            outage = [
                e["event_id"] for e in events if e["exception"]["values"][0]["type"] == "Outage"
            ]
            assert len(outage) == len(set(outage))
            assert sorted(outage) == sorted(sent)
            assert issues_by_title(server, p)["Outage"]["count"] == len(sent) > 100
        finally:
            server.stop()


@pytest.fixture
def store(tmp_path: Path, es: Elasticsearch) -> Iterator[ElasticStore]:
    with backend_server("distributed", tmp_path / "data") as srv:
        client = redis.Redis.from_url(f"{REDIS_URL}/{srv.redis_db}")
        st = ElasticStore(es, client, srv.prefix, 7, RedisQueue(client, srv.prefix))
        st.setup()
        yield st


def test_failing_events_become_dead_letters_and_replay(store: ElasticStore) -> None:
    store.enqueue([(1, time.time(), b'{"message":"x"}', b'{"event_id":"ab"}')], {})
    (row,) = store.queue.read("test", 10)
    store.postpone([(row, "boom")], max_attempts=2)  # first failure: parked for 2 s
    assert store.queue.read("test", 10) == [] and store.list_dead_letters() == []
    parked = store.redis.zrange(store.queue.parked, 0, -1, withscores=True)
    assert len(parked) == 1 and parked[0][1] > time.time() + 1
    store.redis.zadd(store.queue.parked, {parked[0][0]: 0})  # backoff over
    store.queue.sweep()
    (again,) = store.queue.read("test", 10)
    assert again.attempts == 1 and again.payload == row.payload
    store.postpone([(again, "boom again")], max_attempts=2)
    (dead,) = store.list_dead_letters()
    assert dead["error"] == "boom again" and dead["event_id"] == "ab"
    assert store.inbox_stats()[0] == 0
    assert store.replay_dead_letters() == 1
    assert store.list_dead_letters() == []
    (back,) = store.queue.read("test", 10)
    assert back.attempts == 0 and back.payload == row.payload


def test_retention_deletes_only_expired_daily_indices(store: ElasticStore) -> None:
    now = time.time()
    old = store.names.events_index(day_of(now - 30 * 86400))
    edge = store.names.events_index(day_of(now - 6 * 86400))
    store.es.indices.create(index=old)
    store.es.indices.create(index=edge)
    assert store.delete_expired(now) == [old]
    assert store.es.indices.exists(index=edge)
    assert store.es.indices.exists(index=store.names.events_index(day_of(now)))


def test_a_time_range_reads_only_the_days_it_needs(store: ElasticStore) -> None:
    now = 1_795_000_000.0  # 2026-11-18T08:26:40Z
    last_day = Search(None, now - 86400, None, now)
    assert store._event_indices(last_day).split(",") == [
        store.names.events_index("2026.11.17"),
        store.names.events_index("2026.11.18"),
    ]
    assert store._event_indices(Search(None, None, None, now)) == store.names.events_alias
    year = Search(None, now - 365 * 86400, None, now)
    assert store._event_indices(year) == store.names.events_alias


def test_invalid_cursor_is_a_400(server: Server) -> None:
    p = server.project()
    for cursor in ("xyz", "WyJhIiwiYiJd"):  # not base64 JSON / ["a","b"] (wrong types)
        for path in ("events", "issues"):
            resp = server.get(f"/api/v1/projects/{p.id}/{path}", p.read_token, cursor=cursor)
            assert resp.status_code == 400, resp.text
            assert resp.json()["error"]["code"] == "invalid_cursor"


class Webhook:
    """A local HTTP endpoint recording every POST body."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                sink.bodies.append(
                    orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/hook"


def test_workers_evaluate_alert_rules(server: Server) -> None:
    p = server.project()
    hook = Webhook()
    try:
        for trigger in ("new_issue", "regression"):
            resp = httpx.post(
                f"{server.url}/api/v1/projects/{p.id}/alert-rules",
                json={
                    "name": trigger,
                    "query": "exception.type:Flaky",
                    "trigger": trigger,
                    "throttle": "0m",
                    "channels": [{"type": "webhook", "url": hook.url}],
                },
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            assert resp.status_code == 201, resp.text
        send(server, p, [crash("Flaky", i, time.time()) for i in range(3)])
        server.wait_for(lambda: len(hook.bodies) == 1)
        assert hook.bodies[0]["trigger"] == "new_issue"
        issue_id = hook.bodies[0]["issue"]["id"]
        url = f"{server.url}/api/v1/projects/{p.id}/issues/{issue_id}"
        headers = {"Authorization": f"Bearer {p.read_token}"}
        assert httpx.patch(url, json={"status": "resolved"}, headers=headers).status_code == 200
        send(server, p, [crash("Flaky", 9, time.time())])
        server.wait_for(lambda: len(hook.bodies) == 2)
        assert hook.bodies[1]["trigger"] == "regression"
        notes = server.get(f"/api/v1/projects/{p.id}/notifications", ADMIN_TOKEN).json()["data"]
        assert sorted(n["outcome"] for n in notes) == ["sent", "sent"]
    finally:
        hook.httpd.shutdown()


def test_a_batch_that_keeps_failing_is_split_and_only_the_bad_event_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a service outage (those are waited out): after 3 failures each event is tried
    alone, and only the one that still fails is parked for a later attempt."""
    from app import distributed
    from app.settings import Settings

    with backend_server("distributed", tmp_path / "data") as srv:
        settings = Settings(
            redis_url=f"{REDIS_URL}/{srv.redis_db}",
            elasticsearch_url=ES_URL,
            index_prefix=srv.prefix,
            data_dir=tmp_path,
        )
        ctx = distributed.build(settings)
        ctx.store.setup()
        project_id = ctx.store.create_project("p")
        real = ctx.store.commit_processed

        def commit(done, events, counts):  # type: ignore[no-untyped-def]
            if any(pe.event.get("logentry", {}).get("formatted") == "poison" for pe in events):
                raise ValueError("cannot store this one")
            return real(done, events, counts)

        monkeypatch.setattr(ctx.store, "commit_processed", commit)
        monkeypatch.setattr(distributed, "MAX_BACKOFF_SECONDS", 0.1)
        rows = [
            (project_id, time.time(), orjson.dumps({"message": m}), orjson.dumps({"event_id": e}))
            for m, e in (("good", "a" * 32), ("poison", "b" * 32), ("fine", "c" * 32))
        ]
        ctx.store.enqueue(rows, {})
        try:
            assert distributed.drain(ctx, budget=20) == 3
        finally:  # drain started alert delivery here: stop it before the indices go
            if ctx._alerts is not None:
                ctx._alerts.close()
        page = ctx.store.list_events(project_id, issue_id=None, limit=10, cursor=None)
        assert sorted(e["event_id"] for e in page.data) == ["a" * 32, "c" * 32]
        (parked,) = ctx.redis.zrange(ctx.queue.parked, 0, -1)
        assert orjson.loads(parked)["a"] == 1 and b"poison" in parked
        assert ctx.store.inbox_stats()[0] == 1  # the parked one still counts as waiting


# -- stats on Elasticsearch agree with the query language's matcher --------------------


@pytest.fixture(scope="module")
def stats_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ElasticStore]:
    es = Elasticsearch(ES_URL, request_timeout=60)
    with backend_server("distributed", tmp_path_factory.mktemp("stats")) as srv:
        client = redis.Redis.from_url(f"{REDIS_URL}/{srv.redis_db}")
        st = ElasticStore(es, client, srv.prefix, 90, RedisQueue(client, srv.prefix))
        st.setup()
        yield st


_example = iter(range(1000, 10**9))


def _index_batch(store: ElasticStore, batch: list[dict]) -> int:
    """Index a batch under a project id of its own (one index for every example)."""
    from app.query import es_document
    from tests.test_query_consistency import NOW

    project_id = next(_example)
    ops: list[bytes] = []
    for i, event in enumerate(batch):
        event = {**event, "project_id": project_id, "event_id": f"{i:032x}"}
        doc = es_document(event) | {"sort_ts": event["timestamp"], "data": event}
        index = store.names.events_index(day_of(NOW))
        ops.append(orjson.dumps({"create": {"_index": index, "_id": f"{project_id}-{i}"}}))
        ops.append(orjson.dumps(doc))
    if ops:
        assert all(status == 201 for status, _ in store._bulk(ops, refresh=True))
    return project_id


def test_top_values_and_histogram_agree_with_the_matcher(stats_store: ElasticStore) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.test_query_consistency import TIMES, event_batches
    from tests.test_search_stats import TOP_FIELDS, reference_top, searches, selected

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        batch=event_batches(),
        checks=st.lists(
            st.tuples(st.sampled_from(TOP_FIELDS), searches, st.integers(1, 4)),
            min_size=1,
            max_size=4,
        ),
        interval=st.sampled_from([60, 3600, 86400]),
    )
    def check(batch: list[dict], checks: list, interval: int) -> None:
        project_id = _index_batch(stats_store, batch)
        for field, search, limit in checks:
            got = stats_store.top_values(project_id, field, search, limit)
            assert got == reference_top(batch, field, search, limit), (field, search)
            start, end = TIMES[0] - 5, TIMES[-1] + 5
            buckets = stats_store.histogram(project_id, search, start, end, interval)
            first = start - start % interval
            expected = Counter(
                int((e["timestamp"] - first) // interval) for e in selected(batch, search)
            )
            assert [n for _, n in buckets] == [expected.get(i, 0) for i in range(len(buckets))]
            page = stats_store.list_events(
                project_id, issue_id=None, limit=100, cursor=None, search=search
            )
            want = sorted(batch.index(e) for e in selected(batch, search))  # id = position
            assert sorted(int(e["event_id"], 16) for e in page.data) == want, search

    check()


def test_issue_search_time_ranges_and_event_detail(server: Server) -> None:
    p = server.project()
    now = time.time()
    ids = send(
        server,
        p,
        [crash("Alpha", 1, now - 3 * 86400), crash("Beta", 2, now - 60), crash("Beta", 3, now)],
    )
    server.wait_events(p, 3)
    assert set(issues_by_title(server, p)) == {"Alpha", "Beta"}

    def titles(**params: object) -> list[str]:
        body = server.get(f"/api/v1/projects/{p.id}/issues", p.read_token, **params).json()
        return sorted(i["title"].split(":")[0] for i in body["data"])

    assert titles(q="exception.type:Alpha") == ["Alpha"]
    assert titles(q="charge", **{"from": "-1d"}) == ["Beta"]  # reads only the last 2 days
    assert titles(q="failure 1") == ["Alpha"]
    assert titles(q="nothing-matches-this") == []
    event = server.get(f"/api/v1/projects/{p.id}/events/{ids[0]}", p.read_token).json()
    assert event["exception"]["values"][0]["type"] == "Alpha"
    missing = server.get(f"/api/v1/projects/{p.id}/events/{'0' * 32}", p.read_token)
    assert missing.status_code == 404


def test_sigterm_stops_a_worker_after_its_batch(idle: Server) -> None:
    p = idle.project()
    now = time.time()
    sent: list[str] = []
    for start in range(0, 8000, 1000):
        batch = [crash("Term", i, now - 100 + i * 0.01) for i in range(start, start + 1000)]
        sent += send(idle, p, batch)
    worker = idle.start_worker()
    idle.wait_for(lambda: queue_depth(idle) < 8000, timeout=60)
    began = time.time()
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=30)
    assert time.time() - began < 15  # not the drain job's whole time budget
    idle.workers.remove(worker)
    assert queue_depth(idle) > 0  # it stopped early, leaving work for the next worker
    idle.start_worker()
    drained(idle)
    assert_exactly_once(idle, p, sent)
    assert issues_by_title(idle, p)["Term"]["count"] == 8000


def test_an_absurdly_long_value_does_not_keep_an_event_out(server: Server) -> None:
    """Lucene refuses terms over 32766 bytes; such a value must not dead-letter the event."""
    p = server.project()
    event = crash("Huge", 1, time.time())
    event["exception"]["values"][0]["stacktrace"]["frames"][0]["function"] = "f" * 40_000
    (event_id,) = send(server, p, [event])
    (stored,) = server.wait_events(p, 1)
    assert stored["event_id"] == event_id
    assert server.get(f"/api/v1/projects/{p.id}/events", p.read_token, q="Huge").json()["data"]


@pytest.mark.parametrize("store_first", [True, False], ids=["201-counts-first", "409-marks-first"])
def test_two_copies_of_one_event_on_two_workers_count_once(
    store: ElasticStore, store_first: bool
) -> None:
    """Worker A claims the marker first, but B's copy reaches Elasticsearch first (201) and
    A gets 409 on its fresh marker: whatever order A and B then count in, exactly one count."""
    from app.storage.issue_state import CountArgs

    state = store.issues_state
    (issue_id,) = state.resolve([(1, "fp")])
    assert state.claim([("1:e1", "2026.11.25")]) == [""]  # A: fresh
    assert state.claim([("1:e1", "2026.11.25")]) == ["2026.11.25"]  # B: A's claim

    def args(apply: bool) -> list[CountArgs]:
        return [CountArgs("1:e1", issue_id, 1.0, "t", "c", "error", None, apply)]

    a_marks = lambda: state.count(args(apply=False), 2.0)  # noqa: E731 - A: 409, fresh marker
    b_counts = lambda: state.count(args(apply=True), 2.0)  # noqa: E731 - B: 201
    first, second = (b_counts, a_marks) if store_first else (a_marks, b_counts)
    results = first() + second()
    assert sum(r.counted for r in results) == 1
    (issue,) = state.issues([issue_id])
    assert issue is not None and issue["count"] == 1
    # a third copy later is recognised as done at claim time
    assert state.claim([("1:e1", "2026.11.25")]) == ["2026.11.25+"]
