"""A real Prometheus (Debian's package) scrapes a running stacksift; its query API sees ingest."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import Server, free_port
from tests.test_ingest import auth, envelope, event


def test_prometheus_scrapes_the_ingest_counter(server: Server, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: scripts/test.sh installs it (apt)"
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: stacksift\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{server.port}']\n"
    )
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        p = server.project()
        for i in range(5):
            resp = httpx.post(f"{server.url}/api/{p.id}/envelope/",
                              content=envelope(event(f"scraped {'abcde'[i]}")),
                              headers=auth(p.ingest_key))
            assert resp.status_code == 200

        def accepted() -> float:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", timeout=2, params={
                    "query": f'stacksift_events_accepted_total{{project="{p.id}"}}'}).json()
            except (httpx.TransportError, ValueError):
                return 0.0
            result = body.get("data", {}).get("result", [])
            return float(result[0]["value"][1]) if result else 0.0

        deadline = time.time() + 60
        while accepted() < 5:
            assert time.time() < deadline, "Prometheus never saw the 5 accepted events"
            time.sleep(0.5)
        assert accepted() == 5
    finally:
        proc.terminate()
        proc.wait(timeout=20)
