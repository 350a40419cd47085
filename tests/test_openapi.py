"""/openapi.json tells the truth: every operation it lists is called on a real server
with valid and invalid requests, and each answer's status must be documented for that
operation and its body must validate against the schema documented for that status.

The operations come from the document itself: one that no case below calls fails the
test, so a new route must come with its cases here."""

from __future__ import annotations

import gzip
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.conftest import ADMIN_TOKEN, Project, Server, free_port
from tests.test_ingest import auth, envelope, event

# The answers must be true of both storages (Elasticsearch documents are not SQLite rows).
BACKENDS = ("embedded", "distributed")
DOC_URI = "urn:stacksift:openapi"
MISSING = 987654


@dataclass
class Call:
    method: str
    template: str
    path: dict[str, Any]
    expect: int  # the status this case must get (documented or not, it is checked too)
    token: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


class Checker:
    """Calls operations and checks each answer against the document."""

    def __init__(self, server: Server, doc: dict[str, Any]) -> None:
        self.server = server
        self.doc = doc
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(DOC_URI, resource)
        self.called: set[tuple[str, str]] = set()
        self.statuses: dict[tuple[str, str], set[int]] = {}

    def __call__(self, call: Call) -> httpx.Response:
        url = self.server.url + call.template.format(**call.path)
        headers = dict(call.kwargs.pop("headers", {}))
        if call.token is not None:
            headers["Authorization"] = f"Bearer {call.token}"
        resp = httpx.request(call.method, url, headers=headers, timeout=30, **call.kwargs)
        key = (call.template, call.method.lower())
        self.called.add(key)
        self.statuses.setdefault(key, set()).add(resp.status_code)
        what = f"{call.method} {url}"
        assert resp.status_code == call.expect, f"{what}: {resp.status_code} {resp.text[:500]}"
        check_answer(self.doc, self.registry, call.template, call.method.lower(), resp)
        return resp


def check_answer(
    doc: dict[str, Any], registry: Registry, template: str, method: str, resp: httpx.Response
) -> None:
    """The status is documented for the operation, the media type too, and a JSON body
    validates against the documented schema."""
    responses = doc["paths"][template][method]["responses"]
    status = str(resp.status_code)
    what = f"{method.upper()} {template} answered {status}"
    assert status in responses, f"{what}, documented: {sorted(responses)}: {resp.text[:300]}"
    content = responses[status].get("content")
    assert content, f"{what}: no content documented for it"
    media = resp.headers.get("content-type", "").split(";")[0].strip()
    assert media in content, f"{what} as {media}, documented: {sorted(content)}"
    if media != "application/json":
        return
    escaped = template.replace("~", "~0").replace("/", "~1")
    pointer = f"/paths/{escaped}/{method}/responses/{status}/content/application~1json/schema"
    validator = Draft202012Validator({"$ref": f"{DOC_URI}#{pointer}"}, registry=registry)
    problems = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(resp.json())
    ]
    assert not problems, f"{what}, body does not match the schema: {problems[:5]}"


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, methods in doc["paths"].items() for method in methods}


def example(doc: dict[str, Any], template: str, method: str, name: str) -> Any:
    body = doc["paths"][template][method]["requestBody"]["content"]["application/json"]
    return body["examples"][name]["value"]


# -- the document itself ------------------------------------------------------------------


def test_document_shape_and_docs_page(server: Server) -> None:
    doc = httpx.get(server.url + "/openapi.json").json()
    text = orjson.dumps(doc).decode()
    assert "HTTPValidationError" not in text and '"422"' not in text
    schemes = doc["components"]["securitySchemes"]
    assert schemes["readToken"] == {**schemes["readToken"], "type": "http", "scheme": "bearer"}
    assert schemes["adminToken"]["scheme"] == "bearer"
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, method in operations(doc):
        op = doc["paths"][path][method]
        where = f"{method.upper()} {path}"
        ok = [s for s in op["responses"] if s.startswith("2")]
        assert ok, f"{where}: no success documented"
        for status in ok:
            schema = op["responses"][status]["content"]
            assert all(media.get("schema") for media in schema.values()), where
            assert schema != {"application/json": {"schema": {}}}, where
        for status, response in op["responses"].items():
            if status[0] in "45":
                assert response["content"]["application/json"]["schema"] == error_ref, where
        if path.startswith("/api/"):
            assert op.get("security"), f"{where}: no security documented"
    rule = doc["components"]["schemas"]["Rule"]["properties"]
    assert "5m" in rule["window"]["description"] and "30m" in rule["throttle"]["description"]
    html = httpx.get(server.url + "/docs").text
    assert "swagger-ui-bundle.js" in html and "://" not in html  # nothing from elsewhere
    for asset in ("/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css"):
        assert httpx.get(server.url + asset).status_code == 200, asset


