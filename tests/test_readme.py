"""The README's first command, run literally as a new user runs it: a fresh clone, a fresh
venv with runtime dependencies only, `stacksift serve`; then the same from a wheel in an empty
working directory.  Each time a real sentry-sdk event goes to the printed DSN and is read back
with the printed read token, and `stacksift project create` prints a DSN that works too.

The clone is of HEAD plus the uncommitted changes to tracked files (``git stash create``), so
a developer tests what they are about to commit; CI's clean clone makes that HEAD.  pip may use
its wheel cache; nothing of the test's own venv is used by the server."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import stop_group

ROOT = Path(__file__).resolve().parents[1]
PORT = 8000  # the README's command takes serve's defaults
INSTALL_TIMEOUT_S = 600
SEND = """
import sys, sentry_sdk
sentry_sdk.init(dsn=sys.argv[1])
try:
    {}["readme"]
except KeyError:
    event_id = sentry_sdk.capture_exception()
sentry_sdk.flush(10)
print(event_id)
"""


def readme_command() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"Install and run the server.*?```sh\n(.*?)\n```", text, re.S)
    assert match, "README.md lost its 'Install and run the server' block"
    return match.group(1).strip()


def user_env() -> dict[str, str]:
    """The environment of a user's shell: none of stacksift's settings, not inside our venv."""
    venv_bin = str(Path(sys.executable).parent)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STACKSIFT_", "PYTEST", "VIRTUAL_ENV", "PYTHON"))
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p != venv_bin)
    return env


def fresh_clone(dest: Path) -> Path:
    def git(*args: str, cwd: Path = ROOT) -> str:
        return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                              text=True).stdout.strip()

    rev = git("stash", "create") or git("rev-parse", "HEAD")
    git("clone", "--quiet", "--shared", "--no-checkout", str(ROOT), str(dest))
    git("checkout", "--quiet", rev, cwd=dest)
    return dest


class Output:
    """A child's merged output, collected by a thread, searchable while it runs."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if self.proc.poll() is not None:
                self._thread.join(5)
                break
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r}; output:\n{''.join(self.lines)}")


@contextmanager
def started(command: list[str], cwd: Path) -> Iterator[Output]:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", PORT))
        except OSError:
            pytest.fail(f"port {PORT}, which the README's command serves on, is in use")
    proc = subprocess.Popen(command, cwd=cwd, env=user_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        yield Output(proc)
    finally:
        stop_group(proc)


def send_and_read_back(dsn: str, token: str) -> None:
    match = re.fullmatch(r"(https?)://\w+@([^/]+)/(\d+)", dsn)
    assert match, f"not a DSN: {dsn}"
    scheme, host, project_id = match.groups()
    sent = subprocess.run([sys.executable, "-c", SEND, dsn], capture_output=True, text=True,
                          timeout=60, check=True)
    event_id = sent.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", event_id), sent
    url = f"{scheme}://{host}/api/v1/projects/{project_id}/events/{event_id}"
    deadline = time.monotonic() + 30
    while True:
        resp = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        if resp.status_code == 200:
            break
        assert resp.status_code == 404, resp.text
        assert time.monotonic() < deadline, f"event {event_id} not readable after 30 s"
        time.sleep(0.2)
    assert resp.json()["exception"]["values"][-1]["type"] == "KeyError"


def wait_healthy(url: str) -> None:
    """The API processes start after the banner; an SDK would drop an event sent before."""
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url}/healthz did not answer 200 in 60 s"
        time.sleep(0.2)


def check_first_start(out: Output, stacksift: Path, cwd: Path) -> None:
    """The printed DSN and read token work; so does a `project create` DSN."""
    dsn = out.wait_for(r"DSN \(point any Sentry SDK here\): (\S+)", INSTALL_TIMEOUT_S)[1]
    token = out.wait_for(r"read token \(Authorization: Bearer \.\.\.\): (\S+)", 30)[1]
    data_dir = out.wait_for(r"listening on \S+ \(data in (.+)\)", 30)[1]
    assert Path(data_dir) == cwd / "stacksift-data"
    assert Path(data_dir).stat().st_mode & 0o777 == 0o700
    assert f"127.0.0.1:{PORT}/" in dsn
    wait_healthy(f"http://127.0.0.1:{PORT}")
    send_and_read_back(dsn, token)

    created = subprocess.run([str(stacksift), "project", "create", "myapp"], cwd=cwd,
                             env=user_env(), capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    fields = dict(re.findall(r"^(\w+):\s+(\S+)$", created.stdout, re.M))
    send_and_read_back(fields["dsn"], fields["read_token"])


def test_readme_first_command_from_a_fresh_clone(tmp_path: Path) -> None:
    clone = fresh_clone(tmp_path / "stacksift")
    with started(["bash", "-c", readme_command()], cwd=clone) as out:
        check_first_start(out, clone / ".venv" / "bin" / "stacksift", clone)


def test_wheel_install_serves_from_an_empty_directory(tmp_path: Path) -> None:
    clone = fresh_clone(tmp_path / "stacksift")
    venv = tmp_path / "venv"
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True, env=user_env(), timeout=120)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(clone)],
                               env=user_env(), capture_output=True, text=True,
                               timeout=INSTALL_TIMEOUT_S)
    assert installed.returncode == 0, installed.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import app; print(app.__file__)"],
                           cwd=empty, env=user_env(), capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(venv), "not installed as a wheel"
    stacksift = venv / "bin" / "stacksift"
    with started([str(stacksift), "serve"], cwd=empty) as out:
        check_first_start(out, stacksift, empty)
