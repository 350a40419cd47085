"""Tenant isolation and auth, generated from the running server's own route list.

Two projects A and B are made through the admin API.  Every route of
``/openapi.json`` is classified by its tag (ingest, read, admin, public) and then
exercised: credentials that must not work are refused with 401/403 and change
nothing, and the right credential is accepted with the same request, so a refusal is
never a validation error in disguise.  A route with a new tag, a path parameter
without a real id, or a body-taking route without a valid body fails the test: new
routes are covered, or the test says what it needs.

Also here: key rotation with a grace period, secrets stored only as hashes, compared
in constant time, and absent from logs, ``/metrics`` and error bodies.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.auth import same_secret
from tests.conftest import ADMIN_TOKEN, Project, Server, backend_server
from tests.test_ingest import envelope, event

BACKENDS = ("embedded", "distributed")
ROOT = Path(__file__).resolve().parents[1]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# Route class by OpenAPI tag.  A route with another tag fails every test below until
# someone decides which credentials it takes.
CLASSES = {
    "ingest": "ingest",
    "read": "read",
    "admin": "admin",
    "alerts": "admin",
    "operations": "public",
}
# The only routes anyone may call without a credential (the contract's operations).
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}

RULE = {
    "name": "isolation",
    "query": "level:fatal",  # the events sent here are errors: the rule never fires
    "trigger": "new_issue",
    "channels": [{"type": "webhook", "url": "https://hooks.example.invalid/x"}],
}
# Valid bodies, so that a refusal can only come from the credential.  Each one changes
# the project when accepted, so a refusal that let the change through shows in the
# snapshot even if the status were right.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/projects"): {"name": "made-by-admin"},
    ("POST", "/api/v1/projects/{project_id}/keys"): {"kind": "read", "label": "extra"},
    ("POST", "/api/v1/projects/{project_id}/keys/{key_id}/rotate"): {"grace_seconds": 0},
    ("PUT", "/api/v1/projects/{project_id}/settings"): {"filters": {"releases": ["iso-*"]}},
    ("POST", "/api/v1/dead-letter/replay"): {"ids": [987654321]},
    ("PATCH", "/api/v1/projects/{project_id}/issues/{issue_id}"): {"status": "resolved"},
    ("POST", "/api/v1/projects/{project_id}/alert-rules"): RULE,
    ("PUT", "/api/v1/projects/{project_id}/alert-rules/{rule_id}"): {**RULE, "name": "other"},
    ("PATCH", "/api/v1/projects/{project_id}/alert-rules/{rule_id}"): {"enabled": False},
}
QUERY_VALUES = {"field": "level"}  # required query parameters


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    kind: str
    params: tuple[str, ...]
    query: tuple[str, ...]  # every query parameter it takes
    required: tuple[str, ...]  # the required ones

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class Tenant:
    project: Project
    marker: str
    event_id: str = ""
    issue_id: int = 0

    @property
    def id(self) -> int:
        return self.project.id


@dataclass
class World:
    server: Server
    a: Tenant
    b: Tenant
    secrets: set[str] = field(default_factory=set)

    def remember(self, resp: httpx.Response) -> None:
        """Keep every secret the server hands out: none may show up anywhere else."""
        if resp.is_success and resp.headers.get("content-type", "").startswith("application/json"):
            body = resp.json()
            if isinstance(body, dict):
                self.secrets |= {
                    str(body[k]) for k in ("secret", "ingest_key", "read_token") if k in body
                }

    @property
    def leaks(self) -> list[str]:
        """What no refusal may contain: secrets, and any trace of B's data."""
        return [*self.secrets, ADMIN_TOKEN, self.b.marker, self.b.event_id]


# -- set-up ---------------------------------------------------------------------------


def unix(stamp: str) -> float:
    """An RFC 3339 time of the API as Unix seconds."""
    return dt.datetime.fromisoformat(stamp).timestamp()


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