def test_checker_refuses_what_is_not_documented(server: Server) -> None:
    """The checker below must be able to fail: an undocumented status, a wrong body."""
    doc = httpx.get(server.url + "/openapi.json").json()
    registry = Registry().with_resource(
        DOC_URI, Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    path = "/api/v1/projects/{project_id}/issues"
    req = httpx.Request("GET", server.url)

    def answer(status: int, body: Any) -> httpx.Response:
        return httpx.Response(status, json=body, request=req)

    check_answer(doc, registry, path, "get", answer(200, {"data": [], "next_cursor": None,
                                                         "from": None, "to": "x"}))
    with pytest.raises(AssertionError, match="does not match"):
        check_answer(doc, registry, path, "get", answer(200, {"data": "x", "next_cursor": 3}))
    with pytest.raises(AssertionError, match="does not match"):
        check_answer(doc, registry, path, "get", answer(400, {"detail": "bad"}))
    with pytest.raises(AssertionError, match="documented"):
        check_answer(doc, registry, path, "get", answer(422, {"error": {"code": "x",
                                                                        "message": "y"}}))


# -- every operation, for real ------------------------------------------------------------


def _settle(server: Server, project: Project, count: int) -> None:
    server.wait_events(project, count, timeout=60)


def test_every_operation_answers_as_documented(server: Server) -> None:
    # A closed port for SMTP: the e-mail rule below records a failed attempt.
    server.stop()
    server.extra_env["STACKSIFT_SMTP_URL"] = f"smtp://127.0.0.1:{free_port()}"
    server.start()
    doc = httpx.get(server.url + "/openapi.json").json()
    check = Checker(server, doc)
    p, other, examples = server.project("main"), server.project("other"), server.project("ex")
    pid, A, R = p.id, ADMIN_TOKEN, p.read_token
    big = b"x" * (1 << 20 | 4096)
    exc = {"values": [{"type": "ValueError", "value": "bad cart",
                       "stacktrace": {"frames": [{"function": "checkout"}]}}]}

    def run(*calls: Call) -> list[httpx.Response]:
        return [check(c) for c in calls]

    # ingest --------------------------------------------------------------------------
    native = "/api/v1/projects/{project_id}/events"
    env, store = "/api/{project_id}/envelope/", "/api/{project_id}/store/"
    key = {"Authorization": f"Bearer {p.ingest_key}"}
    ev = event("boom", exception=exc, tags={"region": "eu"})
    one_env = envelope(event("env"))
    dsn_env = envelope(event("dsn"), {"dsn": p.dsn})
    run(
        Call("POST", native, {"project_id": pid}, 200, kwargs={"json": ev, "headers": key}),
        Call("POST", native, {"project_id": pid}, 200, kwargs={
            "json": {"events": [event("a"), event("b")]},
            "headers": {"X-API-Key": p.ingest_key}}),
        Call("POST", native, {"project_id": pid}, 401, kwargs={"json": ev}),
        Call("POST", native, {"project_id": pid}, 403, kwargs={
            "json": ev, "headers": {"Authorization": f"Bearer {other.ingest_key}"}}),
        Call("POST", native, {"project_id": pid}, 400, kwargs={"content": b"{", "headers": key}),
        Call("POST", native, {"project_id": "abc"}, 400, kwargs={"json": ev, "headers": key}),
        Call("POST", native, {"project_id": pid}, 415, kwargs={
            "content": b"x", "headers": {**key, "Content-Encoding": "lzma"}}),
        Call("POST", env, {"project_id": pid}, 200, kwargs={
            "content": gzip.compress(one_env),
            "headers": {**auth(p.ingest_key), "Content-Encoding": "gzip"}}),
        Call("POST", env, {"project_id": pid}, 200, kwargs={"content": dsn_env}),
        Call("POST", env, {"project_id": pid}, 200, kwargs={
            "content": envelope(event("q")), "params": {"sentry_key": p.ingest_key}}),
        Call("POST", env, {"project_id": pid}, 401, kwargs={"content": one_env}),
        Call("POST", env, {"project_id": pid}, 400, kwargs={
            "content": b"not an envelope", "headers": auth(p.ingest_key)}),
        Call("POST", store, {"project_id": pid}, 200, kwargs={
            "json": event("store"), "headers": auth(p.ingest_key)}),
        Call("POST", store, {"project_id": pid}, 403, kwargs={
            "json": event("store"), "headers": auth(uuid.uuid4().hex)}),
        Call("POST", store, {"project_id": pid}, 413, kwargs={
            "content": big, "headers": auth(p.ingest_key)}),
    )
    # A rate limit of one request a minute on the other project: the second is a 429.
    limits = {"limits": {"key_rate_limit": "1/minute"}}
    settings = "/api/v1/projects/{project_id}/settings"
    run(Call("PUT", settings, {"project_id": other.id}, 200, A, {"json": limits}))
    limited = {"json": event("x"), "headers": auth(other.ingest_key)}
    run(Call("POST", store, {"project_id": other.id}, 200, kwargs=dict(limited)),
        Call("POST", store, {"project_id": other.id}, 429, kwargs=dict(limited)))
    _settle(server, p, 7)

    # read ----------------------------------------------------------------------------
    issues = "/api/v1/projects/{project_id}/issues"
    listed = run(Call("GET", issues, {"project_id": pid}, 200, R, {"params": {"q": "bad"}}))
    issue_id = listed[0].json()["data"][0]["id"]
    ids = {"project_id": pid, "issue_id": issue_id}
    gone = {"project_id": pid, "issue_id": MISSING}
    one = issues + "/{issue_id}"
    event_id = ev["event_id"]
    run(
        Call("GET", issues, {"project_id": pid}, 200, A, {"params": {
            "status": "unresolved", "sort": "count", "limit": 1, "from": "2020-01-01"}}),
        Call("GET", issues, {"project_id": pid}, 401),
        Call("GET", issues, {"project_id": pid}, 403, "not-a-token"),
        Call("GET", issues, {"project_id": pid}, 403, other.read_token),
        Call("GET", issues, {"project_id": pid}, 400, R, {"params": {"q": "level:(("}}),
        Call("GET", issues, {"project_id": pid}, 400, R, {"params": {"sort": "nope"}}),
        Call("GET", issues, {"project_id": pid}, 400, R, {"params": {"cursor": "zz"}}),
        Call("GET", one, ids, 200, R),
        Call("GET", one, gone, 404, R),
        Call("GET", one, {"project_id": pid, "issue_id": "abc"}, 400, R),
        Call("PATCH", one, ids, 200, R, {"json": {"status": "resolved"}}),
        Call("PATCH", one, ids, 400, R, {"json": {"status": "done"}}),
        Call("PATCH", one, ids, 401, None, {"json": {"status": "done"}}),
        Call("PATCH", one, gone, 404, R, {"json": {"status": "ignored"}}),
        Call("PATCH", one, ids, 413, R, {"content": big}),
        Call("GET", one + "/events", ids, 200, R, {"params": {"limit": 1}}),
        Call("GET", one + "/events", gone, 404, R),
        Call("GET", one + "/events", ids, 400, R, {"params": {"limit": 0}}),
        Call("GET", native, {"project_id": pid}, 200, R, {"params": {"q": "tags.region:eu"}}),
        Call("GET", native, {"project_id": pid}, 200, R, {"params": {"limit": 2}}),
        Call("GET", native, {"project_id": pid}, 400, R, {"params": {"q": '"open'}}),
        Call("GET", native, {"project_id": pid}, 400, R, {"params": {"to": "yesterday-ish"}}),
        Call("GET", native + "/{event_id}", {"project_id": pid, "event_id": event_id}, 200, R),
        Call("GET", native + "/{event_id}", {"project_id": pid, "event_id": "0" * 32}, 404, R),
        Call("GET", native + "/{event_id}", {"project_id": pid, "event_id": "x"}, 401),
    )
    hist = "/api/v1/projects/{project_id}/stats/histogram"
    top = "/api/v1/projects/{project_id}/stats/top"
    run(
        Call("GET", hist, {"project_id": pid}, 200, R, {"params": {"interval": "1h"}}),
        Call("GET", hist, {"project_id": pid}, 200, R, {"params": {"q": "level:error"}}),
        Call("GET", hist, {"project_id": pid}, 400, R, {"params": {"interval": "7x"}}),
        Call("GET", top, {"project_id": pid}, 200, R, {"params": {"field": "level"}}),
        Call("GET", top, {"project_id": pid}, 200, R, {"params": {"field": "tags.region"}}),
        Call("GET", top, {"project_id": pid}, 400, R, {"params": {"field": "nope"}}),
        Call("GET", top, {"project_id": pid}, 400, R),
    )

    # admin ---------------------------------------------------------------------------
    projects, keys = "/api/v1/projects", "/api/v1/projects/{project_id}/keys"
    key_path = keys + "/{key_id}"
    run(
        Call("GET", projects, {}, 200, A),
        Call("GET", projects, {}, 401),
        Call("GET", projects, {}, 403, R),
        Call("POST", projects, {}, 201, A, {"json": {"name": "made-by-api"}}),
        Call("POST", projects, {}, 400, A, {"json": {"name": ""}}),
        Call("POST", projects, {}, 401, None, {"json": {"name": ""}}),  # token first
        Call("POST", projects, {}, 413, A, {"content": big}),
        Call("GET", keys, {"project_id": pid}, 200, A),
        Call("GET", keys, {"project_id": MISSING}, 404, A),
        Call("GET", keys, {"project_id": "abc"}, 400, A),
    )
    made = run(
        Call("POST", keys, {"project_id": pid}, 201, A, {"json": {"kind": "read"}}),
        Call("POST", keys, {"project_id": pid}, 201, A, {"json": {"label": "ci"}}),
        Call("POST", keys, {"project_id": pid}, 201, A, {"json": {"kind": "read"}}),
    )
    k1, k2, k3 = (r.json()["id"] for r in made)
    rotate = key_path + "/rotate"
    run(
        Call("POST", keys, {"project_id": pid}, 400, A, {"json": {"kind": "admin"}}),
        Call("POST", keys, {"project_id": MISSING}, 404, A, {"json": {}}),
        Call("POST", rotate, {"project_id": pid, "key_id": k1}, 201, A,
             {"json": {"grace_seconds": 60}}),
        Call("POST", rotate, {"project_id": pid, "key_id": k2}, 201, A),
        Call("POST", rotate, {"project_id": pid, "key_id": MISSING}, 404, A),
        Call("POST", rotate, {"project_id": pid, "key_id": k3}, 400, A,
             {"json": {"grace_seconds": -1}}),
        Call("DELETE", key_path, {"project_id": pid, "key_id": k3}, 200, A),
        Call("DELETE", key_path, {"project_id": pid, "key_id": k3}, 404, A),
        Call("DELETE", key_path, {"project_id": pid, "key_id": k3}, 403, R),
        Call("GET", settings, {"project_id": pid}, 200, A),
        Call("GET", settings, {"project_id": MISSING}, 404, A),
        Call("PUT", settings, {"project_id": pid}, 200, A,
             {"json": example(doc, settings, "put", "everything")}),
        Call("PUT", settings, {"project_id": pid}, 200, A,
             {"json": example(doc, settings, "put", "defaults")}),
        Call("PUT", settings, {"project_id": pid}, 400, A, {"json": {"scrubing": {}}}),
        Call("PUT", settings, {"project_id": pid}, 400, A,
             {"json": {"scrubbing": {"custom_patterns": ["(a+)+"]}}}),
        Call("PUT", settings, {"project_id": MISSING}, 404, A, {"json": {}}),
        Call("PUT", settings, {"project_id": pid}, 413, A, {"content": big}),
        Call("GET", "/api/v1/projects/{project_id}/outcomes", {"project_id": pid}, 200, A),
        Call("GET", "/api/v1/projects/{project_id}/outcomes", {"project_id": MISSING}, 404, A),
        Call("GET", "/api/v1/dead-letter", {}, 200, A),
        Call("GET", "/api/v1/dead-letter", {}, 401),
        Call("POST", "/api/v1/dead-letter/replay", {}, 200, A, {"json": {"ids": [MISSING]}}),
        Call("POST", "/api/v1/dead-letter/replay", {}, 400, A, {"json": {"ids": "all"}}),
    )

    # alerts --------------------------------------------------------------------------
    rules = "/api/v1/projects/{project_id}/alert-rules"
    rule = rules + "/{rule_id}"
    # The documented examples, in a project that never gets an event: nothing is sent
    # to the example addresses.
    for trigger in ("new_issue", "regression", "every_event", "frequency"):
        body = example(doc, rules, "post", trigger)
        assert body["trigger"] == trigger
        run(Call("POST", rules, {"project_id": examples.id}, 201, A, {"json": body}))
    mail = {"name": "mail", "trigger": "new_issue", "query": "message:fresh",
            "channels": [{"type": "email", "to": ["oncall@example.com"]}]}
    created = run(Call("POST", rules, {"project_id": pid}, 201, A, {"json": mail}))
    rid = created[0].json()["id"]
    at = {"project_id": pid, "rule_id": rid}
    run(
        Call("POST", rules, {"project_id": pid}, 400, A, {"json": {"name": "x"}}),
        Call("POST", rules, {"project_id": pid}, 400, A, {"json": {**mail, "query": "a:(("}}),
        Call("POST", rules, {"project_id": pid}, 400, A, {"json": {**mail, "window": "5 weeks"}}),
        Call("POST", rules, {"project_id": pid}, 401, None, {"json": {"name": "x"}}),
        Call("POST", rules, {"project_id": MISSING}, 404, A, {"json": mail}),
        Call("GET", rules, {"project_id": examples.id}, 200, A),
        Call("GET", rules, {"project_id": MISSING}, 404, A),
        Call("GET", rule, at, 200, A),
        Call("GET", rule, {"project_id": pid, "rule_id": MISSING}, 404, A),
        Call("PUT", rule, at, 200, A, {"json": {**mail, "throttle": "1h"}}),
        Call("PUT", rule, at, 400, A, {"json": {**mail, "throttle": "soon"}}),
        Call("PATCH", rule, at, 200, A, {"json": example(doc, rule, "patch", "disable")}),
        Call("PATCH", rule, at, 200, A, {"json": example(doc, rule, "patch", "threshold")}),
        Call("PATCH", rule, at, 400, A, {"json": {"trigger": "frequency", "window": None}}),
        Call("PATCH", rule, at, 400, A, {"json": [1]}),
        Call("PATCH", rule, at, 200, A, {"json": {"enabled": True, "throttle": "30m"}}),
    )
    # A new issue that the e-mail rule matches: its attempt fails (nothing listens).
    notes = "/api/v1/projects/{project_id}/notifications"
    run(Call("POST", native, {"project_id": pid}, 200, kwargs={
        "json": event("fresh", exception={"values": [{"type": "Fresh", "value": "x"}]}),
        "headers": key}))

    def attempts() -> list[dict[str, Any]]:
        return server.get(notes.format(project_id=pid), A).json()["data"]

    server.wait_for(attempts, timeout=60)
    run(
        Call("GET", notes, {"project_id": pid}, 200, A, {"params": {"rule_id": rid}}),
        Call("GET", notes, {"project_id": pid}, 400, A, {"params": {"limit": 0}}),
        Call("GET", notes, {"project_id": pid}, 400, A, {"params": {"cursor": "zz"}}),
        Call("GET", notes, {"project_id": MISSING}, 404, A),
        Call("DELETE", rule, at, 200, A),
        Call("DELETE", rule, at, 404, A),
    )

    # operations ----------------------------------------------------------------------
    run(
        Call("GET", "/healthz", {}, 200),
        Call("GET", "/healthz", {}, 200, None, {"params": {"junk": "%ZZ"}}),  # nothing to refuse
        Call("GET", "/readyz", {}, 200),
        Call("GET", "/readyz", {}, 200, "junk"),
        Call("GET", "/metrics", {}, 200),
        Call("GET", "/metrics", {}, 200, None, {"params": {"junk": "1"}}),
    )

    missing = sorted(operations(doc) - check.called)
    assert not missing, f"operations in /openapi.json that this test never called: {missing}"
    one_status = sorted(
        op for op, seen in check.statuses.items()
        if len(seen) < 2 and op[0] not in ("/healthz", "/readyz", "/metrics")
    )
    assert not one_status, f"operations called without an invalid request: {one_status}"

