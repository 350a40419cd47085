"""Logs are JSON lines with request ids, and never carry keys, tokens or event payloads."""

from __future__ import annotations

import json

import httpx

from tests.conftest import ADMIN_TOKEN, Server
from tests.test_ingest import auth, envelope, event


def test_logs_are_json_and_hold_no_secrets(server: Server) -> None:
    p = server.project()
    secret = "hunter2-very-secret-value"
    ev = event(f"login failed password={secret}", extra={"password": secret})
    assert httpx.post(f"{server.url}/api/{p.id}/envelope/", content=envelope(ev),
                      headers=auth(p.ingest_key)).status_code == 200
    wrong = "f" * 32
    resp = httpx.post(f"{server.url}/api/{p.id}/envelope/", content=envelope(event()),
                      headers={**auth(wrong), "X-Request-ID": "req-123"})
    assert resp.status_code == 403 and resp.headers["x-request-id"] == "req-123"
    httpx.post(f"{server.url}/api/{p.id}/envelope/", content=b"{}\n{\"type\":\"event\"}\n{bad",
               headers=auth(p.ingest_key))
    server.get(f"/api/v1/projects/{p.id}/issues", p.read_token)
    server.get("/api/v1/projects", ADMIN_TOKEN)
    server.wait_events(p, 1)
    server.stop()

    lines = (server.data_dir / "server.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records and all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    refused = [r for r in records if r.get("request_id") == "req-123"]
    assert refused and refused[0]["status"] == 403 and refused[0]["code"] == "forbidden"
    text = "\n".join(lines)
    for value in (p.ingest_key, p.read_token, ADMIN_TOKEN, wrong, secret):
        assert value not in text
