"""Scrubbing, inbound filters, rate limits and quotas, through a real server and the real SDK.

Everything here goes over HTTP to ``stacksift serve`` subprocesses: what is
checked is what a user of the product would see (stored events, the database
file on disk, the answers and headers the SDKs act on, the outcome counters).

Embedded backend only (the module sets no BACKENDS): the scrubbing test reads the
SQLite file, and the shared-budget test starts two servers on one data dir, with
Redis used for nothing but rate limits (REDIS_URL without ELASTICSEARCH_URL) or
without Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import secrets
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import zstandard

from app.ratelimit import LimitSettings, RateLimiter
from app.storage.sqlite import ZSTD_MAGIC, ConfigVersion
from tests.conftest import ADMIN_TOKEN, Project, Server, free_port

SDK_DIR = Path(__file__).parent / "sdk"
ROOT = Path(__file__).parents[1]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FILTERED = "[Filtered]"
# This module's own Redis database, flushed before and after use, so that
# tests elsewhere using other databases of the same Redis never interfere.
REDIS_DB = 13
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
ERROR_CATEGORIES = "default;error;security"


# ----------------------------------------------------------------------------- helpers
def new_project(server: Server, name: str = "app") -> Project:
    resp = httpx.post(f"{server.url}/api/v1/projects", json={"name": name}, headers=ADMIN)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    return Project(body["id"], body["dsn"], body["ingest_key"], body["read_token"])


def put_settings(server: Server, project: Project, body: dict[str, Any]) -> httpx.Response:
    return httpx.put(
        f"{server.url}/api/v1/projects/{project.id}/settings", json=body, headers=ADMIN
    )


def outcomes(server: Server, project: Project) -> dict[str, int]:
    resp = httpx.get(f"{server.url}/api/v1/projects/{project.id}/outcomes", headers=ADMIN)
    assert resp.status_code == 200, resp.text
    return resp.json()["counts"]


def wait_outcome(server: Server, project: Project, reason: str, count: int) -> dict[str, int]:
    def reached() -> dict[str, int] | None:
        counts = outcomes(server, project)
        return counts if counts.get(reason, 0) >= count else None

    return server.wait_for(reached)


def event(message: str = "boom", **extra: Any) -> dict[str, Any]:
    return {"event_id": uuid.uuid4().hex, "message": message, "level": "error", **extra}


def envelope(ev: dict[str, Any] | None, *other_items: tuple[str, bytes]) -> bytes:
    parts = [orjson.dumps({"event_id": ev["event_id"]} if ev else {})]
    if ev is not None:
        body = orjson.dumps(ev)
        parts += [orjson.dumps({"type": "event", "length": len(body)}), body]
    for item_type, payload in other_items:
        parts += [orjson.dumps({"type": item_type, "length": len(payload)}), payload]
    return b"\n".join(parts) + b"\n"


def sentry_auth(key: str) -> dict[str, str]:
    return {"X-Sentry-Auth": f"Sentry sentry_version=7, sentry_key={key}, sentry_client=t/1.0"}


def send(
    server: Server, project: Project, ev: dict[str, Any], key: str | None = None, **headers: str
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/{project.id}/envelope/",
        content=envelope(ev),
        headers={**sentry_auth(key or project.ingest_key), **headers},
        timeout=10,
    )


def send_native(server: Server, project: Project, events: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/v1/projects/{project.id}/events",
        content=orjson.dumps({"events": events}),
        headers={"Authorization": f"Bearer {project.ingest_key}"},
        timeout=10,
    )


def stored_ids(server: Server, project: Project) -> set[str]:
    return {e["event_id"] for e in server.all_events(project)}


def luhn_card(prefix: str = "4", length: int = 16) -> str:
    """A random card number with a valid check digit (Visa by default), unique per run."""
    body = prefix + "".join(secrets.choice("0123456789") for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # doubled: these sit at odd positions once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def run_script(name: str, *args: str, timeout: float = 120) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(SDK_DIR / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, f"{name} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def redis_db() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not running on 127.0.0.1:6379 (start scripts/services.sh): {exc}")
    return client


@pytest.fixture
def shared_redis() -> Iterator[redis.Redis]:
    """REDIS_DB, flushed, and held (a file lock, as tests/conftest.py does for its
    databases) so that two test runs at the same time do not share a budget."""
    with open(f"/tmp/stacksift-test-redis-db-{REDIS_DB}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = redis_db()
        client.flushdb()
        try:
            yield client
        finally:
            client.flushdb()


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the table-driven tests: each case uses a project of its own."""
    srv = Server(tmp_path_factory.mktemp("shared") / "data")
    srv.data_dir.mkdir()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


