"""Ingest endpoints over HTTP: auth paths, encodings, the store and native endpoints, bad input."""

from __future__ import annotations

import fcntl
import gzip
import signal
import sqlite3
import time
import uuid
import zlib

import brotli
import httpx
import orjson
import pytest

from tests.conftest import Project, Server


def event(message: str = "boom", **extra: object) -> dict:
    return {"event_id": uuid.uuid4().hex, "message": message, "level": "error", **extra}


def envelope(ev: dict, headers: dict | None = None) -> bytes:
    body = orjson.dumps(ev)
    head = orjson.dumps({"event_id": ev["event_id"], **(headers or {})})
    item = orjson.dumps({"type": "event", "length": len(body)})
    return head + b"\n" + item + b"\n" + body + b"\n"


def auth(key: str) -> dict[str, str]:
    return {"X-Sentry-Auth": f"Sentry sentry_version=7, sentry_key={key}, sentry_client=t/1.0"}


def post(server: Server, path: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(server.url + path, content=body, headers=headers, timeout=10)


def test_every_auth_form_and_encoding_is_accepted(server: Server) -> None:
    p = server.project()
    env_path = f"/api/{p.id}/envelope/"
    sent = []

    def ok(resp: httpx.Response, ev: dict) -> None:
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"id": ev["event_id"]}
        sent.append(ev["event_id"])

    ev = event("x-sentry-auth")
    ok(post(server, env_path, envelope(ev), **auth(p.ingest_key)), ev)
    ev = event("query key")
    ok(post(server, env_path + f"?sentry_key={p.ingest_key}&sentry_version=7", envelope(ev)), ev)
    ev = event("dsn header")
    ok(post(server, env_path, envelope(ev, {"dsn": p.dsn})), ev)
    ev = event("no trailing slash")
    ok(post(server, env_path.rstrip("/"), envelope(ev), **auth(p.ingest_key)), ev)
    for name, compress in [("gzip", gzip.compress), ("deflate", zlib.compress),
                           ("br", brotli.compress)]:
        ev = event(f"encoded {name}")
        ok(post(server, env_path, compress(envelope(ev)), **auth(p.ingest_key),
                **{"Content-Encoding": name}), ev)
    ev = event("store endpoint")
    ok(post(server, f"/api/{p.id}/store/", gzip.compress(orjson.dumps(ev)),
            **auth(p.ingest_key), **{"Content-Encoding": "gzip"}), ev)
    ev = event("native bearer")
    ok(post(server, f"/api/v1/projects/{p.id}/events", orjson.dumps(ev),
            Authorization=f"Bearer {p.ingest_key}"), ev)

    batch = [event(f"batch {i}") for i in range(5)]
    resp = post(server, f"/api/v1/projects/{p.id}/events", orjson.dumps({"events": batch}),
                **{"X-API-Key": p.ingest_key})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"ids": [e["event_id"] for e in batch]}
    sent.extend(e["event_id"] for e in batch)

    stored = server.wait_events(p, len(sent))
    assert sorted(e["event_id"] for e in stored) == sorted(sent)
    by_id = {e["event_id"]: e for e in stored}
    assert by_id[sent[0]]["logentry"]["formatted"] == "x-sentry-auth"
    assert by_id[sent[0]]["sdk"] == {"name": "t", "version": "1.0"}


def test_non_event_items_are_counted_not_stored(server: Server) -> None:
    p = server.project()
    session = b'{"sid":"abc","status":"ok"}'
    body = (b'{}\n{"type":"session"}\n' + session + b'\n{"type":"client_report","length":2}\n{}\n')
    # Made-up types count as one "other" counter, however many names an envelope uses.
    body += b"".join(b'{"type":"made-up-%d"}\n{}\n' % i for i in range(50))
    resp = post(server, f"/api/{p.id}/envelope/", body, **auth(p.ingest_key))
    assert resp.status_code == 200 and resp.json() == {}
    counts = httpx.get(f"{server.url}/api/v1/projects/{p.id}/outcomes",
                       headers={"Authorization": "Bearer test-admin-token-0123456789"}).json()
    assert counts["counts"] == {"item:session": 1, "item:client_report": 1, "item:other": 50}


def test_cors_preflight_and_headers(server: Server) -> None:
    p = server.project()
    resp = httpx.options(
        f"{server.url}/api/{p.id}/envelope/",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type, x-sentry-auth"},
    )
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == "*"
    resp = post(server, f"/api/{p.id}/envelope/?sentry_key=nope", envelope(event()),
                Origin="https://app.example")
    assert resp.status_code == 403
    assert resp.headers["access-control-allow-origin"] == "*"
    assert "x-sentry-rate-limits" in resp.headers["access-control-expose-headers"]


