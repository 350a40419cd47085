"""Validating project settings costs little, whatever the body: rate limit strings are
checked in linear time before ``limits`` parses them, and custom scrubbing patterns share
one time budget per request, checked off the event loop, so ingest keeps being served."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from app.ratelimit import check_rate_limit
from tests.conftest import ADMIN_TOKEN, Project, Server

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# limits' own pattern backtracks exponentially on this (trailing separator, no match).
HOSTILE_9 = "1 per second," * 9
HOSTILE_30 = "1 per second," * 30
DOCUMENTED = ["1000/minute", "100/second", "10 per hour", "2/minute", "10/second;500/minute",
              "10/5 minutes", "1 per second, 100 per hour"]


def put(server: Server, project: Project, body: dict[str, Any],
        headers: dict[str, str] | None = None) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    resp = httpx.put(f"{server.url}/api/v1/projects/{project.id}/settings", json=body,
                     headers=ADMIN if headers is None else headers, timeout=60)
    return resp, time.monotonic() - started


def ingest(server: Server, project: Project) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/projects/{project.id}/events",
                      json={"message": "still served"},
                      headers={"Authorization": f"Bearer {project.ingest_key}"}, timeout=60)


@pytest.mark.parametrize("field", ["key_rate_limit", "project_rate_limit"])
@pytest.mark.parametrize("value", [HOSTILE_9, HOSTILE_30])
def test_hostile_rate_limit_is_refused_at_once(server: Server, field: str, value: str) -> None:
    project = server.project()
    with ThreadPoolExecutor(2) as pool:
        settings = pool.submit(put, server, project, {"limits": {field: value}})
        accepted = pool.submit(ingest, server, project)
        resp, took = settings.result()
        assert accepted.result().status_code == 200
    assert resp.status_code == 400, resp.text
    assert took < 1.0, f"the hostile PUT took {took:.2f} s"
    error = resp.json()["error"]
    assert error["code"] == "invalid_request"
    assert f"limits.{field}" in error["message"]


def test_documented_rate_limits_are_accepted(server: Server) -> None:
    project = server.project()
    for value in DOCUMENTED:
        resp, _ = put(server, project, {"limits": {"key_rate_limit": value,
                                                   "project_rate_limit": value}})
        assert resp.status_code == 200, (value, resp.text)
        assert resp.json()["limits"]["key_rate_limit"] == value
    saved = httpx.get(f"{server.url}/api/v1/projects/{project.id}/settings", headers=ADMIN)
    assert saved.json()["limits"]["project_rate_limit"] == DOCUMENTED[-1]


@pytest.mark.parametrize("value", ["", "0/second", "5 per fortnight", "1000/minute;",
                                   "1/second|2/minute", ";".join(["1/second"] * 11),
                                   "1" * 201 + "/second", "1000/minute x"])
def test_malformed_rate_limits_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        check_rate_limit(value)


@pytest.mark.parametrize("patterns", [
    [f"(a+)+x{i}$" for i in range(50)],  # nested unbounded repeats: refused by their shape
    [f"(.*a){{20}}x{i}" for i in range(50)],  # slow without that shape: the time budget
])
def test_catastrophic_patterns_are_refused_within_the_budget(
    server: Server, patterns: list[str]
) -> None:
    project = server.project()
    with ThreadPoolExecutor(2) as pool:
        settings = pool.submit(put, server, project,
                               {"scrubbing": {"custom_patterns": patterns}})
        accepted = pool.submit(ingest, server, project)
        resp, took = settings.result()
        assert accepted.result().status_code == 200
    assert resp.status_code == 400, resp.text
    assert took < 1.5, f"checking the patterns took {took:.2f} s"
    message = resp.json()["error"]["message"]
    assert "scrubbing.custom_patterns" in message and "pattern '" in message


def test_good_patterns_are_saved(server: Server) -> None:
    project = server.project()
    resp, _ = put(server, project, {"scrubbing": {"custom_patterns": [r"x\d+", r"order-\w+"]}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["scrubbing"]["custom_patterns"] == [r"x\d+", r"order-\w+"]


@pytest.mark.parametrize("body", [
    {"limits": {"key_rate_limit": HOSTILE_30}},
    {"scrubbing": {"custom_patterns": [f"(.*a){{20}}x{i}" for i in range(50)]}},
])
def test_without_a_token_nothing_is_validated(server: Server, body: dict[str, Any]) -> None:
    project = server.project()
    resp, took = put(server, project, body, headers={})
    assert resp.status_code == 401, resp.text
    assert took < 1.0
    assert resp.json()["error"]["code"] == "unauthorized"
