"""A real stacksift server in a subprocess, on a free port, with its own data dir."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

BIN = Path(sys.executable).parent / "stacksift"
ADMIN_TOKEN = "test-admin-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Project:
    id: int
    dsn: str
    ingest_key: str
    read_token: str


@dataclass
class Server:
    data_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STACKSIFT_")}
        env.update(
            STACKSIFT_DATA_DIR=str(self.data_dir),
            STACKSIFT_ADMIN_TOKEN=ADMIN_TOKEN,
            STACKSIFT_BASE_URL=self.url,
            **self.extra_env,
        )
        return env

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN), *args], env=self.env, capture_output=True, text=True,
                              check=check, timeout=60)

    def start(self) -> None:
        log = open(self.data_dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--port", str(self.port)], env=self.env, stdout=log, stderr=log
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.data_dir / 'server.log').read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("server did not start in 30 s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def project(self, name: str = "app") -> Project:
        out = json.loads(self.cli("project", "create", name, "--json").stdout)
        return Project(out["id"], out["dsn"], out["ingest_key"], out["read_token"])

    def get(self, path: str, token: str, **params: Any) -> httpx.Response:
        return httpx.get(self.url + path, params=params,
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
        deadline = time.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.time() > deadline:
                raise AssertionError(f"condition not met in {timeout} s")
            time.sleep(0.1)

    def all_events(self, project: Project, path: str | None = None) -> list[dict[str, Any]]:
        path = path or f"/api/v1/projects/{project.id}/events"
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            body = self.get(path, project.read_token, **params).json()
            out.extend(body["data"])
            cursor = body["next_cursor"]
            if not cursor:
                return out

    def wait_events(self, project: Project, count: int, timeout: float = 30.0) -> list[dict]:
        return self.wait_for(
            lambda: (evs := self.all_events(project)) and len(evs) >= count and evs, timeout
        )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data")
    srv.data_dir.mkdir()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
