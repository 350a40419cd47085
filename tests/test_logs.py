"""Logs are JSON lines with request ids, and never carry keys, tokens or event payloads."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import httpx

from app import logs
from tests.conftest import ADMIN_TOKEN, BIN, Server, backend_server
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


def test_worker_and_server_logs_are_json_on_stderr_without_request_noise(tmp_path: Path) -> None:
    """`stacksift worker` logs (rq's own too) as the server does: JSON lines on stderr,
    nothing on stdout; the Elasticsearch client's line per request stays out at INFO."""
    with backend_server("distributed", tmp_path / "data") as srv:
        srv.auto_worker = False
        srv.start()
        out_path, err_path = srv.data_dir / "worker.out", srv.data_dir / "worker.err"
        try:
            p = srv.project()
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                proc = subprocess.Popen([str(BIN), "worker"], env=srv.env, stdout=out, stderr=err)
            srv.workers.append(proc)  # srv.stop() stops it
            assert httpx.post(f"{srv.url}/api/{p.id}/envelope/", content=envelope(event()),
                              headers=auth(p.ingest_key)).status_code == 200
            srv.wait_events(p, 1)
            srv.get(f"/api/v1/projects/{p.id}/issues", p.read_token)
        finally:
            srv.stop()

    assert out_path.read_text() == ""
    worker = records(err_path)
    loggers = {r["logger"] for r in worker}
    assert {"rq.worker"} <= loggers, loggers  # rq's "Worker started", "Job OK", ...
    assert any("Job OK" in r["message"] for r in worker if r["logger"] == "rq.worker")
    # server.log holds `serve`'s stdout too: the DSN it prints for a first project.
    server = records(srv.data_dir / "server.log", stdout_too=True)
    for r in worker + server:
        assert not (r["logger"].startswith("elastic_transport") and r["level"] == "info"), r


def records(path: Path, stdout_too: bool = False) -> list[dict[str, Any]]:
    """Every line of a log file as a JSON record (a line that is not one fails, but for
    what a command prints on stdout when the file has both)."""
    lines = path.read_text().splitlines()
    if stdout_too:
        lines = [line for line in lines if line.startswith("{")]
    assert lines, path
    out = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"{path.name}: not a JSON line: {line!r}") from None
        assert {"time", "level", "logger", "message"} <= record.keys(), line
        out.append(record)
    return out


def test_elasticsearch_requests_are_logged_only_at_debug() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        for level, expected in (("INFO", "WARNING"), ("ERROR", "ERROR"), ("DEBUG", "DEBUG")):
            logs.configure(level)
            got = logging.getLogger("elastic_transport.transport").getEffectiveLevel()
            assert logging.getLevelName(got) == expected, level
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.captureWarnings(False)
