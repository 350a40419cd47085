"""The counters file behind rate limits and quotas (app/shared_counters.py): what a stale,
foreign or full file does, and that a killed process leaves nothing locked.

The limits through a real server, one budget across its API processes, are in
tests/test_listen.py and tests/test_privacy_and_limits.py; these are the file's edges,
which a server would take a day or a crash to reach.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from app.shared_counters import SharedCounters


def test_a_refused_spend_gives_back_what_it_took(tmp_path: Path) -> None:
    counters = SharedCounters(tmp_path / "c")
    assert counters.spend([("key", 1, 60, 10), ("quota", 3, 3600, 4)]) is None
    # the quota has 1 left: refused at index 1, and the key's 1 is given back
    index, left = counters.spend([("key", 1, 60, 10), ("quota", 3, 3600, 4)])  # type: ignore[misc]
    assert index == 1 and 3590 < left <= 3600
    assert counters.spend([("key", 9, 60, 10), ("quota", 1, 3600, 4)]) is None
    refused = counters.spend([("key", 1, 60, 10)])
    assert refused is not None and refused[0] == 0


def test_another_process_spends_the_same_budget_and_it_survives_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c"
    assert SharedCounters(path).spend([("quota", 3, 3600, 5)]) is None
    spend = "from app.shared_counters import SharedCounters as S; import sys, pathlib; "
    spend += "print(S(pathlib.Path(sys.argv[1])).spend([('quota', 2, 3600, 5)]))"
    child = subprocess.run(
        [sys.executable, "-c", spend, str(path)], capture_output=True, text=True, timeout=60
    )
    assert child.stdout.strip() == "None", child.stderr
    refused = SharedCounters(path).spend([("quota", 1, 3600, 5)])  # a new run, same file
    assert refused is not None and refused[0] == 0


def test_a_window_ending_later_than_its_length_is_taken_as_expired(tmp_path: Path) -> None:
    """A clock set back, or a file from another clock: no counter holds its budget for
    longer than one window."""
    counters = SharedCounters(tmp_path / "c")
    assert counters.spend([("c", 5, 86400, 5)]) is None  # ends in a day
    assert counters.spend([("c", 5, 60, 5)]) is None  # a minute's window: ends too late


def test_a_foreign_file_is_cleared_and_a_short_one_grown(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\xff" * 1000)
    counters = SharedCounters(garbage, slots=1024)
    assert garbage.stat().st_size > 1000
    for i in range(1024 // 2):
        assert counters.spend([(f"n{i}", 1, 60, 1)]) is None  # nothing left of the 0xff


def test_a_full_table_keeps_counting_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "c"
    counters = SharedCounters(path, slots=64)
    size = path.stat().st_size
    for i in range(1000):
        assert counters.spend([(f"n{i}", 1, 60, 1)]) is None
    assert path.stat().st_size == size
    # the newest counters are there: the ones taken over are those that end first
    assert counters.spend([("n999", 1, 60, 1)]) is not None


def test_a_killed_process_leaves_the_file_unlocked(tmp_path: Path) -> None:
    path = tmp_path / "c"
    counters = SharedCounters(path)
    hold = "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); "
    hold += "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(600)"
    child = subprocess.Popen(
        [sys.executable, "-c", hold, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "locked\n"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
    assert counters.spend([("c", 1, 60, 1)]) is None  # would hang if still locked