# ---------------------------------------------------------------------------- scrubbing
def _no_secret(text: str, found_in: str, secret_values: list[str]) -> None:
    low = text.lower()
    leaked = [s for s in secret_values if s.lower() in low]
    assert not leaked, f"{found_in} contains {leaked}"


def _file_text(data: bytes) -> str:
    """A file's bytes as text, with the content of every zstd frame in it (the inbox
    compresses payloads), so a secret in a leftover frame is found too."""
    parts = [data.decode("latin-1")]
    start = data.find(ZSTD_MAGIC)
    while start != -1:
        with contextlib.suppress(zstandard.ZstdError):  # not a frame: bytes that look like one
            parts.append(zstandard.ZstdDecompressor().decompressobj().decompress(data[start:]))
        start = data.find(ZSTD_MAGIC, start + 1)
    return "".join(p if isinstance(p, str) else p.decode("latin-1") for p in parts)


def test_sdk_secrets_reach_no_storage_api_or_index(server: Server) -> None:
    project = server.project()
    tag = secrets.token_hex(6)
    password, token, db_password = f"hunter{tag}pw", f"tok{secrets.token_hex(16)}", f"dbpw{tag}"
    card = luhn_card()
    spaced_card = " ".join(card[i : i + 4] for i in range(0, 16, 4))
    all_secrets = [password, token, db_password, card, spaced_card]
    result = run_script(
        "python_secrets.py",
        project.dsn,
        *("--password", password, "--card", card, "--token", token),
        *("--db-password", db_password),
    )
    assert result["status_codes"] == {"200": 2}
    # The SDK sent every secret: the server is the one that removed them.
    assert result["sdk_kept_secrets"], result["missing_in_sdk"]
    exc_id, msg_id = result["event_ids"]
    server.wait_events(project, 2)

    # --- the API output: no secret, but every key that held one is still there
    path = f"/api/v1/projects/{project.id}/events"
    exc_event = server.get(f"{path}/{exc_id}", project.read_token).json()
    msg_event = server.get(f"{path}/{msg_id}", project.read_token).json()
    listing = server.get(path, project.read_token).text
    for name, text in (
        ("event", json.dumps(exc_event)),
        ("message event", json.dumps(msg_event)),
        ("event list", listing),
    ):
        _no_secret(text, f"API {name}", all_secrets)

    exc = exc_event["exception"]["values"][-1]
    assert exc["type"] == "PaymentError"
    assert exc["value"] == f"card {FILTERED} declined while using postgres://user:{FILTERED}@db/x"
    frame = next(f for f in exc["stacktrace"]["frames"] if f["function"] == "charge")
    assert frame["vars"]["password"] == FILTERED
    assert frame["vars"]["connection"] == f"'postgres://user:{FILTERED}@db/x'"
    assert FILTERED in frame["vars"]["card"]
    headers = exc_event["request"]["headers"]
    assert headers["Authorization"] == FILTERED
    assert headers["X-Request-Id"] == "req-42"  # ordinary headers are untouched
    assert exc_event["request"]["data"]["note"] == f"retry with postgres://user:{FILTERED}@db/x"
    crumb = exc_event["breadcrumbs"]["values"][-1]["message"]
    assert crumb == f"connecting to postgres://user:{FILTERED}@db/x"
    # The argv integration sends "--password <value>" as two list items.
    argv = exc_event["extra"]["sys.argv"]
    for flag in ("--password", "--token", "--db-password", "--card"):
        assert argv[argv.index(flag) + 1] == FILTERED
    assert msg_event["logentry"]["formatted"] == f"refund to card {FILTERED} failed"

    # --- search: the secrets are not in the index; ordinary words are
    def search(q: str) -> list[dict[str, Any]]:
        return server.get(path, project.read_token, q=q).json()["data"]

    assert [e["event_id"] for e in search("declined")] == [exc_id]
    for secret in (password, token, db_password, card):
        assert search(secret) == []

    # --- the full-text index table itself
    db_path = server.data_dir / "stacksift.db"
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        fts_rows = conn.execute("SELECT words || ' ' || parts FROM events_fts").fetchall()
    assert len(fts_rows) == 2
    fts_text = " ".join(r[0] for r in fts_rows)
    assert "declined" in fts_text and "refund" in fts_text
    _no_secret(fts_text, "events_fts", all_secrets)

    # --- the database files on disk, every page, once the WAL is folded in (the inbox
    # held the raw events until processing deleted them)
    server.stop()
    raw = {}
    for path in (db_path, server.data_dir / "inbox.db"):
        with sqlite3.connect(path) as conn:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
        for suffix in ("-wal", "-journal"):
            wal = path.with_name(path.name + suffix)
            assert not wal.exists() or wal.stat().st_size == 0
        raw[path.name] = _file_text(path.read_bytes())
    assert "declined while using postgres://user:[Filtered]@db/x" in raw["stacksift.db"]
    for name, text in raw.items():
        _no_secret(text, name, all_secrets)