def test_duplicate_event_id_is_stored_once(server: Server) -> None:
    p = server.project()
    ev = event("twice")
    for _ in range(3):
        assert post(server, f"/api/{p.id}/envelope/", envelope(ev),
                    **auth(p.ingest_key)).status_code == 200
    marker = event("after")
    post(server, f"/api/{p.id}/envelope/", envelope(marker), **auth(p.ingest_key))
    events = server.wait_events(p, 2)
    assert sorted(e["event_id"] for e in events) == sorted([ev["event_id"], marker["event_id"]])
    issue = server.get(f"/api/v1/projects/{p.id}/issues", p.read_token).json()["data"]
    assert {i["title"]: i["count"] for i in issue} == {"twice": 1, "after": 1}


def test_revoked_key_stops_working_at_once(server: Server) -> None:
    p = server.project()
    out = server.cli("key", "create", str(p.id)).stdout
    key_id, secret = out.split()[1], out.split()[3]
    path = f"/api/{p.id}/envelope/"
    assert post(server, path, envelope(event()), **auth(secret)).status_code == 200
    server.cli("key", "revoke", str(p.id), key_id)
    resp = post(server, path, envelope(event()), **auth(secret))
    assert resp.status_code == 403
    assert "revoked" in resp.json()["error"]["message"]
    # keys are stored hashed: the secret appears nowhere in the database files
    db = b"".join(f.read_bytes() for f in server.data_dir.glob("*.db*"))
    assert secret.encode() not in db and p.ingest_key.encode() not in db