def admin_json(server: Server, method: str, path: str, body: Any = None) -> Any:
    resp = httpx.request(method, server.url + path, json=body, headers=ADMIN, timeout=30)
    assert resp.is_success, f"{method} {path}: {resp.status_code} {resp.text}"
    return resp.json()


def new_tenant(server: Server, name: str) -> Tenant:
    out = admin_json(server, "POST", "/api/v1/projects", {"name": name})
    project = Project(out["id"], out["dsn"], out["ingest_key"], out["read_token"])
    tenant = Tenant(project, f"{name}-{uuid.uuid4().hex}")
    ev = event(tenant.marker)
    resp = httpx.post(
        f"{server.url}/api/v1/projects/{project.id}/events",
        content=orjson.dumps(ev),
        headers=bearer(project.ingest_key),
    )
    assert resp.status_code == 200, resp.text
    stored = server.wait_events(project, 1)[0]
    tenant.event_id, tenant.issue_id = stored["event_id"], stored["issue_id"]
    return tenant


def make_world(server: Server) -> World:
    a, b = new_tenant(server, "tenant-a"), new_tenant(server, "tenant-b")
    assert a.issue_id != b.issue_id and a.event_id != b.event_id
    world = World(server, a, b)
    world.secrets |= {a.project.ingest_key, a.project.read_token}
    world.secrets |= {b.project.ingest_key, b.project.read_token}
    return world


def openapi_routes(server: Server) -> list[Route]:
    spec = httpx.get(server.url + "/openapi.json", timeout=10).json()
    routes, unclassified = [], []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            tags = op.get("tags") or []
            kinds = {CLASSES.get(t) for t in tags}
            kind = kinds.pop() if len(kinds) == 1 else None
            if kind is None or (kind == "public" and (method.upper(), path) not in PUBLIC):
                unclassified.append(f"{method.upper()} {path} (tags {tags})")
                continue
            params = op.get("parameters", [])
            routes.append(
                Route(
                    method.upper(),
                    path,
                    kind,
                    tuple(p["name"] for p in params if p["in"] == "path"),
                    tuple(p["name"] for p in params if p["in"] == "query"),
                    tuple(p["name"] for p in params if p["in"] == "query" and p.get("required")),
                )
            )
    assert not unclassified, f"routes nobody classified (see CLASSES/PUBLIC): {unclassified}"
    for route in routes:
        if route.kind in ("ingest", "read"):
            assert "project_id" in route.params, f"{route}: a project route without project_id"
    return routes


def ids_for(world: World, route: Route, tenant: Tenant) -> dict[str, Any]:
    """Real ids of ``tenant`` for the route's path parameters; keys and rules are made
    fresh for each route, since an accepted DELETE or rotation uses them up."""
    server, ids = world.server, {}
    base = f"/api/v1/projects/{tenant.id}"
    for name in route.params:
        if name == "project_id":
            ids[name] = tenant.id
        elif name == "event_id":
            ids[name] = tenant.event_id
        elif name == "issue_id":
            ids[name] = tenant.issue_id
        elif name == "rule_id":
            ids[name] = admin_json(server, "POST", base + "/alert-rules", RULE)["id"]
        elif name == "key_id":
            key = admin_json(server, "POST", base + "/keys", {"kind": "ingest", "label": "spare"})
            world.secrets.add(key["secret"])
            ids[name] = key["id"]
        else:
            pytest.fail(f"{route}: no real id for path parameter {name!r}: add it to ids_for")
    return ids


def body_for(route: Route) -> Any:
    if route.method not in ("POST", "PUT", "PATCH"):
        return None
    if (route.method, route.path) not in BODIES:
        pytest.fail(f"{route}: no valid body known: add one to BODIES")
    return BODIES[(route.method, route.path)]


def call(
    world: World, route: Route, ids: dict[str, Any], headers: dict[str, str], **params: Any
) -> httpx.Response:
    query = {name: QUERY_VALUES[name] for name in route.required}
    query.update(params)
    resp = httpx.request(
        route.method,
        world.server.url + route.path.format(**ids),
        params=query,
        json=body_for(route),
        headers=headers,
        timeout=30,
    )
    world.remember(resp)
    return resp