def test_custom_pattern_applies_to_the_next_event_and_bad_ones_are_refused(
    module_server: Server,
) -> None:
    server, project = module_server, new_project(module_server)
    before = put_settings(server, project, {}).json()

    refused = {
        "(unclosed": "is not a valid regular expression",
        "(a+)+$": "nests unbounded repeats",
        "x*": "matches the empty string",
        "(a|aa)+$": "takes too long",  # passes the structural check; the probe catches it
    }
    for pattern, reason in refused.items():
        resp = put_settings(server, project, {"scrubbing": {"custom_patterns": [pattern]}})
        assert resp.status_code == 400, (pattern, resp.text)
        error = resp.json()["error"]
        assert error["code"] == "invalid_request"
        assert reason in error["message"] and repr(pattern) in error["message"], error
    # a typo is refused too, not silently ignored
    resp = put_settings(server, project, {"scrubbing": {"custom_pattern": ["ORD-\\d+"]}})
    assert resp.status_code == 400 and "custom_pattern" in resp.json()["error"]["message"]
    resp = put_settings(server, project, {"limits": {"key_rate_limit": "lots per minute"}})
    assert resp.status_code == 400 and "lots per minute" in resp.json()["error"]["message"]
    current = httpx.get(f"{server.url}/api/v1/projects/{project.id}/settings", headers=ADMIN)
    assert current.json() == before  # nothing refused was saved

    first = event("order ORD-123456 for ada@example.com failed")
    assert send(server, project, first).status_code == 200
    server.wait_events(project, 1)
    resp = put_settings(
        server, project, {"scrubbing": {"custom_patterns": ["ORD-\\d{6}"], "scrub_emails": True}}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["scrubbing"]["custom_patterns"] == ["ORD-\\d{6}"]
    second = event("order ORD-654321 for ada@example.com failed")
    assert send(server, project, second).status_code == 200
    events = {e["event_id"]: e for e in server.wait_events(project, 2)}
    assert events[first["event_id"]]["logentry"]["formatted"] == first["message"]
    assert events[second["event_id"]]["logentry"]["formatted"] == (
        f"order {FILTERED} for {FILTERED} failed"
    )


def test_slow_custom_pattern_cannot_stall_the_worker(module_server: Server) -> None:
    """A pattern that passes the checks at save time but backtracks for ages on a long
    input: the event is stored at once, failing closed, and the next one is not held up."""
    server, project = module_server, new_project(module_server)
    slow = "^(([a-z])+.)+[A-Z]([a-z])+$"
    resp = put_settings(server, project, {"scrubbing": {"custom_patterns": [slow]}})
    assert resp.status_code == 200, resp.text

    trap = event("a" * 3000, tags={"customer": "acme"})
    after = event("ordinary message")
    started = time.monotonic()
    assert send(server, project, trap).status_code == 200
    assert send(server, project, after).status_code == 200
    events = {e["event_id"]: e for e in server.wait_events(project, 2, timeout=10)}
    assert time.monotonic() - started < 5
    assert events[trap["event_id"]]["logentry"]["formatted"] == FILTERED
    assert events[after["event_id"]]["logentry"]["formatted"] == "ordinary message"


def test_stored_settings_are_not_rejudged_on_load(module_server: Server) -> None:
    """The save-time checks of a pattern include a timed probe, which a loaded machine
    can fail; settings already saved must keep working (here: saved by an older
    version whose checks were looser), or every request of the project would fail."""
    server, project = module_server, new_project(module_server)
    stored = {"scrubbing": {"custom_patterns": ["ORD-(\\d+)+"]}}
    resp = put_settings(server, project, stored)
    assert resp.status_code == 400  # refused today when saved through the API
    with sqlite3.connect(server.data_dir / "stacksift.db") as conn:
        conn.execute(
            "UPDATE projects SET settings = ? WHERE id = ?", (json.dumps(stored), project.id)
        )
    ConfigVersion(server.data_dir / "config.version").bump()  # as the API does on save

    ev = event("order ORD-42 failed")
    assert send(server, project, ev).status_code == 200
    (stored_event,) = server.wait_events(project, 1)
    assert stored_event["logentry"]["formatted"] == f"order {FILTERED} failed"
    resp = httpx.get(f"{server.url}/api/v1/projects/{project.id}/settings", headers=ADMIN)
    assert resp.status_code == 200
    assert resp.json()["scrubbing"]["custom_patterns"] == ["ORD-(\\d+)+"]


# ------------------------------------------------------------------------ inbound filters
CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
HEADLESS = CHROME.replace("Chrome/", "HeadlessChrome/")
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
IE10 = "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.1; Trident/6.0)"
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"


def browser(ua: str, url: str = "https://shop.example/cart") -> dict[str, Any]:
    return {"request": {"url": url, "headers": {"User-Agent": ua}}}


def js_error(value: str, path: str = "https://shop.example/static/app.js") -> dict[str, Any]:
    frame = {"abs_path": path, "filename": path, "function": "onClick", "lineno": 3}
    return {
        "exception": {
            "values": [{"type": "TypeError", "value": value, "stacktrace": {"frames": [frame]}}]
        }
    }


# (filter settings, reason counted, events it drops, events it keeps); a drop may name
# HTTP headers of the ingest request under "_http".
FILTER_CASES: list[tuple[dict[str, Any], str, list[dict[str, Any]], list[dict[str, Any]]]] = [
    (
        {"localhost": True},
        "localhost",
        [
            {"request": {"url": "http://localhost:3000/cart"}},
            {"request": {"url": "http://127.0.0.1:8000/"}},
            # the app's user is local (the connection, from 127.0.0.1, is another address)
            {"user": {"ip_address": "::1"}},
        ],
        [
            browser(CHROME),
            {"user": {"ip_address": "203.0.113.9"}},
            # Browser events get the connection's address as user IP (here 127.0.0.1, as
            # behind a reverse proxy on the same host): that is not a local user.
            {"platform": "javascript", **browser(CHROME)},
            {"platform": "javascript", "user": {"ip_address": "{{auto}}"}, **browser(CHROME)},
        ],
    ),
    (
        {"browser_extensions": True},
        "browser_extension",
        [
            js_error("Extension context invalidated."),
            js_error("x is undefined", "chrome-extension://abcdefgh/content.js"),
        ],
        [js_error("x is undefined")],
    ),
    (
        {"web_crawlers": True},
        "web_crawler",
        [browser(GOOGLEBOT), {"_http": {"User-Agent": GOOGLEBOT}}],
        [browser(CHROME), browser(HEADLESS)],
    ),
    (
        {"legacy_browsers": True},
        "legacy_browser",
        [browser(IE10)],
        [browser(FIREFOX), browser(CHROME)],
    ),
    (
        {"error_messages": ["*ResizeObserver loop*", "ChunkLoadError: *"]},
        "error_message",
        [
            {"message": "ResizeObserver loop limit exceeded"},
            {"exception": {"values": [{"type": "ChunkLoadError", "value": "Loading chunk 7"}]}},
        ],
        [
            {"message": "payment failed"},
            {"exception": {"values": [{"type": "TypeError", "value": "ChunkLoadError"}]}},
        ],
    ),
    (
        {"releases": ["*-dev", "0.*"]},
        "release",
        [{"release": "2.0.0-dev"}, {"release": "0.9.1"}],
        [{"release": "2.0.0"}, {"release": "1.0.0-dev.1"}],
    ),
    (
        {"environments": ["production"]},
        "environment",
        [{"environment": "staging"}],
        [{"environment": "production"}, {"environment": "Production"}],
    ),
    (
        {"min_level": "error"},
        "level",
        [{"level": "warning"}, {"level": "info"}],
        [{"level": "error"}, {"level": "fatal"}],
    ),
]


@pytest.mark.parametrize(
    ("filters", "reason", "drops", "keeps"), FILTER_CASES, ids=[c[1] for c in FILTER_CASES]
)
def test_inbound_filter_drops_and_keeps(
    module_server: Server,
    filters: dict[str, Any],
    reason: str,
    drops: list[dict[str, Any]],
    keeps: list[dict[str, Any]],
) -> None:
    server, project = module_server, new_project(module_server)

    def post(extra: dict[str, Any]) -> str:
        extra = dict(extra)
        http = extra.pop("_http", {})
        ev = {**event(f"{reason} case"), **extra}
        resp = send(server, project, ev, **http)
        assert resp.status_code == 200, resp.text
        return ev["event_id"]

    # Off by default: what the filter would drop is stored.
    baseline = post(drops[0])
    server.wait_events(project, 1)

    assert put_settings(server, project, {"filters": filters}).status_code == 200
    for extra in drops:
        post(extra)
    kept = {post(extra) for extra in keeps}

    def all_processed() -> dict[str, int] | None:
        counts = outcomes(server, project)
        done = sum(n for k, n in counts.items() if k == "processed" or k.startswith("filtered:"))
        return counts if done == counts["accepted"] == 1 + len(drops) + len(keeps) else None

    counts = server.wait_for(all_processed)
    filtered = {k: v for k, v in counts.items() if k.startswith("filtered:")}
    assert filtered == {f"filtered:{reason}": len(drops)}
    assert stored_ids(server, project) == kept | {baseline}


# ----------------------------------------------------------------------------- rate limits
def parse_limit_header(value: str) -> tuple[int, str, str, str]:
    retry, categories, scope, reason = value.split(":")
    return int(retry), categories, scope, reason


def check_refusal(
    resp: httpx.Response, code: str, categories: str, scope: str, max_retry: int
) -> int:
    assert resp.status_code == 429, resp.text
    assert resp.json()["error"]["code"] == code
    retry = resp.headers["Retry-After"]
    assert retry.isdigit() and 1 <= int(retry) <= max_retry, retry
    assert parse_limit_header(resp.headers["X-Sentry-Rate-Limits"]) == (
        int(retry),
        categories,
        scope,
        code,
    )
    return int(retry)


def test_python_sdk_stops_sending_for_the_announced_period(server: Server) -> None:
    project = server.project()
    limit = {"limits": {"key_rate_limit": "3 per 10 seconds"}}
    assert put_settings(server, project, limit).status_code == 200

    result = run_script("python_burst.py", project.dsn, "10", "--resume")

    burst = result["requests"][: len(result["requests"]) - len(result["resumed"]["requests"])]
    assert [r["status"] for r in burst] == [200, 200, 200, 429]
    refused = burst[-1]
    retry = int(refused["retry_after"])
    assert 1 <= retry <= 10
    assert refused["rate_limits"] == f"{retry}::key:rate_limited"
    # The six other events were dropped by the SDK itself, inside the announced period,
    # and it made no request at all (not even its client report) until the period ended.
    assert len(result["drops"]) == 6
    assert all(refused["t"] <= t < refused["t"] + retry for t in result["drops"])
    assert result["limited_for_after_burst"] > 0
    resumed = result["resumed"]["requests"]
    assert resumed[0]["t"] >= refused["t"] + retry - 1  # Retry-After is rounded up
    assert resumed[0]["status"] == 200 and resumed[0]["events"] == 1

    # The server saw exactly 4 + 1 event requests: 3 + 1 accepted, 1 refused.
    counts = wait_outcome(server, project, "processed", 4)
    assert counts["accepted"] == 4 and counts["rate_limited"] == 1
    stored = stored_ids(server, project)
    assert len(stored) == 4 and result["resumed"]["event_id"] in stored


def test_limits_answer_429_with_both_headers_on_every_endpoint(module_server: Server) -> None:
    server, project = module_server, new_project(module_server)
    resp = httpx.post(f"{server.url}/api/v1/projects/{project.id}/keys", json={}, headers=ADMIN)
    second_key = resp.json()["secret"]
    # the settings apply to the very next request: no restart, no cache to expire
    limits = {"limits": {"key_rate_limit": "2/minute", "project_rate_limit": "3/minute"}}
    assert put_settings(server, project, limits).status_code == 200

    ok = [send(server, project, event()), send_native(server, project, [event()])]
    assert [r.status_code for r in ok] == [200, 200]
    origin = {"Origin": "https://shop.example"}
    refused = [
        send(server, project, event(), **origin),
        httpx.post(
            f"{server.url}/api/{project.id}/store/",
            content=orjson.dumps(event()),
            headers={**sentry_auth(project.ingest_key), **origin},
        ),
        send_native(server, project, [event(), event()]),
    ]
    for resp in refused:
        check_refusal(resp, "rate_limited", "", "key", 60)
    # browser SDKs can read the headers only if CORS exposes them on the 429 itself
    assert refused[0].headers["access-control-allow-origin"] == "*"
    assert "retry-after" in refused[0].headers["access-control-expose-headers"]

    # another key of the project has its own budget, but the project's is shared
    assert send(server, project, event(), key=second_key).status_code == 200
    check_refusal(send(server, project, event(), key=second_key), "rate_limited", "", "project", 60)

    counts = wait_outcome(server, project, "processed", 3)
    assert counts["accepted"] == 3
    assert counts["rate_limited"] == 1 + 1 + 2 + 1  # the batch of two counts its two events
    assert len(stored_ids(server, project)) == 3


@pytest.mark.parametrize("storage", ["redis", "data dir"])
def test_two_servers_share_one_budget(
    tmp_path: Path, shared_redis: redis.Redis, storage: str
) -> None:
    """Two servers on one data directory: through Redis when it is set, else through the
    data directory's counters file (app.shared_counters)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = {"STACKSIFT_REDIS_URL": REDIS_URL} if storage == "redis" else {}
    servers = [Server(data_dir, extra_env=env), Server(data_dir, extra_env=env)]
    try:
        for srv in servers:
            srv.start()
        project = new_project(servers[0])
        limit = 5
        resp = put_settings(servers[1], project, {"limits": {"key_rate_limit": f"{limit}/minute"}})
        assert resp.status_code == 200, resp.text
        statuses = [
            send(servers[i % 2], project, event(f"alternating {i}")).status_code
            for i in range(2 * limit)
        ]
        assert sorted(statuses) == [200] * limit + [429] * limit
        # the budget really lives where it should
        assert (shared_redis.dbsize() > 0) == (storage == "redis")
        counts = wait_outcome(servers[0], project, "processed", limit)
        assert counts["accepted"] == limit
        assert counts["rate_limited"] == limit
    finally:
        for srv in servers:
            srv.stop()


def test_redis_outage_keeps_ingest_up_with_local_limits(tmp_path: Path) -> None:
    """Nothing listens on the Redis port: ingest must neither fail nor hang, and the
    server falls back to limiting through its data directory."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    srv = Server(tmp_path / "data", extra_env={"STACKSIFT_REDIS_URL": dead})
    srv.data_dir.mkdir()
    srv.start()
    try:
        project = new_project(srv)
        limit = {"limits": {"key_rate_limit": "3/minute"}}
        assert put_settings(srv, project, limit).status_code == 200
        started = time.monotonic()
        statuses = [send(srv, project, event()).status_code for _ in range(5)]
        assert time.monotonic() - started < 10
        assert statuses == [200, 200, 200, 429, 429]
    finally:
        srv.stop()


# --------------------------------------------------------------------------------- quotas
def test_hourly_quota_refuses_with_429_and_counts_over_quota(module_server: Server) -> None:
    server, project = module_server, new_project(module_server)
    assert put_settings(server, project, {"limits": {"events_per_hour": 3}}).status_code == 200

    statuses = [send(server, project, event(f"quota {i}")) for i in range(5)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429]
    for resp in statuses[3:]:
        check_refusal(resp, "quota_exceeded", ERROR_CATEGORIES, "project", 3600)
    # Only events are under quota: an envelope with just a client report still goes through.
    report = orjson.dumps({"timestamp": time.time(), "discarded_events": []})
    resp = httpx.post(
        f"{server.url}/api/{project.id}/envelope/",
        content=envelope(None, ("client_report", report)),
        headers=sentry_auth(project.ingest_key),
    )
    assert resp.status_code == 200, resp.text

    counts = wait_outcome(server, project, "processed", 3)
    assert counts["accepted"] == 3 and counts["over_quota"] == 2
    assert len(stored_ids(server, project)) == 3


def test_refused_batch_does_not_spend_the_quota(module_server: Server) -> None:
    server, project = module_server, new_project(module_server)
    assert put_settings(server, project, {"limits": {"events_per_hour": 5}}).status_code == 200

    assert send_native(server, project, [event() for _ in range(3)]).status_code == 200
    # three more do not fit in the two left: refused whole, and they cost nothing
    resp = send_native(server, project, [event() for _ in range(3)])
    check_refusal(resp, "quota_exceeded", ERROR_CATEGORIES, "project", 3600)
    assert [send(server, project, event()).status_code for _ in range(3)] == [200, 200, 429]
    counts = wait_outcome(server, project, "processed", 5)
    assert counts["accepted"] == 5 and counts["over_quota"] == 3 + 1


def test_changing_a_quota_keeps_what_was_spent(module_server: Server) -> None:
    server, project = module_server, new_project(module_server)
    assert put_settings(server, project, {"limits": {"events_per_hour": 3}}).status_code == 200
    assert [send(server, project, event()).status_code for _ in range(3)] == [200] * 3
    # raising the quota by one allows one more event this hour, not a fresh four
    assert put_settings(server, project, {"limits": {"events_per_hour": 4}}).status_code == 200
    assert [send(server, project, event()).status_code for _ in range(2)] == [200, 429]


def test_daily_quota(module_server: Server) -> None:
    server, project = module_server, new_project(module_server)
    quotas = {"limits": {"events_per_hour": 100, "events_per_day": 2}}
    assert put_settings(server, project, quotas).status_code == 200
    statuses = [send(server, project, event()) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    retry = check_refusal(statuses[2], "quota_exceeded", ERROR_CATEGORIES, "project", 86400)
    assert retry > 3600  # the day's window, not the hour's
    assert "per day" in statuses[2].json()["error"]["message"]


# ------------------------------------------------------------------------------ limiter cost
def _check_cost(limiter: RateLimiter, settings: LimitSettings, number: int) -> float:
    """Seconds per check, one after the other (on Redis: a round trip each)."""
    key = secrets.token_hex(32)

    async def checks(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await limiter.check(1, key, settings, 1)
        return time.perf_counter() - start

    asyncio.run(checks(1))  # connect, load scripts
    return asyncio.run(checks(number)) / number


def test_limiter_cost_against_the_accepted_rate(
    tmp_path: Path, shared_redis: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """Prints what one limiter check costs next to what one accepted request costs.

    The only assertions are that a full-speed run with a huge limit is never refused
    and that the benchmark ran; the figures are for people, not for pass/fail.
    """
    huge = "100000000/minute"
    # One process: a request's time there is what one check (in that process) adds to.
    srv = Server(
        tmp_path / "data", extra_env={"STACKSIFT_RATE_LIMIT": huge}, serve_args=["--workers", "1"]
    )
    srv.data_dir.mkdir()
    srv.start()
    try:
        project = srv.project()
        out = subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "bench_ingest.py"),
                "--dsn",
                project.dsn,
                "--duration",
                "10",
                "--no-compression",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
    finally:
        srv.stop()
    assert out.returncode == 0, out.stdout + out.stderr
    bench = json.loads(out.stdout.strip().splitlines()[-1])
    assert bench["accepted"] > 0 and bench["non_2xx"] == 0, bench

    per_request_us = 1e6 / bench["accepted_per_s"]
    key_only = LimitSettings()
    everything = LimitSettings(project_rate_limit=huge, events_per_hour=10**9, events_per_day=10**9)
    rows = []
    for name, url in (("file", None), ("redis", REDIS_URL)):
        limiter = RateLimiter(huge, url, tmp_path)
        for label, settings in (("key limit", key_only), ("key+project+2 quotas", everything)):
            cost_us = _check_cost(limiter, settings, 3000) * 1e6
            rows.append(
                f"  {name:6} {label:22} {cost_us:8.1f} us/check  "
                f"= {100 * cost_us / per_request_us:5.1f}% of a request's time"
                + (" (waited for off the event loop)" if url else "")
            )
    with capsys.disabled():
        print(
            f"\naccepted {bench['accepted_per_s']} events/s with the limiter (file, one key) "
            f"= {per_request_us:.0f} us per request; p50 {bench['latency_ms']['p50']} ms"
        )
        print("\n".join(rows))


# ------------------------------------------------------------------- scrubbing unit detail
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["app.py", "--password", "s3"], ["app.py", "--password", FILTERED]),
        (["'--api-key'", "'k9'", "'-v'"], ["'--api-key'", FILTERED, "'-v'"]),
        (["--token", "--verbose", "x"], ["--token", "--verbose", "x"]),
        (["--secret", 1234], ["--secret", FILTERED]),
        (["--author", "ada", "-5", "x"], ["--author", "ada", "-5", "x"]),
        (["--password=s3", "x"], [f"--password={FILTERED}", "x"]),
    ],
)
def test_command_line_flags_mark_the_next_item(argv: list[Any], expected: list[Any]) -> None:
    from app.project_settings import ScrubbingSettings
    from app.scrubbing import Scrubber

    scrubbed = Scrubber(ScrubbingSettings()).scrub({"extra": {"sys.argv": list(argv)}})
    assert scrubbed["extra"]["sys.argv"] == expected
