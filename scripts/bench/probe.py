"""Freshness: how long after its 200 an event can be found with the read API.

While the load runs, a sender thread posts a small, uniquely tagged event every
``interval`` seconds and a poller thread looks each one up by id until
each probe shows up. Probes travel the same queue as the load, so a backlog
shows up as staleness. Each poll reads the oldest outstanding probe by id (and
the next ones while found), so the cost on the server does not grow with the backlog.

Resolution: a probe counts as found at the midpoint of the read that found it,
so figures are within about half a poll interval plus one read.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0-100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


@dataclass
class Probe:
    event_id: str
    phase: str
    sent: float
    accepted: float | None = None  # wall clock at the 200
    found: float | None = None


@dataclass
class Phase:
    probes: dict[str, Probe] = field(default_factory=dict)
    send_errors: int = 0


class FreshnessProbe:
    def __init__(
        self,
        base_url: str,
        project_id: int,
        ingest_key: str,
        read_token: str,
        *,
        interval_s: float = 0.2,
        poll_s: float = 0.05,
    ) -> None:
        self.interval_s = interval_s
        self.poll_s = poll_s
        self.tag = f"p{secrets.token_hex(6)}"
        self._ingest_url = f"{base_url}/api/v1/projects/{project_id}/events"
        self._event_url = f"{base_url}/api/v1/projects/{project_id}/events"
        self._ingest_headers = {"Authorization": f"Bearer {ingest_key}"}
        self._read_headers = {"Authorization": f"Bearer {read_token}"}
        self._phases: dict[str, Phase] = {}
        self._sending: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.poll_errors = 0
        self._threads = [
            threading.Thread(target=self._send_loop, name="probe-send", daemon=True),
            threading.Thread(target=self._poll_loop, name="probe-poll", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- control ------------------------------------------------------------------------

    def begin(self, phase: str) -> None:
        """Start sending probes that count for ``phase``."""
        with self._lock:
            self._phases.setdefault(phase, Phase())
            self._sending = phase

    def end(self) -> None:
        """Stop sending; the probes already sent are still looked for."""
        with self._lock:
            self._sending = None

    def wait_found(self, phase: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._outstanding(phase):
                return True
            time.sleep(self.poll_s)
        return not self._outstanding(phase)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def result(self, phase: str) -> dict[str, Any]:
        with self._lock:
            state = self._phases.get(phase, Phase())
            probes = list(state.probes.values())
            errors = state.send_errors
        delays = [(p.found - p.accepted) * 1000 for p in probes if p.found and p.accepted]
        accepted = sum(1 for p in probes if p.accepted)

        def ms(q: float) -> float | None:
            value = percentile(delays, q)
            return None if value is None else round(value, 1)

        return {
            "probes": accepted,
            "found": len(delays),
            "not_found": accepted - len(delays),
            "send_errors": errors,
            "p50_ms": ms(50),
            "p99_ms": ms(99),
            "max_ms": ms(100),
        }

    # -- threads ------------------------------------------------------------------------

    def _outstanding(self, phase: str | None = None) -> list[Probe]:
        with self._lock:
            phases = [self._phases[phase]] if phase in self._phases else []
            if phase is None:
                phases = list(self._phases.values())
            return [p for s in phases for p in s.probes.values() if p.accepted and not p.found]

    def _send_loop(self) -> None:
        with httpx.Client(timeout=30) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                next_at += self.interval_s
                phase = self._sending
                if phase is not None:
                    self._send_one(client, phase)
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _send_one(self, client: httpx.Client, phase: str) -> None:
        event_id = secrets.token_hex(16)
        now = time.time()
        probe = Probe(event_id, phase, now)
        event = {
            "event_id": event_id,
            "timestamp": now,
            "level": "error",
            "platform": "python",
            "message": f"freshness probe {event_id}",
            "tags": {"bench_probe": self.tag},
        }
        try:
            resp = client.post(self._ingest_url, json=event, headers=self._ingest_headers)
            ok = resp.status_code == 200
        except httpx.HTTPError:
            ok = False
        with self._lock:
            state = self._phases[phase]
            if ok:
                probe.accepted = time.time()
                state.probes[event_id] = probe
            else:
                state.send_errors += 1

    def _poll_loop(self) -> None:
        """Look the oldest outstanding probe up by id (a primary-key read), then the
        next ones while they are found: processing is first in, first out, so one
        cheap request per poll tells whether the queue has moved.  (A tag search per
        poll scanned every event of the range and ate a core at 20 polls/s.)"""
        with httpx.Client(timeout=30) as client:
            while not self._stop.wait(self.poll_s):
                for probe in sorted(self._outstanding(), key=lambda p: p.sent):
                    t0 = time.time()
                    try:
                        resp = client.get(
                            f"{self._event_url}/{probe.event_id}", headers=self._read_headers
                        )
                    except httpx.HTTPError:
                        self.poll_errors += 1
                        break
                    if resp.status_code != 200:
                        if resp.status_code != 404:
                            self.poll_errors += 1
                        break
                    with self._lock:
                        probe.found = (t0 + time.time()) / 2
