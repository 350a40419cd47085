"""/metrics moves as events flow, in one process and across uvicorn workers."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.conftest import Server
from tests.test_ingest import auth, envelope, event


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_follow_ingest_and_processing(server: Server) -> None:
    p = server.project()
    before = httpx.get(server.url + "/metrics").text
    for i in range(3):
        ev = event(f"metric {['a', 'b', 'c'][i]}")
        httpx.post(f"{server.url}/api/{p.id}/envelope/", content=envelope(ev),
                   headers=auth(p.ingest_key)).raise_for_status()
    httpx.post(f"{server.url}/api/{p.id}/envelope/", content=b"{}\n{\"type\":\"event\"}\n[",
               headers=auth(p.ingest_key))
    httpx.post(f"{server.url}/api/{p.id}/envelope/", content=b"{}\n")
    server.wait_events(p, 3)
    after = server.wait_for(lambda: (t := httpx.get(server.url + "/metrics").text)
                            and metric(t, "stacksift_events_processed_total",
                                       outcome="processed") >= 3 and t)
    project = str(p.id)
    assert metric(after, "stacksift_events_accepted_total", project=project) == 3
    assert metric(before, "stacksift_events_accepted_total", project=project) == 0
    assert metric(after, "stacksift_events_rejected_total", project=project,
                  reason="invalid_event") == 1
    assert metric(after, "stacksift_events_rejected_total", reason="unauthorized") == 1
    assert metric(after, "stacksift_issues_created_total", project=project) == 3
    assert metric(after, "stacksift_request_duration_seconds_count",
                  endpoint="/api/{project_id}/envelope/", status="200") == 3
    assert metric(after, "stacksift_queue_depth") == 0
    assert metric(after, "stacksift_storage_write_seconds_count", operation="enqueue") >= 1
    # labels stay bounded: no event ids anywhere in the exposition
    assert not re.search(r"[0-9a-f]{32}", after)


def test_serve_workers_ingest_in_api_processes_and_process_in_the_main_one(tmp_path: Path) -> None:
    """`serve --workers 2` (embedded): two API processes take events, the main process
    processes them (its own GIL), /metrics merges all three, SIGTERM stops them all."""
    srv = Server(tmp_path / "data", serve_args=["--workers", "2"])
    srv.data_dir.mkdir()
    srv.start()
    try:
        assert srv.proc is not None
        pid = srv.proc.pid
        children = [
            child
            for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
        ]
        assert len(children) == 2, children  # uvicorn's API processes
        p = srv.project()
        for i in range(20):  # a connection each: the kernel spreads them over both processes
            resp = httpx.post(
                f"{srv.url}/api/{p.id}/envelope/",
                content=envelope(event(f"multi {['alpha', 'beta', 'gamma'][i % 3]}")),
                headers=auth(p.ingest_key),
            )
            assert resp.status_code == 200, resp.text
        srv.wait_events(p, 20)
        text = httpx.get(srv.url + "/metrics").text
        assert metric(text, "stacksift_events_accepted_total", project=str(p.id)) == 20
        assert metric(text, "stacksift_events_processed_total", outcome="processed") == 20
        assert metric(text, "stacksift_issues_created_total", project=str(p.id)) == 3
    finally:
        srv.stop()
    for pid in children:
        assert not Path(f"/proc/{pid}").exists(), f"API process {pid} outlived the server"