def gzip_bomb(size: int) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * 1_048_576
    return b"".join([*(comp.compress(chunk) for _ in range(size // len(chunk))), comp.flush()])


@pytest.fixture
def two_projects(server: Server) -> tuple[Project, Project]:
    return server.project("a"), server.project("b")


BAD = [
    # (name, path template, body, headers, status, code)
    ("no key", "/api/{a}/envelope/", b"{}\n", {}, 401, "unauthorized"),
    ("unknown key", "/api/{a}/envelope/", b"{}\n", {"X-Sentry-Auth": "Sentry sentry_key=0123"},
     403, "forbidden"),
    ("key of another project", "/api/{b}/envelope/", b"{}\n", "auth-a", 403, "forbidden"),
    ("project id not a number", "/api/abc/envelope/", b"{}\n", "auth-a", 400,
     "invalid_project_id"),
    ("envelope header not JSON", "/api/{a}/envelope/", b"nope\n", "auth-a", 400, None),
    ("event item not JSON", "/api/{a}/envelope/", b'{}\n{"type":"event"}\n{nope\n', "auth-a",
     400, "invalid_event"),
    ("event item not an object", "/api/{a}/envelope/", b'{}\n{"type":"event"}\n[1]\n', "auth-a",
     400, "invalid_event"),
    ("length that lies", "/api/{a}/envelope/", b'{}\n{"type":"event","length":500}\n{}\n',
     "auth-a", 400, None),
    ("unsupported encoding", "/api/{a}/envelope/", b"{}\n",
     {"auth": "a", "Content-Encoding": "lzma"}, 415, None),
    ("corrupt gzip", "/api/{a}/envelope/", b"\x1f\x8b\x08\x00garbage",
     {"auth": "a", "Content-Encoding": "gzip"}, 400, None),
    ("gzip bomb", "/api/{a}/envelope/", "bomb", {"auth": "a", "Content-Encoding": "gzip"}, 413,
     "payload_too_large"),
    ("store body not JSON", "/api/{a}/store/", b"{not json", "auth-a", 400, "invalid_event"),
    ("native without key", "/api/v1/projects/{a}/events", b"{}", {}, 401, "unauthorized"),
    ("native events not a list", "/api/v1/projects/{a}/events", b'{"events": 3}', "bearer-a",
     400, "invalid_event"),
    ("native body is an array", "/api/v1/projects/{a}/events", b"[]", "bearer-a", 400,
     "invalid_event"),
    ("read without token", "/api/v1/projects/{a}/issues", None, {}, 401, "unauthorized"),
    ("read with another project's token", "/api/v1/projects/{a}/issues", None, "read-b", 403,
     "forbidden"),
    ("bad cursor", "/api/v1/projects/{a}/events?cursor=xyz", None, "read-a", 400,
     "invalid_cursor"),
    ("bad sort", "/api/v1/projects/{a}/issues?sort=bogus", None, "read-a", 400,
     "invalid_request"),
    ("admin with read token", "/api/v1/projects", None, "read-a", 403, "forbidden"),
    ("unknown issue", "/api/v1/projects/{a}/issues/999", None, "read-a", 404, "not_found"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_gets_clear_4xx(server: Server, two_projects: tuple[Project, Project],
                                  case: tuple) -> None:
    name, path, body, headers, status, code = case
    a, b = two_projects
    path = path.format(a=a.id, b=b.id)
    if isinstance(headers, str):
        kind, _, who = headers.partition("-")
        project = a if who == "a" else b
        headers = {
            "auth": auth(project.ingest_key),
            "bearer": {"Authorization": f"Bearer {project.ingest_key}"},
            "read": {"Authorization": f"Bearer {project.read_token}"},
        }[kind]
    elif "auth" in headers:
        headers = {**{k: v for k, v in headers.items() if k != "auth"}, **auth(a.ingest_key)}
    if body == "bomb":
        body = gzip_bomb(200 * 1_048_576)  # 200 MB of zeros, about 200 KB compressed
    if body is None:
        resp = httpx.get(server.url + path, headers=headers, timeout=10)
    else:
        resp = httpx.post(server.url + path, content=body, headers=headers, timeout=10)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code


def test_acknowledged_events_survive_sigkill(server: Server) -> None:
    """Hold the worker lock so nothing is processed, SIGKILL after the 200s, restart."""
    p = server.project()
    server.stop()
    lock = open(server.data_dir / "worker.lock", "a")  # noqa: SIM115 - held across restarts
    fcntl.flock(lock, fcntl.LOCK_EX)
    server.start()
    ids = []
    for i in range(20):
        ev = event(f"durable {['alpha', 'beta', 'gamma', 'delta'][i % 4]}")
        resp = post(server, f"/api/{p.id}/envelope/", envelope(ev), **auth(p.ingest_key))
        assert resp.status_code == 200
        ids.append(ev["event_id"])
    server.stop(signal.SIGKILL)
    with sqlite3.connect(server.data_dir / "inbox.db") as db:
        assert db.execute("SELECT count(*) FROM inbox").fetchone()[0] == 20
    with sqlite3.connect(server.data_dir / "stacksift.db") as db:
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()
    server.start()
    stored = server.wait_events(p, 20)
    assert sorted(e["event_id"] for e in stored) == sorted(ids)
    issues = server.get(f"/api/v1/projects/{p.id}/issues", p.read_token).json()["data"]
    assert sorted(i["count"] for i in issues) == [5, 5, 5, 5]


def test_a_full_backlog_is_refused_with_429_until_processing_catches_up(server: Server) -> None:
    """Nothing processes (worker lock held / no RQ worker) while events arrive: past
    STACKSIFT_MAX_BACKLOG ingest answers 429 with the headers SDKs back off on, and once
    processing runs again the backlog drains and events are accepted again."""
    p = server.project()
    server.stop()
    server.extra_env["STACKSIFT_MAX_BACKLOG"] = "5"
    lock = open(server.data_dir / "worker.lock", "a")  # noqa: SIM115 - held across restarts
    if server.backend == "embedded":
        fcntl.flock(lock, fcntl.LOCK_EX)
    else:
        server.auto_worker = False
    server.start()
    path = f"/api/{p.id}/envelope/"
    accepted: list[str] = []
    for _ in range(200):  # the backlog is read once a second: some overshoot is allowed
        ev = event("backlog")
        resp = post(server, path, envelope(ev), **auth(p.ingest_key))
        if resp.status_code != 200:
            break
        accepted.append(ev["event_id"])
        time.sleep(0.05)
    assert resp.status_code == 429, resp.text
    assert resp.json()["error"]["code"] == "backlog_full"
    assert "STACKSIFT_MAX_BACKLOG=5" in resp.json()["error"]["message"]
    assert resp.headers["Retry-After"] == "60"
    assert resp.headers["X-Sentry-Rate-Limits"] == "60::organization:backlog_full"
    assert len(accepted) > 5

    if server.backend == "embedded":
        fcntl.flock(lock, fcntl.LOCK_UN)
    else:
        server.start_worker()
    lock.close()
    stored = server.wait_events(p, len(accepted))
    assert sorted(e["event_id"] for e in stored) == sorted(accepted)  # none lost, none extra
    after = event("after the backlog")
    server.wait_for(
        lambda: post(server, path, envelope(after), **auth(p.ingest_key)).status_code == 200,
        timeout=10,
    )
