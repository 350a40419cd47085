"""Real official SDKs against a real server: events arrive, group into issues, and read back."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Project, Server

SDK_DIR = Path(__file__).parent / "sdk"


def send_python(dsn: str, repeat: int, *extra: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(SDK_DIR / "python_send.py"), dsn, str(repeat), *extra],
        capture_output=True, text=True, timeout=120, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def send_node(dsn: str, repeat: int) -> dict:
    node_dir = SDK_DIR / "node"
    if not (node_dir / "node_modules" / "@sentry" / "node").exists():
        subprocess.run(["bash", str(Path(__file__).parents[1] / "scripts" / "install_node_sdk.sh")],
                       check=True, timeout=300)
    out = subprocess.run(
        [shutil.which("node") or "node", str(node_dir / "send.js"), dsn, str(repeat)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def issues_by_type(server: Server, project: Project) -> dict[str, dict]:
    body = server.get(f"/api/v1/projects/{project.id}/issues", project.read_token,
                      limit=100).json()
    return {issue["title"].split(":")[0]: issue for issue in body["data"]}


def check_grouping(server: Server, project: Project, sent: dict, event_ids: list[str]) -> None:
    sent = dict(sent)
    events = server.wait_events(project, len(event_ids))
    assert sorted(e["event_id"] for e in events) == sorted(event_ids)
    issues = issues_by_type(server, project)
    if "message" in sent:  # capture_message: the issue is titled by the message itself
        sent["order 123 failed"] = sent.pop("message")
    for exc_type, count in sent.items():
        assert exc_type in issues, f"no issue for {exc_type}: {list(issues)}"
        assert issues[exc_type]["count"] == count
        assert issues[exc_type]["status"] == "unresolved"
    # one issue per distinct error, however often it was raised
    assert len(issues) == len(sent)


@pytest.mark.parametrize("compression", ["br", "gzip"])
def test_python_sdk_groups_repeated_exceptions(server: Server, compression: str) -> None:
    project = server.project()
    result = send_python(project.dsn, 4, *(["--gzip"] if compression == "gzip" else []))
    check_grouping(server, project, result["sent"], result["event_ids"])

    issues = issues_by_type(server, project)
    issue = issues["ZeroDivisionError"]
    events = server.get(f"/api/v1/projects/{project.id}/issues/{issue['id']}/events",
                        project.read_token).json()["data"]
    assert len(events) == 4
    event = server.get(f"/api/v1/projects/{project.id}/events/{events[0]['event_id']}",
                       project.read_token).json()
    frames = event["exception"]["values"][-1]["stacktrace"]["frames"]
    assert any(f.get("in_app") and f.get("function") for f in frames)
    assert frames[-1]["filename"].endswith("python_send.py")
    assert event["sdk"]["name"].startswith("sentry.python")
    assert event["ingest"]["client_ip"] == "127.0.0.1"
    assert issue["culprit"]


def test_node_sdk_groups_repeated_exceptions(server: Server) -> None:
    project = server.project()
    result = send_node(project.dsn, 3)
    check_grouping(server, project, result["sent"], result["event_ids"])
    event = server.all_events(project)[0]
    assert event["platform"] == "node"
    assert event["exception"]["values"][-1]["stacktrace"]["frames"]
    assert event["sdk"]["name"].startswith("sentry.javascript.node")
