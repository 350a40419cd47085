"""Input the server cannot represent is a 4xx in the error shape, never a 500, and a
histogram never has more than 2,000 buckets whatever its interval and range."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx

from tests.conftest import Server, descendants

BACKENDS = ("embedded", "distributed")
MAX_BUCKETS = 2000
RSS_SLACK_KB = 50 * 1024


def _refused(resp: httpx.Response, status: int | None = None, mentions: str = "") -> None:
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)
    if status is not None:
        assert resp.status_code == status, (resp.status_code, resp.text)
    error = resp.json()["error"]
    assert isinstance(error["code"], str) and error["code"], error
    assert mentions in error["message"], error


def _rss_kb(server: Server) -> int:
    assert server.proc is not None
    total = 0
    for pid in (server.proc.pid, *descendants(server.proc.pid)):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def _raw_cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_histogram_buckets_are_capped_without_an_interval(server: Server) -> None:
    server.stop()
    server.serve_args = ["--workers", "1"]
    server.start()
    project = server.project()
    path = f"/api/v1/projects/{project.id}/stats/histogram"
    before = _rss_kb(server)
    for params in (
        {"from": "1970-01-01"},
        {"from": "1970-01-01", "to": "9999-12-31"},
        {"from": "1970-01-01T00:00:00Z", "to": "9999-12-31T23:59:59Z"},
    ):
        resp = server.get(path, project.read_token, **params)
        assert resp.status_code == 200, (params, resp.text)
        body = resp.json()
        assert 0 < len(body["data"]) <= MAX_BUCKETS, (params, len(body["data"]))
        assert body["interval_seconds"] * len(body["data"]) >= 86400 * 365 * 50
    # Before the epoch or overflowing: a 400 naming the parameter, not a huge histogram.
    for value in ("0002-01-01", "-9999999w", "-999999999w"):
        _refused(server.get(path, project.read_token, **{"from": value}), 400, "'from'")
    assert _rss_kb(server) - before < RSS_SLACK_KB, (before, _rss_kb(server))


def test_explicit_interval_over_the_cap_or_unbounded_is_400(server: Server) -> None:
    project = server.project()
    path = f"/api/v1/projects/{project.id}/stats/histogram"
    week = {"from": "-1w"}
    _refused(server.get(path, project.read_token, interval="1s", **week), 400, "interval")
    for interval in ("9999999w", "999999999w", "1000000000s", "²h", "1²h", "٣h", "-1h", "0h"):
        _refused(server.get(path, project.read_token, interval=interval), 400, "interval")
    resp = server.get(path, project.read_token, interval="10m", **week)
    assert resp.status_code == 200 and len(resp.json()["data"]) in (1008, 1009), resp.text


def test_out_of_range_times_are_400_naming_the_parameter(server: Server) -> None:
    project = server.project()
    base = f"/api/v1/projects/{project.id}"
    for name in ("from", "to"):
        for value in (
            "-999999w",
            "-999999999w",
            "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00+23:59",
            "1969-12-31",
        ):
            for path in ("/events", "/issues", "/stats/histogram", "/stats/top"):
                params = {name: value, "field": "level"}
                resp = server.get(base + path, project.read_token, **params)
                _refused(resp, 400, f"'{name}'")


def test_tampered_cursors_are_400_invalid_cursor(server: Server) -> None:
    project = server.project()
    base = f"/api/v1/projects/{project.id}"
    cursors = [
        _raw_cursor("[{},1]"),
        _raw_cursor(f"[{2**63},1]"),
        _raw_cursor(f"[1,{2**63}]"),
        _raw_cursor(f"[1,{-(2**63) - 1}]"),
        _raw_cursor("[1e300,1]"),
        _raw_cursor("[[1],1]"),
        _raw_cursor('["a",1]'),
        _raw_cursor("[1,[1]]"),
        _raw_cursor("[true,1]"),
        _raw_cursor("[1,null]"),
        _raw_cursor("[1]"),
        _raw_cursor("{}"),
        "not base64 at all!",
    ]
    for cursor in cursors:
        for path in ("/issues", "/events", "/issues?sort=count"):
            resp = server.get(base + path, project.read_token, cursor=cursor)
            _refused(resp, 400)
            assert resp.json()["error"]["code"] == "invalid_cursor", (path, cursor, resp.text)


def test_non_ascii_and_oversized_path_ids_are_4xx(server: Server) -> None:
    project = server.project()
    token = project.read_token
    for pid in ("²", "99999999999999999999", "9223372036854775808"):
        ingest = (f"/api/{pid}/store/", f"/api/{pid}/envelope/", f"/api/v1/projects/{pid}/events")
        for path in ingest:
            resp = httpx.post(server.url + path, content=b"{}", timeout=10)
            _refused(resp, 400)
            assert resp.json()["error"]["code"] == "invalid_project_id", (path, resp.text)
        _refused(server.get(f"/api/v1/projects/{pid}/issues", token))
    base = f"/api/v1/projects/{project.id}"
    for issue in ("99999999999999999999", "9223372036854775808", "²"):
        _refused(server.get(f"{base}/issues/{issue}", token))
        _refused(server.get(f"{base}/issues/{issue}/events", token))
    _refused(server.get(f"{base}/issues/9223372036854775807", token), 404)