def snapshot(world: World) -> dict[str, Any]:
    """Everything a wrongly accepted request could change, as the admin sees it."""
    server = world.server
    out: dict[str, Any] = {
        "projects": admin_json(server, "GET", "/api/v1/projects")["data"],
        "dead": admin_json(server, "GET", "/api/v1/dead-letter")["data"],
    }
    for t in (world.a, world.b):
        base = f"/api/v1/projects/{t.id}"
        out[f"{t.id}/keys"] = admin_json(server, "GET", base + "/keys")["data"]
        out[f"{t.id}/settings"] = admin_json(server, "GET", base + "/settings")
        out[f"{t.id}/outcomes"] = admin_json(server, "GET", base + "/outcomes")
        out[f"{t.id}/rules"] = admin_json(server, "GET", base + "/alert-rules")["data"]
        issues = admin_json(server, "GET", base + "/issues?limit=500")["data"]
        out[f"{t.id}/issues"] = sorted((i["id"], i["status"], i["count"]) for i in issues)
        events = admin_json(server, "GET", base + "/events?limit=500")["data"]
        out[f"{t.id}/events"] = sorted(e["event_id"] for e in events)
    return out


def assert_refused(
    world: World, resp: httpx.Response, statuses: tuple[int, ...], what: str
) -> None:
    assert resp.status_code in statuses, f"{what}: {resp.status_code} {resp.text[:300]}"
    body = resp.json()
    assert list(body) == ["error"], f"{what}: {body}"
    assert body["error"]["code"] in ("unauthorized", "forbidden"), f"{what}: {body}"
    for value in world.leaks:
        assert value not in resp.text, f"{what}: the refusal carries {value[:6]}..."


def assert_no_secret_leaked(world: World, refusals: bool = True) -> None:
    """/metrics, then the server's and workers' logs (the server is stopped to flush them)."""
    server = world.server
    metrics = httpx.get(server.url + "/metrics", timeout=10)
    assert metrics.status_code == 200 and "stacksift_" in metrics.text
    server.stop()
    logs = [p.read_text(errors="replace") for p in sorted(server.data_dir.glob("*.log"))]
    assert logs and (not refusals or any("request refused" in text for text in logs))
    secrets = [*world.secrets, ADMIN_TOKEN]
    assert len(secrets) >= 5
    for secret in secrets:
        assert secret not in metrics.text, f"/metrics carries {secret[:6]}..."
        for text in logs:
            assert secret not in text, f"a log carries {secret[:6]}..."


def kind_routes(server: Server, kind: str) -> list[Route]:
    routes = openapi_routes(server)
    mine = [r for r in routes if r.kind == kind]
    assert mine, f"no {kind} route in /openapi.json"
    # DELETE last: nothing later depends on what it removes.
    return sorted(mine, key=lambda r: r.method == "DELETE")


# -- ingest ---------------------------------------------------------------------------

FORMS = ("x-sentry-auth", "authorization-sentry", "query", "dsn", "bearer", "x-api-key")


def send_ingest(
    world: World, path: str, form: str, key: str, dsn: str, message: str
) -> tuple[httpx.Response, str]:
    """One event to ``path`` with ``key`` given in one of the ways SDKs give it."""
    ev = event(message)
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    env_headers: dict[str, str] = {}
    sentry = f"Sentry sentry_version=7, sentry_key={key}, sentry_client=iso/1.0"
    if form == "x-sentry-auth":
        headers["X-Sentry-Auth"] = sentry
    elif form == "authorization-sentry":
        headers["Authorization"] = sentry
    elif form == "query":
        params["sentry_key"] = key
    elif form == "dsn":
        env_headers["dsn"] = dsn.replace(dsn.split("://")[1].split("@")[0], key, 1)
    elif form == "bearer":
        headers["Authorization"] = f"Bearer {key}"
    elif form == "x-api-key":
        headers["X-API-Key"] = key
    # Only envelopes carry a dsn: elsewhere that form sends no key at all.
    body = envelope(ev, env_headers) if "envelope" in path else orjson.dumps(ev)
    resp = httpx.post(world.server.url + path, content=body, params=params, headers=headers)
    return resp, ev["event_id"]


