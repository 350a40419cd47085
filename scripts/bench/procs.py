"""CPU time and memory of process trees (read from /proc), and servers started as children.

A stacksift deployment is several processes: `stacksift serve --workers N` is a
supervisor plus N uvicorn workers (and a multiprocessing resource tracker), and
distributed mode adds `stacksift worker` processes. A figure taken from one pid
misses most of the work, so everything here works on the whole tree below a pid.
Linux only: the benchmarks run on the Linux box the figures are for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .wrk_runner import BenchError

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    # utime + stime + cutime + cstime: a child that exited and was waited for has
    # its time folded into its parent's cutime/cstime, so a tree's sum only grows.
    cpu_s: float
    rss_bytes: int
    started: int  # clock ticks after boot: tells a reused pid from the process we saw


def stat(pid: int) -> ProcStat | None:
    """None when the process is gone (or not readable)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and ')': split after its last ')'.
    fields = text.rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ProcStat(
        pid, int(fields[1]), ticks / CLOCK_TICKS, int(fields[21]) * PAGE_BYTES, int(fields[19])
    )


def children_by_parent() -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            info = stat(int(entry.name))
            if info is not None:
                found.setdefault(info.ppid, []).append(info.pid)
    return found


def tree(root: int) -> list[int]:
    """``root`` and all its descendants alive now, root first (empty if root is gone)."""
    if stat(root) is None:
        return []
    children = children_by_parent()
    pids, i = [root], 0
    while i < len(pids):
        pids.extend(children.get(pids[i], []))
        i += 1
    return pids


def tree_stats(root: int) -> list[ProcStat]:
    return [s for s in (stat(pid) for pid in tree(root)) if s is not None]


def tree_cpu(root: int) -> float:
    return sum(s.cpu_s for s in tree_stats(root))


def connections(pids: list[int], port: int) -> dict[int, int]:
    """Established TCP connections to local ``port`` held by each of ``pids``: how the
    kernel spread the load generator's keep-alive connections over the API processes."""
    established: set[str] = set()  # socket inodes
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    established.add(fields[9])
    counts: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            links = (os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
            counts[pid] = sum(1 for link in links if link[8:-1] in established)
    return counts


def command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def role(pid: int) -> str:
    """A short name for a process of a tree, for reports."""
    cmd = command_line(pid)
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/comm").read_text().strip() == "stacksift-prep":
            return "prepare process"  # app.prepare_pool: serve --workers N, embedded
    if "multiprocessing.spawn" in cmd or "multiprocessing-fork" in cmd:
        return "uvicorn worker"
    if "resource_tracker" in cmd:
        return "resource tracker"
    for word in ("serve", "worker"):
        if f"stacksift {word}" in cmd:
            return f"stacksift {word}"
    if "uvicorn" in cmd or "bare_serve.py" in cmd:
        return "uvicorn"
    return Path(cmd.split(" ", 1)[0]).name or f"pid {pid}"


SERVICES_DIR = Path(
    os.environ.get("STACKSIFT_SERVICES_DIR", Path.home() / ".cache" / "stacksift-services")
)
# (pid file written by scripts/services.sh, what its command line contains otherwise)
SERVICES = {
    "redis": (SERVICES_DIR / "redis" / "redis.pid", "redis-server"),
    "elasticsearch": (SERVICES_DIR / "es" / "es.pid", "org.elasticsearch.bootstrap"),
}


def service_pid(name: str) -> int | None:
    """The pid of Redis or Elasticsearch as started by scripts/services.sh, if found."""
    pid_file, marker = SERVICES[name]
    try:
        pid = int(pid_file.read_text().split()[0])
        if marker in command_line(pid):
            return pid
    except (OSError, ValueError, IndexError):
        pass
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and marker in command_line(int(entry.name)):
            return int(entry.name)
    return None


def http_ok(url: str, data: bytes | None = None) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=2) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


class Child:
    """A server this script started: waits until it answers, stops its whole tree."""

    def __init__(
        self,
        name: str,
        command: list[str],
        *,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self._log: IO[bytes] | None = log.open("ab") if log else None
        out = self._log  # None: the child shares this script's stdout/stderr
        self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=out, cwd=cwd)
        self.pid = self.proc.pid
        self._below: list[ProcStat] = []
        self._signalled = False

    def wait_until(self, ready: Callable[[], bool], timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with code {self.proc.returncode}")
            if ready():
                return
            time.sleep(0.1)
        raise BenchError(f"{self.name} was not ready within {timeout_s:g}s")

    def terminate(self) -> None:
        """Ask to stop (SIGTERM: a server finishes the batch in hand) without waiting."""
        if self.proc.poll() is None and not self._signalled:
            # Once only: a second SIGTERM makes an RQ worker abandon its batch.
            self._signalled = True
            self._below = tree_stats(self.pid)[1:]
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM, wait, then SIGKILL what is left of the tree: only processes that
        were below this child when it was asked to stop."""
        self.terminate()
        below = self._below
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for seen in below:
            now = stat(seen.pid)
            if now is not None and now.started == seen.started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(seen.pid, signal.SIGKILL)
        if self._log:
            self._log.close()
            self._log = None
