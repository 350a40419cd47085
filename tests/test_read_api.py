"""Read API: sorting, status, pagination, issue lifecycle (resolve, regression)."""

from __future__ import annotations

import time

import httpx
import orjson

from tests.conftest import Project, Server
from tests.test_ingest import event


def send(server: Server, p: Project, events: list[dict]) -> None:
    resp = httpx.post(f"{server.url}/api/v1/projects/{p.id}/events",
                      content=orjson.dumps({"events": events}),
                      headers={"Authorization": f"Bearer {p.ingest_key}"})
    assert resp.status_code == 200, resp.text


def exc_event(exc_type: str, ts: float, user: str | None = None) -> dict:
    frames = [{"function": "handler", "module": "shop.views", "lineno": int(ts) % 100,
               "in_app": True}]
    return event(
        None, timestamp=ts, user={"id": user} if user else None,
        exception={"values": [{"type": exc_type, "value": f"bad {ts}",
                               "stacktrace": {"frames": frames}}]},
    )


def issues(server: Server, p: Project, **params: object) -> list[dict]:
    resp = server.get(f"/api/v1/projects/{p.id}/issues", p.read_token, **params)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


def test_issue_fields_sorting_and_pagination(server: Server) -> None:
    p = server.project()
    now = time.time()
    batch = [exc_event("A", now - 300 + i, user=f"u{i % 3}") for i in range(6)]
    batch += [exc_event("B", now - 600), exc_event("B", now - 10)]
    batch += [exc_event("C", now - 100)]
    send(server, p, batch)
    server.wait_events(p, 9)

    by_title = {i["title"].split(":")[0]: i for i in issues(server, p)}
    a = by_title["A"]
    assert a["count"] == 6 and a["user_count"] == 3
    assert a["culprit"] == "shop.views in handler"
    assert a["first_seen"] < a["last_seen"]
    assert by_title["B"]["user_count"] == 0

    assert [i["title"][0] for i in issues(server, p, sort="count")] == ["A", "B", "C"]
    assert [i["title"][0] for i in issues(server, p, sort="last_seen")] == ["B", "C", "A"]
    assert [i["title"][0] for i in issues(server, p, sort="first_seen")] == ["C", "A", "B"]

    seen: list[str] = []
    cursor = None
    while True:
        body = server.get(f"/api/v1/projects/{p.id}/events", p.read_token, limit=4,
                          **({"cursor": cursor} if cursor else {})).json()
        seen.extend(e["event_id"] for e in body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(e["event_id"] for e in batch)
    timestamps = [e["timestamp"] for e in server.all_events(p)]
    assert timestamps == sorted(timestamps, reverse=True)


def test_resolve_then_new_event_is_a_regression(server: Server) -> None:
    p = server.project()
    send(server, p, [exc_event("Flaky", time.time())])
    server.wait_events(p, 1)
    issue = issues(server, p)[0]
    url = f"{server.url}/api/v1/projects/{p.id}/issues/{issue['id']}"
    headers = {"Authorization": f"Bearer {p.read_token}"}
    resp = httpx.patch(url, json={"status": "resolved"}, headers=headers)
    assert resp.status_code == 200 and resp.json()["status"] == "resolved"
    assert issues(server, p, status="unresolved") == []
    assert httpx.patch(url, json={"status": "nope"}, headers=headers).status_code == 400

    send(server, p, [exc_event("Flaky", time.time())])
    server.wait_events(p, 2)
    again = httpx.get(url, headers=headers).json()
    assert again["status"] == "unresolved"
    assert again["regressed_at"] is not None
    assert again["count"] == 2
    assert again["latest_event"]["exception"]["values"][0]["type"] == "Flaky"
