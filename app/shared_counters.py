"""Fixed-window counters that every process of one data directory spends together.

``stacksift serve --workers N`` runs N API processes (spawned, not forked: uvicorn
starts its workers that way, so nothing created in the supervisor is inherited but
the environment).  A budget counted in each process's memory would allow N times
the limit, so the counters live in a memory-mapped file in the data directory:
an open-addressing table of fixed-size slots, spent under an exclusive ``flock``
that the kernel releases when its holder dies, so a killed process cannot leave
the table locked.  The lock is held for the few slot reads and writes of one
request, never across I/O.

Window ends are wall-clock times, so the file means the same after a restart or a
reboot: what a crashed run spent still counts until its window ends, as it would
in Redis.  An end further away than its window (the clock was set back, or the
file is stale from another clock) is taken as expired, so no counter can hold a
budget for longer than one window.  A file of another layout is cleared on open.

Memory is bounded: the table has ``SLOTS`` slots; a new counter takes an expired
slot among the few it probes, or else the one whose window ends first (in a table
that full, that forgets a live counter: it allows more, never less).
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import threading
import time
from collections.abc import Sequence
from pathlib import Path

MAGIC = b"sscount1"
SLOTS = 1 << 17  # counters held at once: at most this many keys x windows
PROBE = 8  # slots looked at per counter before taking the one that ends first
_HEADER = struct.Struct("<8sQ")  # magic, slots
_SLOT = struct.Struct("<Qdq")  # name hash (0: free), window end (time.time()), spent
_NAMES_MAX = 10_000  # name hashes remembered per process

# A counter to spend: name, cost, window in seconds, limit.
Spend = tuple[str, int, int, int]


class SharedCounters:
    """The table in ``path``, opened (and created or cleared if need be) by each process."""

    def __init__(self, path: Path, slots: int = SLOTS) -> None:
        if slots & (slots - 1):
            raise ValueError("slots must be a power of two")
        self._slots = slots
        self._size = _HEADER.size + slots * _SLOT.size
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        # flock excludes other processes, not other threads of this one (same open file).
        self._thread_lock = threading.Lock()
        self._hashes: dict[str, int] = {}
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # against another process clearing it too
        try:
            had = os.fstat(self._fd).st_size
            if had < self._size:
                # Grow only (shrinking would fault others' mappings), with the blocks
                # reserved: writing to a hole of a mapped file on a full disk is a SIGBUS,
                # which would kill the API process; this fails at start instead.
                os.posix_fallocate(self._fd, 0, self._size)
            self._map = mmap.mmap(self._fd, self._size)
            if _HEADER.unpack_from(self._map, 0) != (MAGIC, slots):
                if had:  # another layout, or not ours: no slot of it means anything here
                    self._map[:] = bytes(self._size)
                _HEADER.pack_into(self._map, 0, MAGIC, slots)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _hash(self, name: str) -> int:
        """64 bits of blake2b: the same in every process (``hash()`` is salted per process)."""
        value = self._hashes.get(name)
        if value is None:
            digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
            value = int.from_bytes(digest, "little") or 1  # 0 marks a free slot
            if len(self._hashes) >= _NAMES_MAX:
                self._hashes.clear()
            self._hashes[name] = value
        return value

    def spend(self, counters: Sequence[Spend]) -> tuple[int, float] | None:
        """Spend the counters in order; at the first one past its limit, give back what
        this call spent and return (its index, seconds until its window ends).

        A window starts with the first spend of its counter."""
        hashes = [self._hash(name) for name, _, _, _ in counters]
        slot, table = _SLOT, self._map
        spent: list[tuple[int, int]] = []  # slot offset, cost
        with self._thread_lock:  # not a context manager of our own: this runs per request
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                now = time.time()
                for i, (_, cost, window, limit) in enumerate(counters):
                    h = hashes[i]
                    offset, end, used = self._find(h, now)
                    if not now < end <= now + window:  # expired, new, or from another clock
                        end, used = now + window, 0
                    if used + cost > limit:
                        for spent_offset, spent_cost in spent:
                            h, end_, used_ = slot.unpack_from(table, spent_offset)
                            slot.pack_into(table, spent_offset, h, end_, used_ - spent_cost)
                        return i, end - now
                    slot.pack_into(table, offset, h, end, used + cost)
                    spent.append((offset, cost))
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        return None

    def _find(self, h: int, now: float) -> tuple[int, float, int]:
        """(offset, window end, spent) of the counter's slot; a slot to take (end 0.0)
        if it has none."""
        mask = self._slots - 1
        index = h & mask
        take, take_end = _HEADER.size + index * _SLOT.size, float("inf")
        for _ in range(PROBE):
            offset = _HEADER.size + index * _SLOT.size
            slot_hash, end, used = _SLOT.unpack_from(self._map, offset)
            if slot_hash == h:
                return offset, end, used
            if slot_hash == 0:  # never used: the counter is not further on
                return (take if take_end <= now else offset), 0.0, 0
            if end < take_end:  # an expired one if any, else the one that ends first
                take, take_end = offset, end
            index = (index + 1) & mask
        return take, 0.0, 0
