"""Alerts: notification latency under load, and what 100 rules cost the worker.

Usage: python scripts/bench_alerts.py [--rate 500] [--probes 100] [--skip-latency]

1. latency: a real ``stacksift serve`` with one every_event rule (throttle 0s)
   posting to a local webhook; a background thread sends ``--rate`` events/s
   that do not match, while probe events that do match are sent one at a time.
   Latency = webhook receipt - the moment the probe's ``200`` came back.
2. cost: in process, the same 5000 events through ``process_batch`` plus
   ``AlertEngine.evaluate`` with no rules and with 100 rules of the project
   (mixed queries and triggers, none with a throttle that hides the matching).
Prints each figure and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.alerts.engine import AlertEngine  # noqa: E402
from app.alerts.state import MemoryState  # noqa: E402
from app.pipeline import Preparer, process_batch  # noqa: E402
from app.storage.sqlite import SqliteStore  # noqa: E402
from app.storage.sqlite_alerts import AlertStore  # noqa: E402
from tests.conftest import ADMIN_TOKEN, Server  # noqa: E402
from tests.test_alerts import HttpSink  # noqa: E402

KINDS = ["KeyError", "ValueError", "TimeoutError", "CardDeclined", "DbLocked", "Http502"]


def event(exc_type: str, i: int) -> dict:
    frames = [
        {"function": f"f{j}", "module": f"shop.mod{j}", "lineno": j, "in_app": j % 2 == 0}
        for j in range(8)
    ]
    return {
        "event_id": uuid.uuid4().hex,
        "level": ["error", "warning", "fatal"][i % 3],
        "environment": ["production", "staging"][i % 2],
        "release": f"shop@1.{i % 5}",
        "tags": {"region": ["eu", "us"][i % 2]},
        "exception": {
            "values": [
                {"type": exc_type, "value": f"bad thing {i % 50}", "stacktrace": {"frames": frames}}
            ]
        },
    }


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def latency(rate: int, probes: int) -> dict[str, float]:
    sink = HttpSink()
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(Path(tmp) / "data")
        srv.data_dir.mkdir()
        srv.start()
        try:
            p = srv.project("bench")
            rule = {
                "name": "probe",
                "query": "exception.type:Probe environment:production",
                "trigger": "every_event",
                "throttle": "0s",
                "channels": [{"type": "webhook", "url": sink.url + "/hook", "secret": "s"}],
            }
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            url = f"{srv.url}/api/v1/projects/{p.id}/alert-rules"
            assert httpx.post(url, json=rule, headers=headers).status_code == 201
            ingest = f"{srv.url}/api/v1/projects/{p.id}/events"
            auth = {"Authorization": f"Bearer {p.ingest_key}"}
            stop = threading.Event()
            sent = [0]

            def background() -> None:
                with httpx.Client(headers=auth, timeout=10) as client:
                    tick, per_tick, i = 0.1, max(1, rate // 10), 0
                    next_at = time.monotonic()
                    while not stop.is_set():
                        batch = [event(KINDS[(i + k) % len(KINDS)], i + k) for k in range(per_tick)]
                        client.post(ingest, content=orjson.dumps({"events": batch}))
                        i += per_tick
                        sent[0] += per_tick
                        next_at += tick
                        time.sleep(max(0.0, next_at - time.monotonic()))

            bg = threading.Thread(target=background, daemon=True)
            bg.start()
            time.sleep(2.0)
            samples: list[float] = []
            with httpx.Client(headers=auth, timeout=10) as client:
                for n in range(probes):
                    ev = event("Probe", n)
                    ev["environment"] = "production"
                    before = len(sink.on("/hook"))
                    resp = client.post(ingest, content=orjson.dumps(ev))
                    accepted = time.time()
                    assert resp.status_code == 200, resp.text
                    deadline = time.time() + 10
                    while len(sink.on("/hook")) == before and time.time() < deadline:
                        time.sleep(0.001)
                    hits = sink.on("/hook")
                    if len(hits) > before:
                        samples.append(hits[-1].at - accepted)
                    time.sleep(0.05)
            stop.set()
            bg.join()
            elapsed_rate = sent[0]
        finally:
            srv.stop()
            sink.close()
    out = {
        "background_events": float(elapsed_rate),
        "probes": float(len(samples)),
        "p50_ms": pct(samples, 50) * 1000,
        "p99_ms": pct(samples, 99) * 1000,
        "max_ms": max(samples) * 1000,
        "mean_ms": statistics.mean(samples) * 1000,
    }
    print(
        f"latency under {rate} ev/s: p50 {out['p50_ms']:.1f} ms, p99 {out['p99_ms']:.1f} ms, "
        f"max {out['max_ms']:.1f} ms over {len(samples)} probes"
    )
    return out


def rules(n: int) -> list[dict]:
    queries = [
        "environment:production level:>=error",
        "exception.type:KeyError",
        'exception.value:"bad thing 7"',
        "frame.function:f4 release:shop@1.*",
        "tags.region:eu -level:warning",
        "timeout OR declined",
        "(environment:staging AND level:fatal) OR exception.type:Http502",
        "frame.module:shop.mod3 user.id:nobody",
    ]
    triggers = ["every_event", "new_issue", "regression", "frequency"]
    out = []
    for i in range(n):
        trigger = triggers[i % 4]
        out.append(
            {
                "name": f"r{i}",
                # Distinct queries (no two rules share a match): the costly case.
                "query": f"{queries[i % len(queries)]} -tags.rule:r{i}",
                "trigger": trigger,
                "threshold": 100 if trigger == "frequency" else None,
                "window": "5m" if trigger == "frequency" else None,
                "throttle": "30m",
                "channels": [{"type": "webhook", "url": "http://127.0.0.1:9/x"}],
                "enabled": True,
            }
        )
    return out


def cost(n_rules: int, events: int = 5000, batch: int = 500) -> dict[str, float]:
    """Per-event microseconds of processing and of evaluating ``n_rules`` rules."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "s.db")
        store.setup()
        pid = store.create_project("bench")
        alerts = AlertStore(store)
        for r in rules(n_rules):
            alerts.create_rule(pid, r)
        engine = AlertEngine(alerts, MemoryState())
        rows = [
            (pid, time.time(), orjson.dumps(event(KINDS[i % len(KINDS)], i)), b"{}")
            for i in range(events)
        ]
        store.enqueue(rows, {})
        prepare = Preparer()
        processing = evaluating = 0.0
        notes = 0
        while taken := store.take_inbox(batch):
            t0 = time.perf_counter()
            updates = process_batch(store, taken, prepare)
            t1 = time.perf_counter()
            notes += len(engine.evaluate(updates))
            evaluating += time.perf_counter() - t1
            processing += t1 - t0
    out = {
        "rules": float(n_rules),
        "process_us_per_event": processing / events * 1e6,
        "evaluate_us_per_event": evaluating / events * 1e6,
        "notifications": float(notes),
    }
    print(
        f"{n_rules:3d} rules: processing {out['process_us_per_event']:.1f} us/event, "
        f"alert evaluation {out['evaluate_us_per_event']:.1f} us/event "
        f"({out['evaluate_us_per_event'] / out['process_us_per_event'] * 100:.1f}% of "
        f"processing), {notes} notifications"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--probes", type=int, default=100)
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()
    result: dict[str, object] = {
        "cost_0_rules": cost(0),
        "cost_100_rules": cost(100),
    }
    if not args.skip_latency:
        result["latency"] = latency(args.rate, args.probes)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
