"""Alert rules end to end: a real server, a real SMTP server, a Postmark look-alike, webhooks.

The engine's own rules (windows, throttle, digest) are also checked directly
against both state backends: in memory, and Redis when one answers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from app.alerts.channels import parse_smtp_url, render
from app.alerts.engine import AlertEngine, Notification
from app.alerts.rules import RuleError, duration, validate_rule
from app.alerts.state import MemoryState, RedisState
from app.query import QueryError
from app.storage.models import IssueUpdate
from tests.conftest import ADMIN_TOKEN, Project, Server, free_port
from tests.test_read_api import exc_event, issues, send

POSTMARK_TOKEN = "pm-test-token"
SECRET = "webhook-secret-123"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# The test SMTP server takes plain-text AUTH: it only listens on 127.0.0.1.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH:UserWarning")


# -- sinks -----------------------------------------------------------------------


@dataclass
class SmtpSink:
    messages: list[tuple[list[str], Message]] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            self.logins.append((auth_data.login, auth_data.password))
            if auth_data == LoginPassword(b"alerts", b"pw"):
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address.startswith("dead@"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 Message accepted"


@dataclass
class Hit:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class HttpSink:
    """Records every POST; answers from ``statuses`` (then 200), Postmark-style on /email."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.statuses: list[int] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.hits.append(Hit(time.time(), self.path, dict(self.headers.items()), body))
                status = sink.statuses.pop(0) if sink.statuses else 200
                out = b"{}"
                if self.path == "/email":
                    status, out = sink.postmark(self.headers, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}"

    def postmark(self, headers: Any, body: bytes) -> tuple[int, bytes]:
        """Postmark's /email wire format: token header in, MessageID out, 422 + ErrorCode."""
        if headers.get("X-Postmark-Server-Token") != POSTMARK_TOKEN:
            return 401, orjson.dumps({"ErrorCode": 10, "Message": "Bad or missing API token"})
        data = orjson.loads(body)
        if any(a.strip().startswith("dead@") for a in data["To"].split(",")):
            return 422, orjson.dumps({"ErrorCode": 300, "Message": "Invalid 'To' address"})
        return 200, orjson.dumps(
            {
                "To": data["To"],
                "SubmittedAt": "2026-11-25T10:00:00.0000000-05:00",
                "MessageID": str(uuid.uuid4()),
                "ErrorCode": 0,
                "Message": "OK",
            }
        )

    def on(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class Env:
    server: Server
    smtp: SmtpSink
    http: HttpSink
    project: Project

    def rule(self, **body: Any) -> dict[str, Any]:
        body.setdefault("name", "rule")
        body.setdefault("channels", [self.webhook()])
        resp = httpx.post(self.rules_url, json=body, headers=ADMIN)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def webhook(self, path: str = "/hook") -> dict[str, Any]:
        return {"type": "webhook", "url": self.http.url + path, "secret": SECRET}

    @property
    def rules_url(self) -> str:
        return f"{self.server.url}/api/v1/projects/{self.project.id}/alert-rules"

    def notifications(self, **params: Any) -> list[dict[str, Any]]:
        resp = httpx.get(
            f"{self.server.url}/api/v1/projects/{self.project.id}/notifications",
            params=params,
            headers=ADMIN,
        )
        assert resp.status_code == 200, resp.text
        return resp.json()["data"]

    def hooks(self, path: str = "/hook", count: int = 1, timeout: float = 10.0) -> list[Hit]:
        return self.server.wait_for(
            lambda: len(hits := self.http.on(path)) >= count and hits, timeout
        )


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    smtp = SmtpSink()
    controller = Controller(
        smtp,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=smtp.authenticate,
        auth_required=True,  # the credentials in STACKSIFT_SMTP_URL are used
        auth_require_tls=False,
    )
    controller.start()
    http = HttpSink()
    srv = Server(
        tmp_path / "data",
        extra_env={
            "STACKSIFT_SMTP_URL": f"smtp://alerts:pw@127.0.0.1:{controller.port}",
            "STACKSIFT_POSTMARK_SERVER_TOKEN": POSTMARK_TOKEN,
            "STACKSIFT_POSTMARK_API_URL": http.url,
            "STACKSIFT_ALERT_FROM": "alerts@stacksift.test",
        },
    )
    srv.data_dir.mkdir()
    srv.start()
    try:
        yield Env(srv, smtp, http, srv.project("checkout"))
    finally:
        srv.stop()
        http.close()
        controller.stop()


def prod_event(exc_type: str, **extra: Any) -> dict[str, Any]:
    ev = exc_event(exc_type, time.time())
    ev.update(environment="production", release="shop@1.2.3", **extra)
    return ev


def check_date_and_message_id(date: str | None, message_id: str | None) -> None:
    """RFC 5322 Date (UTC, about now) and a Message-ID at ALERT_FROM's domain."""
    assert date and date.endswith((" GMT", " +0000")), date
    assert abs(parsedate_to_datetime(date).timestamp() - time.time()) < 60, date
    assert message_id and re.fullmatch(r"<[^<>@\s]+@stacksift\.test>", message_id), message_id


def check_signature(hit: Hit) -> None:
    expected = "sha256=" + hmac.new(SECRET.encode(), hit.body, hashlib.sha256).hexdigest()
    assert hit.headers["X-Stacksift-Signature"] == expected


# -- end to end ---------------------------------------------------------------------


def test_new_issue_reaches_smtp_postmark_and_webhook_within_seconds(env: Env) -> None:
    rule = env.rule(
        name="Checkout errors in production",
        query="environment:production level:>=error",
        trigger="new_issue",
        throttle="30m",
        channels=[
            {"type": "email", "to": ["oncall@example.com", "lead@example.com"]},
            {"type": "postmark", "to": ["oncall@example.com"]},
            env.webhook(),
        ],
    )
    assert rule["enabled"] is True and rule["trigger"] == "new_issue" and rule["id"] > 0

    send(env.server, env.project, [exc_event("StagingOnly", time.time())])  # no environment
    env.server.wait_events(env.project, 1)
    accepted = time.time()
    send(env.server, env.project, [prod_event("CardDeclined")])
    (hit,) = env.hooks()
    latency = hit.at - accepted
    print(f"\nnew_issue: event accepted -> webhook received in {latency * 1000:.0f} ms")
    assert latency < 5.0

    check_signature(hit)
    body = hit.json()
    assert "CardDeclined" in body["text"] and "checkout" in body["text"]
    assert body["trigger"] == "new_issue" and body["rule"]["id"] == rule["id"]
    issue = body["issue"]
    assert issue["title"].startswith("CardDeclined") and issue["level"] == "error"
    assert issue["count"] == 1 and issue["first_seen"] and issue["last_seen"]
    pid = env.project.id
    assert issue["url"] == f"{env.server.url}/projects/{pid}/issues/{issue['id']}"
    assert issue["api_url"] == f"{env.server.url}/api/v1/projects/{pid}/issues/{issue['id']}"
    assert "(error, env production, release shop@1.2.3, 1 event)" in body["text"]
    api_issue = httpx.get(issue["api_url"], headers=ADMIN)
    assert api_issue.status_code == 200 and api_issue.json()["id"] == issue["id"]
    assert body["event"]["environment"] == "production"
    assert body["event"]["release"] == "shop@1.2.3"
    assert body["event"]["frames"][0]["function"] == "handler"

    env.server.wait_for(lambda: env.smtp.messages and env.http.on("/email"))
    rcpts, mail = env.smtp.messages[0]
    assert env.smtp.logins == [(b"alerts", b"pw")]
    assert sorted(rcpts) == ["lead@example.com", "oncall@example.com"]
    assert mail["From"] == "alerts@stacksift.test"
    assert "CardDeclined" in mail["Subject"] and "[checkout]" in mail["Subject"]
    check_date_and_message_id(mail["Date"], mail["Message-ID"])
    text = mail.get_payload(decode=True).decode()
    for needle in ("production", "shop@1.2.3", "shop.views in handler"):
        assert needle in text
    lines = text.splitlines()
    assert f"Issue: {issue['url']}" in lines and f"API:   {issue['api_url']}" in lines
    (pm,) = env.http.on("/email")
    sent = pm.json()
    assert pm.headers["X-Postmark-Server-Token"] == POSTMARK_TOKEN
    assert sent["To"] == "oncall@example.com" and "CardDeclined" in sent["Subject"]
    assert "shop@1.2.3" in sent["TextBody"] and issue["api_url"] in sent["TextBody"]
    headers = {h["Name"]: h["Value"] for h in sent["Headers"]}
    check_date_and_message_id(headers["Date"], headers["Message-ID"])
    assert headers["Message-ID"] != mail["Message-ID"]

    # Another event of the same issue is not a new issue.
    send(env.server, env.project, [prod_event("CardDeclined")])
    env.server.wait_events(env.project, 3)
    time.sleep(1.0)
    assert len(env.http.on("/hook")) == 1 and len(env.smtp.messages) == 1

    attempts = env.server.wait_for(lambda: len(n := env.notifications()) == 3 and n)
    assert {a["channel"] for a in attempts} == {"email", "postmark", "webhook"}
    assert {a["outcome"] for a in attempts} == {"sent"}
    assert all(a["rule_id"] == rule["id"] and a["issue_id"] == issue["id"] for a in attempts)


def test_regression_fires_only_when_a_resolved_issue_comes_back(env: Env) -> None:
    env.rule(trigger="regression", query="exception.type:Flaky")
    send(env.server, env.project, [prod_event("Flaky")])
    env.server.wait_events(env.project, 1)
    time.sleep(1.0)
    assert env.http.on("/hook") == []

    issue = issues(env.server, env.project)[0]
    url = f"{env.server.url}/api/v1/projects/{env.project.id}/issues/{issue['id']}"
    assert httpx.patch(url, json={"status": "resolved"}, headers=ADMIN).status_code == 200
    send(env.server, env.project, [prod_event("Flaky")])
    (hit,) = env.hooks()
    assert hit.json()["trigger"] == "regression" and hit.json()["issue"]["id"] == issue["id"]
    assert "Regression" in hit.json()["text"]


def test_every_event_throttle_digest_and_filtered_events(env: Env) -> None:
    put = httpx.put(
        f"{env.server.url}/api/v1/projects/{env.project.id}/settings",
        json={"filters": {"error_messages": ["*noise*"]}},
        headers=ADMIN,
    )
    assert put.status_code == 200, put.text
    env.rule(trigger="every_event", query="", throttle="3s")

    noise = prod_event("Ignored")
    noise["exception"]["values"][0]["value"] = "just noise"
    send(env.server, env.project, [noise])  # dropped by the inbound filter: never alerts
    send(env.server, env.project, [prod_event("Busy")])
    (first,) = env.hooks()
    assert first.json()["kind"] == "alert" and "Busy" in first.json()["issue"]["title"]

    for _ in range(3):
        send(env.server, env.project, [prod_event("Busy")])
    send(env.server, env.project, [prod_event("Other")])  # throttles are per issue
    env.server.wait_events(env.project, 5)
    hooks = env.hooks(count=2)
    assert "Other" in hooks[1].json()["issue"]["title"]
    time.sleep(0.5)
    assert len(env.http.on("/hook")) == 2  # the 3 "Busy" repeats are held back

    hooks = env.hooks(count=3, timeout=8)
    digest = hooks[2].json()
    assert digest["kind"] == "digest" and "Busy" in digest["issue"]["title"]
    assert digest["digest"]["events"] == 3 and "3 more matching events since" in digest["text"]
    assert 2.5 < hooks[2].at - first.at < 5.0  # the end of the 3 s throttle
    time.sleep(3.5)
    assert len(env.http.on("/hook")) == 3  # one digest, nothing since
    assert not any("noise" in h.body.decode() for h in env.http.on("/hook"))
    kinds = sorted(a["kind"] for a in env.notifications())
    assert kinds == ["alert", "alert", "digest"]


def test_frequency_fires_when_more_than_threshold_in_window(env: Env) -> None:
    env.rule(trigger="frequency", threshold=3, window="1m", query="exception.type:Hot")
    send(env.server, env.project, [prod_event("Hot") for _ in range(3)])
    send(env.server, env.project, [prod_event("Cold") for _ in range(5)])
    env.server.wait_events(env.project, 8)
    time.sleep(1.0)
    assert env.http.on("/hook") == []
    send(env.server, env.project, [prod_event("Hot")])
    (hit,) = env.hooks()
    body = hit.json()
    assert body["trigger"] == "frequency" and "Hot" in body["issue"]["title"]
    assert body["issue"]["count"] == 4


def test_failing_webhook_is_retried_and_every_attempt_listed(env: Env) -> None:
    env.http.statuses = [500]
    env.rule(trigger="every_event")
    send(env.server, env.project, [prod_event("Retry")])
    first, second = env.hooks(count=2)
    assert 0.8 < second.at - first.at < 3.0  # backoff, then success
    assert first.body == second.body
    check_signature(second)
    attempts = env.server.wait_for(lambda: len(n := env.notifications()) == 2 and n)
    newest, oldest = attempts
    assert (oldest["attempt"], oldest["outcome"]) == (1, "retrying")
    assert "HTTP 500" in oldest["error"]
    assert (newest["attempt"], newest["outcome"], newest["error"]) == (2, "sent", None)
    assert newest["target"] == env.http.url + "/hook"

    page = env.notifications(limit=1)
    assert len(page) == 1 and page[0]["id"] == newest["id"]
    resp = httpx.get(
        f"{env.server.url}/api/v1/projects/{env.project.id}/notifications",
        params={"limit": 1},
        headers=ADMIN,
    ).json()
    nxt = httpx.get(
        f"{env.server.url}/api/v1/projects/{env.project.id}/notifications",
        params={"limit": 1, "cursor": resp["next_cursor"]},
        headers=ADMIN,
    ).json()
    assert [n["id"] for n in nxt["data"]] == [oldest["id"]] and nxt["next_cursor"] is None


def test_dead_addresses_and_dead_webhooks_are_reported(env: Env) -> None:
    dead_port = free_port()
    env.rule(
        trigger="every_event",
        channels=[
            {"type": "email", "to": ["dead@example.com"]},
            {"type": "postmark", "to": ["dead@example.com"]},
            {"type": "webhook", "url": f"http://127.0.0.1:{dead_port}/gone"},
        ],
    )
    send(env.server, env.project, [prod_event("Unlucky")])
    attempts = env.server.wait_for(lambda: len(n := env.notifications()) >= 3 and n)
    by_channel = {a["channel"]: a for a in attempts}
    email, postmark, hook = by_channel["email"], by_channel["postmark"], by_channel["webhook"]
    assert (email["outcome"], email["attempt"]) == ("failed", 1)  # 5xx: no retry
    assert "dead@example.com" in email["error"] and "550" in email["error"]
    assert postmark["outcome"] == "failed" and "300" in postmark["error"]
    assert hook["outcome"] == "retrying" and "Connect" in hook["error"]
    assert env.smtp.messages == []


def test_event_text_cannot_inject_mail_headers(env: Env) -> None:
    """Titles and project names come from clients; a line break in them must not end the
    Subject and start a header (Bcc: would copy the alert to anyone)."""
    evil = "\r\nBcc: thief@evil.test\r\nX-Injected: 1\n"
    made = httpx.post(
        f"{env.server.url}/api/v1/projects", json={"name": f"shop{evil}"}, headers=ADMIN
    )
    assert made.status_code == 201, made.text
    project = Project(made.json()["id"], made.json()["dsn"], made.json()["ingest_key"], "")
    url = f"{env.server.url}/api/v1/projects/{project.id}/alert-rules"
    rule = {
        "name": "all",
        "trigger": "every_event",
        "channels": [
            {"type": "email", "to": ["oncall@example.com"]},
            {"type": "postmark", "to": ["oncall@example.com"]},
        ],
    }
    assert httpx.post(url, json=rule, headers=ADMIN).status_code == 201
    ev = prod_event("Injected")
    ev["exception"]["values"][0]["value"] = f"boom{evil}more\u2028text"
    send(env.server, project, [ev])

    env.server.wait_for(lambda: env.smtp.messages and env.http.on("/email"))
    ((rcpts, mail),) = env.smtp.messages
    assert rcpts == ["oncall@example.com"]
    assert mail["Bcc"] is None and mail["X-Injected"] is None
    # The issue's title is the first line of the value; the project name keeps all of it.
    assert mail["Subject"] == "[shop Bcc: thief@evil.test X-Injected: 1 ] ERROR: Injected: boom"
    sent = env.http.on("/email")[0].json()
    assert sent["Subject"] == mail["Subject"] and "\n" not in sent["Subject"]
    listed = f"{env.server.url}/api/v1/projects/{project.id}/notifications"
    attempts = env.server.wait_for(
        lambda: len(n := httpx.get(listed, headers=ADMIN).json()["data"]) == 2 and n
    )
    assert {a["outcome"] for a in attempts} == {"sent"}


def test_texts_count_events_in_singular_and_plural() -> None:
    def note(**kw: Any) -> Notification:
        return Notification(1, "r", "every_event", 2, 3, [], {"title": "Boom"}, **kw)

    def issue(count: int) -> dict[str, Any]:
        return {"title": "Boom", "count": count}

    one = render(note(), issue(1), "shop", "https://errors.example")
    assert one.payload["text"].endswith("release -, 1 event)")
    assert render(note(), issue(2), "shop", "x").payload["text"].endswith(", 2 events)")
    assert render(note(), None, "shop", "x").payload["text"].endswith(", ? events)")
    digest = render(note(kind="digest", events=1, since=0.0), issue(5), "shop", "x")
    assert digest.text.startswith("Digest: 1 more matching event since 1970-01-01T")
    assert digest.payload["text"].startswith("*Digest: 1 more matching event since")
    digest = render(note(kind="digest", events=2, since=0.0), issue(5), "shop", "x")
    assert "Digest: 2 more matching events since" in digest.text
    assert one.payload["issue"]["url"] == "https://errors.example/projects/2/issues/3"
    assert "Issue: https://errors.example/projects/2/issues/3\n" in one.text
    assert one.text.endswith("API:   https://errors.example/api/v1/projects/2/issues/3")


def test_slack_text_shows_event_text_literally() -> None:
    hostile = "<!channel> & <https://evil.example|click>"
    note = Notification(1, "r", "every_event", 2, 3, [], {"title": hostile, "release": "<1>"})
    text = render(note, {"title": hostile}, "a<b>&c", "https://errors.example").payload["text"]
    assert "<!channel>" not in text and "<https://evil" not in text
    assert "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;" in text
    assert "in a&lt;b&gt;&amp;c:" in text and "release &lt;1&gt;" in text
    assert "<https://errors.example/projects/2/issues/3|" in text  # our own link stays one


def test_webhook_secrets_are_never_shown_and_survive_a_round_trip(env: Env) -> None:
    rule = env.rule(trigger="every_event", throttle="0s", channels=[env.webhook()])
    (hook,) = rule["channels"]
    assert hook == {"type": "webhook", "url": env.http.url + "/hook", "secret_set": True}
    rule_url = f"{env.rules_url}/{rule['id']}"
    listed = httpx.get(env.rules_url, headers=ADMIN).json()["data"]
    shown = httpx.get(rule_url, headers=ADMIN).json()
    assert SECRET not in json.dumps(listed) + json.dumps(shown)
    assert shown["channels"] == rule["channels"]

    # GET, change the name, PUT back: the answer never carried the secret, yet it stays.
    body = {k: shown[k] for k in ("name", "query", "trigger", "throttle", "channels")}
    put = httpx.put(rule_url, json={**body, "name": "renamed"}, headers=ADMIN)
    assert put.status_code == 200, put.text
    assert put.json()["channels"][0]["secret_set"] is True and SECRET not in put.text
    patched = httpx.patch(rule_url, json={"throttle": "1s"}, headers=ADMIN)
    assert patched.status_code == 200 and SECRET not in patched.text
    assert patched.json()["channels"][0]["secret_set"] is True
    no_key = {"type": "webhook", "url": env.http.url + "/hook"}  # secret omitted
    patched = httpx.patch(rule_url, json={"channels": [no_key]}, headers=ADMIN)
    assert patched.json()["channels"][0]["secret_set"] is True
    send(env.server, env.project, [prod_event("Signed")])
    (hit,) = env.hooks()
    check_signature(hit)  # signed with the secret given at creation

    # Another URL does not inherit the secret; secret_set: true there needs the secret.
    moved = {"type": "webhook", "url": env.http.url + "/moved", "secret_set": True}
    refused = httpx.put(rule_url, json={**body, "channels": [moved]}, headers=ADMIN)
    assert refused.status_code == 400 and "send the secret" in refused.json()["error"]["message"]
    del moved["secret_set"]
    put = httpx.put(rule_url, json={**body, "channels": [moved]}, headers=ADMIN)
    assert put.json()["channels"] == [{**moved, "secret_set": False}]
    send(env.server, env.project, [prod_event("Unsigned")])
    (hit,) = env.hooks("/moved")
    assert "X-Stacksift-Signature" not in hit.headers

    # Removing a secret: null, or secret_set false.
    for removal in ({"secret": None}, {"secret_set": False}):
        signed = {**body, "channels": [env.webhook()]}
        assert httpx.put(rule_url, json=signed, headers=ADMIN).status_code == 200
        assert httpx.get(rule_url, headers=ADMIN).json()["channels"][0]["secret_set"] is True
        cleared = {**body, "channels": [{**no_key, **removal}]}
        put = httpx.put(rule_url, json=cleared, headers=ADMIN)
        assert put.json()["channels"][0]["secret_set"] is False, removal


def test_rule_validation_crud_and_disable(env: Env) -> None:
    url = env.rules_url
    bad_query = httpx.post(
        url,
        json={
            "name": "x",
            "query": "level:>=error AND (",
            "trigger": "new_issue",
            "channels": [env.webhook()],
        },
        headers=ADMIN,
    )
    assert bad_query.status_code == 400
    err = bad_query.json()["error"]
    assert err["code"] == "invalid_query" and "position 19" in err["message"]

    cases = [
        ({"trigger": "frequency"}, "threshold and window"),
        ({"trigger": "sometimes"}, "trigger"),
        ({"trigger": "new_issue", "throttle": "soon"}, "throttle"),
        ({"trigger": "new_issue", "channels": [{"type": "email", "to": ["nobody"]}]}, "nobody"),
        ({"trigger": "new_issue", "channels": [{"type": "sms", "to": ["1"]}]}, "channels"),
        ({"trigger": "new_issue", "channels": []}, "channels"),
    ]
    for fields_, needle in cases:
        body = {"name": "x", "channels": [env.webhook()], **fields_}
        resp = httpx.post(url, json=body, headers=ADMIN)
        assert resp.status_code == 400, (fields_, resp.text)
        assert resp.json()["error"]["code"] == "invalid_rule" and needle in resp.text
    assert httpx.post(url, content=b"{", headers=ADMIN).status_code == 400
    reader = {"Authorization": f"Bearer {env.project.read_token}"}
    assert httpx.get(url, headers=reader).status_code == 403
    assert (
        httpx.get(f"{env.server.url}/api/v1/projects/999/alert-rules", headers=ADMIN).status_code
        == 404
    )

    rule = env.rule(trigger="every_event", query="exception.type:Quiet", throttle="0s")
    rule_url = f"{url}/{rule['id']}"
    assert httpx.get(rule_url, headers=ADMIN).json()["query"] == "exception.type:Quiet"
    assert [r["id"] for r in httpx.get(url, headers=ADMIN).json()["data"]] == [rule["id"]]
    patched = httpx.patch(rule_url, json={"enabled": False}, headers=ADMIN).json()
    assert patched["enabled"] is False and patched["query"] == "exception.type:Quiet"
    assert httpx.patch(rule_url, json={"window": "x"}, headers=ADMIN).status_code == 400

    send(env.server, env.project, [prod_event("Quiet")])
    env.server.wait_events(env.project, 1)
    time.sleep(1.0)
    assert env.http.on("/hook") == []  # disabled

    replaced = httpx.put(
        rule_url,
        json={
            "name": "loud",
            "query": "exception.type:Quiet",
            "trigger": "every_event",
            "throttle": "0s",
            "channels": [env.webhook("/loud")],
        },
        headers=ADMIN,
    ).json()
    assert replaced["name"] == "loud" and replaced["enabled"] is True
    send(env.server, env.project, [prod_event("Quiet")])
    env.hooks("/loud")

    assert httpx.delete(rule_url, headers=ADMIN).json() == {"id": rule["id"], "deleted": True}
    assert httpx.get(rule_url, headers=ADMIN).status_code == 404
    assert httpx.delete(rule_url, headers=ADMIN).status_code == 404


# -- the engine on its own, on each state backend -------------------------------------


class Rules:
    def __init__(self, *rules: dict[str, Any]) -> None:
        self.rules = [
            {
                "id": i + 1,
                "project_id": 1,
                "updated_ts": 1.0,
                "name": f"r{i}",
                "query": "",
                "throttle": "0s",
                "channels": [],
                **r,
            }
            for i, r in enumerate(rules)
        ]
        self.version = 1

    def rules_version(self) -> int:
        return self.version

    def enabled_rules(self) -> list[dict[str, Any]]:
        return self.rules


def update(issue_id: int, created: bool = False, **event: Any) -> IssueUpdate:
    ev = {
        "event_id": uuid.uuid4().hex,
        "project_id": 1,
        "issue_id": issue_id,
        "level": "error",
        **event,
    }
    return IssueUpdate(issue_id, ev, created, False)


@pytest.fixture(params=["memory", "redis"])
def state(request: pytest.FixtureRequest) -> Iterator[MemoryState | RedisState]:
    if request.param == "memory":
        yield MemoryState()
        return
    import redis

    client = redis.Redis.from_url("redis://127.0.0.1:6379/15")
    try:
        client.ping()
    except redis.RedisError:
        pytest.fail("no Redis on 127.0.0.1:6379 (scripts/services.sh starts one)")
    prefix = f"test:{uuid.uuid4().hex}:"
    yield RedisState(client, prefix)
    for key in client.scan_iter(prefix + "*"):
        client.delete(key)


def test_engine_frequency_window_slides(state: Any) -> None:
    engine = AlertEngine(Rules({"trigger": "frequency", "threshold": 2, "window": "10s"}), state)
    t = 1000.0
    assert engine.evaluate([update(7)], now=t) == []
    assert engine.evaluate([update(7)], now=t + 1) == []
    assert engine.evaluate([update(8)], now=t + 2) == []  # windows are per issue
    assert len(engine.evaluate([update(7)], now=t + 3)) == 1
    assert engine.evaluate([update(9)], now=t + 20) == []
    assert engine.evaluate([update(9)], now=t + 25) == []
    assert engine.evaluate([update(9)], now=t + 31) == []  # t+20 has left the 10 s window
    assert len(engine.evaluate([update(9)], now=t + 33)) == 1  # t+25, t+31, t+33


def test_engine_throttle_and_digest(state: Any) -> None:
    engine = AlertEngine(
        Rules({"trigger": "every_event", "throttle": "30s", "query": "level:error"}), state
    )
    t = 5000.0
    (note,) = engine.evaluate([update(1), update(1, level="info")], now=t)
    assert (note.kind, note.issue_id, note.rule_id) == ("alert", 1, 1)
    assert engine.evaluate([update(1), update(1)], now=t + 5) == []
    assert engine.due_digests(now=t + 29) == []
    (digest,) = engine.due_digests(now=t + 30)
    assert (digest.kind, digest.events, digest.since) == ("digest", 2, t + 5)
    assert engine.due_digests(now=t + 31) == []  # handed out once
    # The digest restarted the throttle: a match right after it is held back again.
    assert engine.evaluate([update(1)], now=t + 40) == []
    assert len(engine.evaluate([update(1)], now=t + 61)) == 1


def test_a_digest_goes_only_to_the_rule_of_its_own_project(state: Any) -> None:
    source = Rules({"trigger": "every_event", "throttle": "30s"})
    engine = AlertEngine(source, state)
    t = 7000.0
    assert len(engine.evaluate([update(1)], now=t)) == 1
    assert engine.evaluate([update(1)], now=t + 5) == []  # held back for the digest
    # Rule id 1 now names another project's rule (an id reused, a store restored):
    # project 1's digest must not reach project 2's channels.
    source.rules[0].update(project_id=2, updated_ts=2.0)
    source.version = 2
    assert engine.due_digests(now=t + 30) == []


def test_embedded_rule_ids_are_never_reused(tmp_path: Path) -> None:
    from app.storage.sqlite import SqliteStore
    from app.storage.sqlite_alerts import AlertStore

    store = SqliteStore(tmp_path / "stacksift.db")
    store.setup()
    first, second = store.create_project("a"), store.create_project("b")
    rules = AlertStore(store)
    rule = validate_rule({"name": "r", "trigger": "new_issue",
                          "channels": [{"type": "email", "to": ["a@example.com"]}]})
    saved = rule.model_dump(mode="json")
    ids = [rules.create_rule(first, saved)["id"] for _ in range(2)]
    assert rules.delete_rule(first, ids[1])
    again = rules.create_rule(second, saved)["id"]
    assert again > ids[1], (ids, again)


def test_engine_triggers_and_compile_cache() -> None:
    source = Rules(
        {"trigger": "new_issue", "query": "level:error"},
        {"trigger": "regression"},
    )
    engine = AlertEngine(source, MemoryState())
    notes = engine.evaluate(
        [
            update(1, created=True),
            update(2, created=True, level="info"),
            IssueUpdate(3, {"project_id": 1, "event_id": "e", "level": "warning"}, False, True),
        ],
        now=1.0,
    )
    assert [(n.rule_id, n.issue_id) for n in notes] == [(1, 1), (2, 3)]
    compiled = [r.match for r in engine._by_id.values()]
    engine.evaluate([update(4)], now=2.0)
    assert [r.match for r in engine._by_id.values()] == compiled  # compiled once
    other = IssueUpdate(5, {"project_id": 2, "event_id": "x", "level": "error"}, True, False)
    assert engine.evaluate([other], now=3.0) == []  # rules belong to their project


def test_rule_and_setting_parsing() -> None:
    assert [duration(d) for d in ("30m", "5m", "1h", "90s", "2d", "10")] == [
        1800,
        300,
        3600,
        90,
        172800,
        10,
    ]
    with pytest.raises(QueryError, match="position"):
        validate_rule(
            {
                "name": "x",
                "query": "level:",
                "trigger": "new_issue",
                "channels": [{"type": "webhook", "url": "http://x"}],
            }
        )
    with pytest.raises(RuleError, match="window"):
        validate_rule(
            {
                "name": "x",
                "trigger": "frequency",
                "threshold": 2,
                "window": "1y",
                "channels": [{"type": "webhook", "url": "http://x"}],
            }
        )
    cfg = parse_smtp_url("smtps://user%40x:p%2Fw@mail.example.com?starttls=0")
    assert (cfg.host, cfg.port, cfg.user, cfg.password, cfg.tls) == (
        "mail.example.com",
        465,
        "user@x",
        "p/w",
        True,
    )
    assert parse_smtp_url("smtp://relay:2525?starttls=1").starttls is True
    with pytest.raises(ValueError, match="smtp:// or smtps://"):
        parse_smtp_url("http://relay")
    assert (
        json.loads(
            json.dumps(
                validate_rule(
                    {
                        "name": "x",
                        "trigger": "new_issue",
                        "channels": [{"type": "webhook", "url": "http://x"}],
                    }
                ).model_dump()
            )
        )["throttle"]
        == "30m"
    )