def check_ingest(world: World, routes: list[Route]) -> None:
    a, b, server = world.a, world.b, world.server
    before = snapshot(world)
    refused_ids: list[str] = []
    accepted_ids: list[str] = []
    paths = []
    for route in routes:
        assert route.method == "POST", f"{route}: an ingest route that is not a POST"
        path = route.path.format(**ids_for(world, route, b))
        paths.append((str(route), path, True))
        if path.endswith("/"):
            paths.append((str(route) + " (no slash)", path.rstrip("/"), False))
    for name, path, in_schema in paths:
        supported = []
        for form in FORMS:
            wrong = [
                ("A's ingest key", a.project.ingest_key),
                ("B's read token", b.project.read_token),
                ("the admin token", ADMIN_TOKEN),
            ]
            results = {}
            for label, key in wrong:
                resp, event_id = send_ingest(world, path, form, key, b.project.dsn, "refused")
                refused_ids.append(event_id)
                results[label] = resp
                assert_refused(world, resp, (401, 403), f"{name} {form} {label}")
            resp, event_id = send_ingest(
                world, path, form, b.project.ingest_key, b.project.dsn, b.marker
            )
            if resp.status_code == 200:
                supported.append(form)
                accepted_ids.append(event_id)
                for label, wrong_resp in results.items():  # a known key, the wrong project
                    assert wrong_resp.status_code == 403, f"{name} {form} {label}"
            else:
                assert_refused(world, resp, (401,), f"{name} {form}: B's key where unsupported")
        if in_schema:
            assert supported, f"{name}: B's own key works in no form: give it a valid body"
        resp = httpx.post(server.url + path, content=b"{}")
        assert_refused(world, resp, (401,), f"{name} without any key")
    # Accepted events were sent after the refused ones: once they are all stored,
    # B holds exactly its own events, A gained nothing, and the counts agree.
    want = sorted(before[f"{b.id}/events"] + accepted_ids)
    server.wait_for(lambda: sorted(e["event_id"] for e in server.all_events(b.project)) == want)
    after = snapshot(world)
    assert after[f"{a.id}/events"] == before[f"{a.id}/events"]
    assert not set(refused_ids) & set(after[f"{b.id}/events"] + after[f"{a.id}/events"])
    outcomes = dict(before[f"{b.id}/outcomes"]["counts"])
    for reason in ("accepted", "processed"):  # and no other reason counted against B
        outcomes[reason] = outcomes.get(reason, 0) + len(accepted_ids)
    counts = f"/api/v1/projects/{b.id}/outcomes"
    server.wait_for(lambda: admin_json(server, "GET", counts)["counts"] == outcomes, 10)
    assert after[f"{a.id}/outcomes"] == before[f"{a.id}/outcomes"]


# -- read -------------------------------------------------------------------------------


def found_something(resp: httpx.Response) -> bool:
    """Lists have data; stats have a total (histograms list empty buckets too)."""
    body = resp.json()
    return body["total"] > 0 if "total" in body else bool(body["data"])


