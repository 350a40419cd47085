"""/metrics moves as events flow, in one process and across uvicorn workers."""

from __future__ import annotations

import re

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