def check_read(world: World, route: Route) -> None:
    a, b = world.a, world.b
    ids = ids_for(world, route, b)
    wrong = {
        "no token": (None, (401,)),
        "A's read token": (a.project.read_token, (403,)),
        "A's ingest key": (a.project.ingest_key, (403,)),
        "B's ingest key": (b.project.ingest_key, (403,)),
    }
    before = snapshot(world)
    for label, (token, statuses) in wrong.items():
        assert_refused(world, call(world, route, ids, bearer(token)), statuses, f"{route} {label}")
        # the ingest endpoint's other header must not open the read API either
        if token:
            resp = call(world, route, ids, {"X-API-Key": token})
            assert_refused(world, resp, (401,), f"{route} {label} as X-API-Key")
    assert snapshot(world) == before, f"{route}: a refused request changed something"
    for token in (b.project.read_token, ADMIN_TOKEN):
        resp = call(world, route, ids, bearer(token))
        assert resp.is_success, f"{route} with B's own credential: {resp.status_code} {resp.text}"

    # A's token on A's own project, naming B's ids or searching for B's issue.
    a_ids = {**ids, "project_id": a.id}
    if set(route.params) - {"project_id"}:
        before = snapshot(world)
        resp = call(world, route, a_ids, bearer(a.project.read_token))
        assert resp.status_code == 404, f"{route} on A with B's ids: {resp.status_code}"
        for value in (b.marker, b.project.read_token):  # (the 404 names the id it was given)
            assert value not in resp.text
        assert snapshot(world) == before, f"{route} on A with B's ids changed something"
    elif "q" in route.query and route.method == "GET":
        q = f"issue:{b.issue_id}"
        mine = call(world, route, ids, bearer(b.project.read_token), q=q)
        assert found_something(mine), f"{route}: B's own search finds nothing: {mine.text}"
        theirs = call(world, route, a_ids, bearer(a.project.read_token), q=q)
        assert theirs.status_code == 200 and not found_something(theirs), theirs.text
        assert b.marker not in theirs.text and b.event_id not in theirs.text


# -- admin ------------------------------------------------------------------------------


def check_admin(world: World, route: Route) -> None:
    a, b = world.a, world.b
    ids = ids_for(world, route, b)
    wrong = {
        "no token": (None, (401,)),
        "B's read token": (b.project.read_token, (403,)),
        "B's ingest key": (b.project.ingest_key, (403,)),
        "A's read token": (a.project.read_token, (403,)),
        "A's ingest key": (a.project.ingest_key, (403,)),
        "the admin token, one character short": (ADMIN_TOKEN[:-1], (403,)),
        "the admin token, one character more": (ADMIN_TOKEN + "0", (403,)),
    }
    before = snapshot(world)
    for label, (token, statuses) in wrong.items():
        assert_refused(world, call(world, route, ids, bearer(token)), statuses, f"{route} {label}")
    assert snapshot(world) == before, f"{route}: a refused request changed something"

    if set(route.params) - {"project_id"}:  # B's key or rule through A's path
        resp = call(world, route, {**ids, "project_id": a.id}, ADMIN)
        assert resp.status_code == 404, f"{route} on A with B's ids: {resp.status_code}"
        assert snapshot(world) == before, f"{route} on A with B's ids changed B"

    resp = call(world, route, ids, ADMIN)
    assert resp.is_success, f"{route} with the admin token: {resp.status_code} {resp.text}"


# -- the matrix -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ingest", "read", "admin", "public"])
def test_every_route_refuses_other_tenants_and_wrong_credentials(server: Server, kind: str) -> None:
    world = make_world(server)
    routes = kind_routes(server, kind)
    if kind == "ingest":
        check_ingest(world, routes)
    for route in routes:
        if kind == "read":
            check_read(world, route)
        elif kind == "admin":
            check_admin(world, route)
        elif kind == "public":
            resp = call(world, route, {}, {})
            assert resp.status_code == 200, f"{route}: {resp.status_code}"
            assert not any(s in resp.text for s in world.leaks[:-2])
    assert_no_secret_leaked(world, refusals=kind != "public")


def test_a_read_token_reads_nothing_of_another_project_by_id(server: Server) -> None:
    """The read API's by-id routes, spelled out (the matrix above derives them)."""
    world = make_world(server)
    a, b = world.a, world.b
    base_a, base_b = f"/api/v1/projects/{a.id}", f"/api/v1/projects/{b.id}"
    token = a.project.read_token
    for path in (
        f"{base_b}/events/{b.event_id}",
        f"{base_b}/issues/{b.issue_id}",
        f"{base_b}/issues/{b.issue_id}/events",
        f"{base_b}/stats/top",
        f"{base_b}/stats/histogram",
    ):
        resp = server.get(path, token, field="level")
        assert resp.status_code == 403 and b.marker not in resp.text, path
    for path in (
        f"{base_a}/events/{b.event_id}",
        f"{base_a}/issues/{b.issue_id}",
        f"{base_a}/issues/{b.issue_id}/events",
    ):
        resp = server.get(path, token)
        assert resp.status_code == 404 and b.marker not in resp.text, path
    top = server.get(f"{base_a}/stats/top", token, field="level", q=f"issue:{b.issue_id}").json()
    assert top["total"] == 0 and top["data"] == []
    # and B's own token does see all of it: the 403/404 above are about the caller
    assert server.get(f"{base_b}/events/{b.event_id}", b.project.read_token).status_code == 200
    assert b.marker in server.get(f"{base_b}/issues/{b.issue_id}", b.project.read_token).text


# -- key rotation -----------------------------------------------------------------------


def key_id(server: Server, project_id: int, kind: str) -> int:
    keys = admin_json(server, "GET", f"/api/v1/projects/{project_id}/keys")["data"]
    return next(k["id"] for k in keys if k["kind"] == kind and k["active"])


def rotate(server: Server, project_id: int, kid: int, body: Any = None) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/v1/projects/{project_id}/keys/{kid}/rotate",
        json=body,
        headers=ADMIN,
        timeout=10,
    )


def ingest_status(server: Server, project_id: int, key: str) -> int:
    resp = httpx.post(
        f"{server.url}/api/{project_id}/envelope/",
        content=envelope(event("rotation")),
        headers={"X-Sentry-Auth": f"Sentry sentry_key={key}"},
    )
    return resp.status_code


def read_status(server: Server, project_id: int, token: str) -> int:
    return server.get(f"/api/v1/projects/{project_id}/issues", token).status_code


def test_rotated_keys_work_during_the_grace_period_then_are_refused(server: Server) -> None:
    p = server.project()
    grace = 2.0
    out_ingest = rotate(server, p.id, key_id(server, p.id, "ingest"), {"grace_seconds": grace})
    out_read = rotate(server, p.id, key_id(server, p.id, "read"), {"grace_seconds": grace})
    assert out_ingest.status_code == 201 and out_read.status_code == 201, out_ingest.text
    new_ingest, new_read = out_ingest.json(), out_read.json()
    assert new_ingest["kind"] == "ingest" and new_ingest["dsn"].startswith("http://")
    assert f"//{new_ingest['secret']}@" in new_ingest["dsn"]
    assert new_read["kind"] == "read" and "dsn" not in new_read
    ends = max(unix(new_ingest["replaced"]["revoked_at"]), unix(new_read["replaced"]["revoked_at"]))
    assert time.time() < ends <= time.time() + grace

    # Both old and new work now; the old ones are used, hence cached, during the grace.
    for _ in range(3):
        assert ingest_status(server, p.id, p.ingest_key) == 200
        assert read_status(server, p.id, p.read_token) == 200
    assert ingest_status(server, p.id, new_ingest["secret"]) == 200
    assert read_status(server, p.id, new_read["secret"]) == 200
    assert time.time() < ends, "the grace period ran out before the old keys were checked"

    # Nothing invalidates the cache when the grace ends: the lookup must see the time.
    time.sleep(max(0.0, ends - time.time()) + 0.3)
    assert ingest_status(server, p.id, p.ingest_key) == 403
    assert read_status(server, p.id, p.read_token) == 403
    assert ingest_status(server, p.id, new_ingest["secret"]) == 200
    assert read_status(server, p.id, new_read["secret"]) == 200
    keys = admin_json(server, "GET", f"/api/v1/projects/{p.id}/keys")["data"]
    assert Counter((k["kind"], k["active"]) for k in keys) == {
        ("ingest", True): 1,
        ("ingest", False): 1,
        ("read", True): 1,
        ("read", False): 1,
    }
    assert {k["label"] for k in keys} == {"default"}  # the new key keeps the label
    server.wait_events(Project(p.id, p.dsn, p.ingest_key, new_read["secret"]), 5)


def test_rotation_without_grace_refuses_the_old_key_at_once(server: Server) -> None:
    p, other = server.project("p"), server.project("other")
    kid = key_id(server, p.id, "ingest")
    assert rotate(server, other.id, kid).status_code == 404  # another project's key
    assert ingest_status(server, p.id, p.ingest_key) == 200
    for bad in ({"grace_seconds": -1}, {"grace_seconds": 10**9}, {"grace": 5}, [1]):
        resp = rotate(server, p.id, kid, bad)
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_request"
    assert ingest_status(server, p.id, p.ingest_key) == 200

    resp = rotate(server, p.id, kid)  # no body: grace 0
    assert resp.status_code == 201, resp.text
    new = resp.json()["secret"]
    assert ingest_status(server, p.id, p.ingest_key) == 403
    assert ingest_status(server, p.id, new) == 200
    assert rotate(server, p.id, kid).status_code == 404  # a revoked key is not rotated again

    # A long grace can be cut short: a key in its grace period can still be revoked.
    new_id = resp.json()["id"]
    newer = rotate(server, p.id, new_id, {"grace_seconds": 3600}).json()["secret"]
    assert ingest_status(server, p.id, new) == 200 and ingest_status(server, p.id, newer) == 200
    deleted = httpx.delete(f"{server.url}/api/v1/projects/{p.id}/keys/{new_id}", headers=ADMIN)
    assert deleted.status_code == 200
    assert ingest_status(server, p.id, new) == 403
    assert ingest_status(server, p.id, newer) == 200
    assert ingest_status(server, other.id, other.ingest_key) == 200  # others untouched


def test_cli_key_rotate(tmp_path: Path) -> None:
    """Once, on one backend: the CLI is another process, so the API learns of the
    rotation through the shared invalidation (file stamp / Redis pub/sub)."""
    backend = os.environ.get("STACKSIFT_TEST_BACKEND", "distributed")
    backend = backend if backend in ("embedded", "distributed") else "distributed"
    with backend_server(backend, tmp_path / "data") as server:
        server.start()
        try:
            p = server.project()
            kid = key_id(server, p.id, "ingest")
            assert ingest_status(server, p.id, p.ingest_key) == 200  # cached in the API
            bad = server.cli("key", "rotate", str(p.id), str(kid), "--grace", "-1", check=False)
            assert bad.returncode == 2 and "--grace" in bad.stderr
            gone = server.cli("key", "rotate", str(p.id), "999999", check=False)
            assert gone.returncode == 1 and "no active key 999999" in gone.stderr
            # 5 s: room for a CLI start (about a second with Elasticsearch) within it
            out = server.cli("key", "rotate", str(p.id), str(kid), "--grace", "5").stdout
            keys = admin_json(server, "GET", f"/api/v1/projects/{p.id}/keys")["data"]
            ends = next(unix(k["revoked_at"]) for k in keys if k["id"] == kid)
            assert ingest_status(server, p.id, p.ingest_key) == 200
            words = out.split()
            assert words[0] == "key" and words[2] == "(ingest):", out
            new = words[3]
            assert f"dsn: http://{new}@" in out and "keeps working for 5s" in out
            assert ingest_status(server, p.id, new) == 200
            listing = server.cli("key", "list", str(p.id)).stdout
            assert time.time() < ends, "too slow: the grace period ended before it was checked"
            assert "expires in" in listing and "\tactive\t" in listing
            time.sleep(max(0.0, ends - time.time()) + 0.3)
            assert ingest_status(server, p.id, p.ingest_key) == 403
            assert ingest_status(server, p.id, new) == 200
            again = server.cli("key", "rotate", str(p.id), words[1]).stdout
            assert f"key {words[1]} revoked" in again
            assert ingest_status(server, p.id, new) == 403
        finally:
            server.stop()


# -- secrets at rest and in transit -------------------------------------------------------


def sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def test_keys_and_tokens_are_stored_only_as_hashes(server: Server) -> None:
    world = make_world(server)
    b = world.b
    base = f"/api/v1/projects/{b.id}"
    made = [
        admin_json(server, "POST", base + "/keys", {"kind": "read", "label": "x"})["secret"],
        admin_json(server, "POST", base + "/keys", {"kind": "ingest"})["secret"],
    ]
    rotated = rotate(server, b.id, key_id(server, b.id, "read"), {"grace_seconds": 60})
    made.append(rotated.json()["secret"])
    out = server.cli("key", "create", str(b.id), "--kind", "read").stdout
    made.append(out.split()[3])
    secrets = [*world.secrets, *made]
    assert len(set(secrets)) == 8

    if server.backend == "embedded":
        files = sorted(server.data_dir.glob("*.db*"))  # the WALs hold recent writes
        raw = b"".join(f.read_bytes() for f in files)
    else:
        from elasticsearch import Elasticsearch

        es = Elasticsearch(server.es_url)
        es.indices.refresh(index=f"{server.prefix}-*")
        keys = es.search(index=f"{server.prefix}-keys", size=1000)["hits"]["hits"]
        assert len(keys) >= 10
        everything = es.search(index=f"{server.prefix}-*", size=10_000)["hits"]["hits"]
        raw = orjson.dumps(keys) + orjson.dumps(everything) + redis_dump(server)
    for secret in secrets:
        assert sha256(secret).encode() in raw, "the stored form is not where the test looks"
        assert secret.encode() not in raw
    assert ADMIN_TOKEN.encode() not in raw


def redis_dump(server: Server) -> bytes:
    """Names and values of every Redis key of this server (queue, counters, limits)."""
    import redis

    client = redis.Redis.from_url(server.backend_env["STACKSIFT_REDIS_URL"])
    out = []
    for name in client.scan_iter(count=1000):
        kind = client.type(name)
        out.append(name)
        if kind == b"string":
            out.append(client.get(name) or b"")
        elif kind == b"hash":
            out.extend(b"%s=%s" % kv for kv in client.hgetall(name).items())
        elif kind == b"list":
            out.extend(client.lrange(name, 0, -1))
        elif kind == b"set":
            out.extend(client.smembers(name))
        elif kind == b"zset":
            out.extend(client.zrange(name, 0, -1))
        elif kind == b"stream":
            for _, fields in client.xrange(name):
                out.extend(b"%s=%s" % kv for kv in fields.items())
    assert out, "nothing in Redis: the wrong database"
    return b"\n".join(out)


def test_secrets_are_compared_in_constant_time() -> None:
    """Timing cannot be measured reliably here, so the code is read: the one place that
    compares a secret uses hmac.compare_digest, and the admin token goes nowhere else.
    Ingest keys and read tokens are never compared: they are looked up by hash."""
    auth = ast.parse((ROOT / "app" / "auth.py").read_text())
    fn = next(
        n for n in ast.walk(auth) if isinstance(n, ast.FunctionDef) and n.name == "same_secret"
    )
    calls = [ast.unparse(n.func) for n in ast.walk(fn) if isinstance(n, ast.Call)]
    assert "hmac.compare_digest" in calls
    assert not [n for n in ast.walk(fn) if isinstance(n, ast.Compare)]

    compared = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                text = ast.unparse(node)
                if "admin_token" in text or (
                    path.name in ("access.py", "auth.py")
                    and any(w in text for w in ("token", "secret", "given", "expected"))
                ):
                    compared.append(f"{path.relative_to(ROOT)}: {text}")
    assert compared == []

    assert same_secret("s3cret", "s3cret")
    assert not same_secret("s3cret", "s3creT") and not same_secret("s3cret", "s3cret ")
    assert not same_secret("", "") and not same_secret("", None) and not same_secret("x", None)
    assert not same_secret("é" * 4, "e" * 4)  # non-ASCII input is compared, not an error
