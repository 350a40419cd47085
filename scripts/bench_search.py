"""Search benchmark (issue 4): query latency and storage throughput of the embedded store.

Usage:
  python scripts/bench_search.py --events 100000,1000000 [--runs 30] [--data-dir DIR]
      [--reuse] [--write-doc docs/benchmarks.md] [--json out.json] [--baseline before.json]

For each size N it fills a fresh SQLite store with N processed events spread
over the last 14 days, inserted in roughly arrival order through the real
storage path (``SqliteStore.commit_processed``: grouping, events row, FTS row)
in batches of --batch.  The events are a few hundred real sentry-sdk events
(the bench_ingest shop) plus hand-built Java and JavaScript events, each run
once through ``normalize_event`` and ``group``; the N stored events are copies
with a fresh event id, timestamp, user, tags, release, environment and the
numbers in their messages changed.

Then every query type runs --runs times (after 2 warm-up runs) through the code
the read API runs (``search.build`` and the store methods), and p50/p95 are
printed.  Last, batches are stored in rotation with the full ``insert_event``,
without the full-text row, and with the events row alone (``insert_event``
swapped for copies, in this script only) to compare storage throughput at size
N; those events are deleted again so --reuse can measure the same store twice.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import search  # noqa: E402
from app.grouping import group  # noqa: E402
from app.normalize import normalize_event  # noqa: E402
from app.pipeline import user_key  # noqa: E402
from app.storage import sqlite as storage  # noqa: E402
from app.storage.models import ProcessedEvent  # noqa: E402
from app.storage.sqlite import SqliteStore  # noqa: E402

DAY = 86400.0
SPAN = 14 * DAY
PROJECT = "bench"
# Issues per template: fingerprints get a variant suffix so a store has ~1-2k issues.
VARIANTS = 4

ENVIRONMENTS = ["production"] * 6 + ["staging"] * 3 + ["development"]
RELEASES = [f"shop@4.{minor}.{patch}" for minor in range(10, 15) for patch in range(4)]
BROWSERS = [
    "Chrome 124", "Chrome 123", "Chrome 122", "Firefox 125", "Firefox 124", "Safari 17.4",
    "Safari 16.6", "Edge 124", "Mobile Safari 17.4", "Chrome Mobile 124", "Opera 109",
    "Samsung Internet 24",
]  # fmt: skip
OSES = ["Windows 10", "Windows 11", "macOS 14.4", "Linux", "Android 14", "iOS 17.4"]
REGIONS = ["eu-west-1", "us-east-1", "us-west-2", "ap-southeast-1"]

JAVA_TYPES = [
    ("java.lang", "NullPointerException", 'Cannot invoke "com.acme.model.Order.getTotal()" '
     'because "order" is null'),
    ("java.lang", "NullPointerException", "Cannot read field \"id\" because \"user\" is null"),
    ("java.lang", "IllegalStateException", "Order 81723 is already closed"),
    ("java.lang", "IllegalArgumentException", "quantity must be positive, got -3"),
    ("java.lang", "ArrayIndexOutOfBoundsException", "Index 12 out of bounds for length 12"),
    ("java.util", "ConcurrentModificationException", "list modified during iteration"),
    ("java.lang", "NumberFormatException", 'For input string: "12a4"'),
    ("java.net", "SocketTimeoutException", "Read timed out after 30000 ms"),
    ("java.sql", "SQLException", "Deadlock found when trying to get lock; try restarting"),
    ("java.lang", "ClassCastException", "class java.lang.String cannot be cast to "
     "class java.lang.Integer"),
]  # fmt: skip
JAVA_FRAMES = [
    ("com.acme.api.OrderController", "handleRequest", "OrderController.java"),
    ("com.acme.api.CartController", "addItem", "CartController.java"),
    ("com.acme.service.PaymentService", "chargeCard", "PaymentService.java"),
    ("com.acme.service.InventoryService", "reserveStock", "InventoryService.java"),
    ("com.acme.repo.OrderRepository", "findByCustomerId", "OrderRepository.java"),
    ("com.acme.util.PriceCalculator", "computeTotal", "PriceCalculator.java"),
    ("org.springframework.web.servlet.DispatcherServlet", "doDispatch", "DispatcherServlet.java"),
    ("org.apache.catalina.core.ApplicationFilterChain", "doFilter", "ApplicationFilterChain.java"),
]
JS_ERRORS = [
    ("TypeError", "Cannot read properties of undefined (reading 'id')"),
    ("TypeError", "t.items is not iterable"),
    ("ReferenceError", "checkoutConfig is not defined"),
    ("SyntaxError", "Unexpected token '<', \"<!DOCTYPE \"... is not valid JSON"),
    ("ChunkLoadError", "Loading chunk 742 failed."),
    ("Error", "Request failed with status code 502"),
]
JS_FRAMES = [
    ("handleClick", "webpack:///./src/components/CheckoutButton.tsx"),
    ("submitOrder", "webpack:///./src/api/orders.ts"),
    ("renderCart", "webpack:///./src/pages/Cart.tsx"),
    ("useCartItems", "webpack:///./src/hooks/useCartItems.ts"),
    ("dispatchAction", "webpack:///./node_modules/redux/es/redux.js"),
    ("invokeGuardedCallback", "webpack:///./node_modules/react-dom/cjs/react-dom.js"),
]


# -- event generation ---------------------------------------------------------------


def python_events(count: int) -> list[dict[str, Any]]:
    """Real sentry-sdk events from the ingest benchmark's shop."""
    from bench.events import generate_envelopes

    raws = []
    for envelope in generate_envelopes(count, "http://publickey@127.0.0.1:9/1"):
        lines = envelope.split(b"\n")
        for header, payload in zip(lines[1::2], lines[2::2], strict=False):
            if orjson.loads(header).get("type") == "event":
                raws.append(orjson.loads(payload))
    return raws


def _base(rng: random.Random, platform_name: str) -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex,
        "timestamp": time.time(),
        "platform": platform_name,
        "level": rng.choice(["error"] * 6 + ["fatal", "warning"]),
        "server_name": f"api-{rng.randint(1, 20)}",
        "release": RELEASES[0],
        "environment": "production",
        "tags": {"region": rng.choice(REGIONS)},
        "contexts": {"runtime": {"name": "OpenJDK", "version": "21.0.2"}},
    }


def java_event(rng: random.Random) -> dict[str, Any]:
    module, type_, value = rng.choice(JAVA_TYPES)
    frames = [
        {
            "module": mod,
            "function": fn,
            "filename": fname,
            "lineno": rng.randint(20, 400),
            "in_app": mod.startswith("com.acme"),
        }
        for mod, fn, fname in rng.sample(JAVA_FRAMES, rng.randint(3, 7))
    ]
    event = _base(rng, "java")
    event["logger"] = frames[-1]["module"]
    event["transaction"] = f"{frames[-1]['module'].rsplit('.', 1)[-1]}.{frames[-1]['function']}"
    event["exception"] = {
        "values": [
            {"type": type_, "module": module, "value": value, "stacktrace": {"frames": frames}}
        ]
    }
    event["sdk"] = {"name": "sentry.java.spring-boot.jakarta", "version": "7.8.0"}
    return event


def js_event(rng: random.Random) -> dict[str, Any]:
    type_, value = rng.choice(JS_ERRORS)
    frames = [
        {
            "function": fn,
            "filename": fname,
            "abs_path": "https://shop.example.com/static/js/main.4f1c2a.js",
            "lineno": 1,
            "colno": rng.randint(1000, 90000),
            "in_app": "node_modules" not in fname,
        }
        for fn, fname in rng.sample(JS_FRAMES, rng.randint(2, 5))
    ]
    event = _base(rng, "javascript")
    event["contexts"] = {"browser": {"name": "Chrome", "version": "124.0.0"}}
    event["transaction"] = rng.choice(["/checkout", "/cart", "/orders/:id"])
    event["exception"] = {
        "values": [{"type": type_, "value": value, "stacktrace": {"frames": frames}}]
    }
    event["sdk"] = {"name": "sentry.javascript.react", "version": "8.9.0"}
    return event


class Template:
    __slots__ = ("event", "fingerprint", "title", "culprit")

    def __init__(self, raw: dict[str, Any]) -> None:
        event = normalize_event(
            raw, received=time.time(), client_ip="203.0.113.7", user_agent="bench"
        )
        event["project_id"] = 0
        grouping = group(event)
        self.event = event
        self.fingerprint = grouping.fingerprint
        self.title = grouping.title
        self.culprit = grouping.culprit


def templates(py: int, java: int, js: int, seed: int) -> list[Template]:
    rng = random.Random(seed)
    raws = python_events(py)
    raws += [java_event(rng) for _ in range(java)]
    raws += [js_event(rng) for _ in range(js)]
    return [Template(raw) for raw in raws]


_NUMBER = re.compile(r"\d+")


class Generator:
    """Copies of the templates with the per-event fields varied; cheap (shared sub-dicts)."""

    def __init__(self, temps: list[Template], project_id: int, seed: int) -> None:
        self.temps = temps
        self.project_id = project_id
        self.rng = random.Random(seed)

    def _renumber(self, text: str) -> str:
        rng = self.rng
        return _NUMBER.sub(lambda m: str(rng.randint(1, 10 ** len(m.group()))), text)

    def make(self, ts: float) -> ProcessedEvent:
        rng = self.rng
        t = rng.choice(self.temps)
        ev = dict(t.event)
        ev["project_id"] = self.project_id
        ev["event_id"] = uuid.UUID(int=rng.getrandbits(128)).hex
        ev["timestamp"] = ts
        ev["received"] = ts + rng.random() * 2
        ev["release"] = rng.choice(RELEASES)
        ev["environment"] = rng.choice(ENVIRONMENTS)
        tags = dict(ev.get("tags") or {})
        tags["browser"] = rng.choice(BROWSERS)
        tags["os"] = rng.choice(OSES)
        tags["region"] = rng.choice(REGIONS)
        tags["customer_tier"] = rng.choice(["free", "free", "pro", "enterprise"])
        ev["tags"] = tags
        uid = rng.randint(1, 50_000)
        ev["user"] = {"id": str(uid), "email": f"user{uid}@example.com"}
        exc = ev.get("exception")
        if exc:
            values = [dict(v) for v in exc["values"]]
            last = values[-1]
            if isinstance(last.get("value"), str):
                last["value"] = self._renumber(last["value"])
            ev["exception"] = {**exc, "values": values}
        entry = ev.get("logentry")
        if entry and isinstance(entry.get("formatted"), str):
            ev["logentry"] = {**entry, "formatted": self._renumber(entry["formatted"])}
        variant = rng.randrange(VARIANTS)
        return ProcessedEvent(ev, f"{t.fingerprint}:{variant}", t.title, t.culprit, user_key(ev))


def insert_event_without_fts(
    conn: sqlite3.Connection, encoded: storage.EncodedEvent, issue_id: int
) -> int | None:
    """``storage.insert_event`` minus the full-text row: the "no full-text index" baseline."""
    row = (*encoded.columns, issue_id, storage.event_json(encoded, issue_id))
    cur = conn.execute(storage._INSERT_EVENT, row)
    if cur.rowcount == 0:
        return None
    rowid = cur.lastrowid or 0
    pid, ts = encoded.columns[0], encoded.columns[2]
    conn.executemany(
        storage._INSERT_VALUES, [(pid, f, v, ts, rowid, first) for f, v, first in encoded.values]
    )
    return rowid


def insert_event_row_only(
    conn: sqlite3.Connection, encoded: storage.EncodedEvent, issue_id: int
) -> int | None:
    """Only the events row: no full-text row, no field_values rows."""
    row = (*encoded.columns, issue_id, storage.event_json(encoded, issue_id))
    cur = conn.execute(storage._INSERT_EVENT, row)
    return None if cur.rowcount == 0 else cur.lastrowid


# -- filling ------------------------------------------------------------------------


def fill(store: SqliteStore, gen: Generator, n: int, batch: int, now: float) -> dict[str, float]:
    """Store ``n`` events over [now - 14 d, now] in arrival order; storage events/s."""
    start = now - SPAN
    step = SPAN / n
    stored = 0
    store_time = 0.0
    t0 = time.perf_counter()
    last_report = t0
    while stored < n:
        size = min(batch, n - stored)
        events = []
        for i in range(stored, stored + size):
            # Arrival order, with a few minutes of lateness (SDK retries, offline clients).
            ts = min(now - 1, start + (i + gen.rng.random()) * step - gen.rng.random() * 180)
            events.append(gen.make(ts))
        s0 = time.perf_counter()
        store.commit_processed([], events, {})
        store_time += time.perf_counter() - s0
        stored += size
        if time.perf_counter() - last_report > 15:
            last_report = time.perf_counter()
            print(f"  stored {stored:,}/{n:,} ({stored / store_time:,.0f} events/s)", flush=True)
    return {"events_per_s": n / store_time, "wall_s": time.perf_counter() - t0}


def ingest_ab(store: SqliteStore, gen: Generator, batches: int, batch: int) -> dict[str, float]:
    """Rotate batches through full storage, storage without the FTS row, and the events
    row alone, at the current size; then delete them again."""
    conn = store.conn()
    max_event = conn.execute("SELECT max(id) FROM events").fetchone()[0] or 0
    max_issue = conn.execute("SELECT max(id) FROM issues").fetchone()[0] or 0
    original = storage.insert_event
    kinds = {
        "with_fts": original,
        "without_fts": insert_event_without_fts,
        "events_row_only": insert_event_row_only,
    }
    times = dict.fromkeys(kinds, 0.0)
    now = time.time()
    try:
        for i in range(len(kinds) * batches):
            kind = list(kinds)[i % len(kinds)]
            events = [gen.make(now - gen.rng.random() * 600) for _ in range(batch)]
            storage.insert_event = kinds[kind]
            s0 = time.perf_counter()
            store.commit_processed([], events, {})
            times[kind] += time.perf_counter() - s0
    finally:
        storage.insert_event = original
    with store.transaction() as c:
        c.execute("DELETE FROM events_fts WHERE rowid > ?", (max_event,))
        c.execute("DELETE FROM field_values WHERE event > ?", (max_event,))
        c.execute("DELETE FROM events WHERE id > ?", (max_event,))
        c.execute("DELETE FROM issues WHERE id > ?", (max_issue,))
    return {k: batches * batch / v for k, v in times.items()}


# -- queries ------------------------------------------------------------------------


def query_cases(store: SqliteStore, pid: int) -> list[tuple[str, str, Callable[[], Any]]]:
    """(name, what it runs, zero-argument call) — each call does what the API endpoint does."""

    def events(q: str, from_: str | None = None) -> Callable[[], Any]:
        return lambda: store.list_events(
            pid, issue_id=None, limit=50, cursor=None, search=search.build(q, from_, None)
        )

    def issues(q: str) -> Callable[[], Any]:
        return lambda: store.list_issues(
            pid, status=None, sort="last_seen", limit=50, cursor=None,
            search=search.build(q, None, None),
        )  # fmt: skip

    def histogram(q: str, from_: str) -> Callable[[], Any]:
        def run() -> Any:
            found = search.build(q, from_, None, default_from=DAY)
            start, end = found.start or found.now - DAY, found.end or found.now
            step = search.interval_seconds(None, start, end)
            return store.histogram(pid, found, start, end, step)

        return run

    def top(field: str, q: str = "", from_: str | None = None) -> Callable[[], Any]:
        return lambda: store.top_values(pid, field, search.build(q, from_, None), 10)

    npe = "NullPointerException"
    combined = f"{npe} environment:production level:>=error"
    return [
        ("events: full-text word", f"q={npe}", events(npe)),
        ("events: prefix", "q=nullpointer*", events("nullpointer*")),
        ("events: phrase", 'q="connection timed out"', events('"connection timed out"')),
        ("events: rare word", "q=ChunkLoadError", events("ChunkLoadError")),
        ("events: field filters", "q=level:>=error environment:production",
         events("level:>=error environment:production")),
        ("events: tag filter", "q=tags.browser:\"Firefox 125\"",
         events('tags.browser:"Firefox 125"')),
        ("events: text + fields", f"q={combined}", events(combined)),
        ("events: text, last 24h", f"q={npe} from=-24h", events(npe, "-24h")),
        ("issues: full-text q", f"q={npe}", issues(npe)),
        ("histogram 7d", "from=-7d (auto: 1h)", histogram("", "-7d")),
        ("histogram 7d + q", f"from=-7d q={npe}", histogram(npe, "-7d")),
        ("top-10 release", "field=release", top("release")),
        ("top-10 tags.browser", "field=tags.browser", top("tags.browser")),
        ("top-10 exception.type", "field=exception.type", top("exception.type")),
        ("top-10 release, 7d + q", "field=release from=-7d q=level:>=error",
         top("release", "level:>=error", "-7d")),
    ]  # fmt: skip


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def measure(call: Callable[[], Any], runs: int) -> dict[str, float]:
    for _ in range(2):
        call()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    return {"p50": percentile(times, 0.5), "p95": percentile(times, 0.95), "max": max(times)}


def matches(store: SqliteStore, pid: int, q: str) -> int:
    where, args = search.build(q, None, None).sqlite(pid)
    clause = f" AND {where}" if where else ""
    sql = f"SELECT count(*) FROM events WHERE project_id = ?{clause}"
    return store.conn().execute(sql, (pid, *args)).fetchone()[0]


# -- one size -----------------------------------------------------------------------


def open_store(path: Path) -> tuple[SqliteStore, int, bool]:
    """The store at ``path`` (schema applied) and its bench project; True if it has events."""
    store = SqliteStore(path)
    store.setup()
    row = store.conn().execute("SELECT id FROM projects WHERE name = ?", (PROJECT,)).fetchone()
    if row:
        return store, row[0], True
    return store, store.create_project(PROJECT), False


def run_size(n: int, root: Path, temps: list[Template], args: argparse.Namespace) -> dict:
    path = root / f"events-{n}" / "stacksift.db"
    reuse = args.reuse and path.exists()
    if not reuse and path.parent.exists():
        for f in path.parent.iterdir():
            f.unlink()
    store, pid, has_events = open_store(path)
    gen = Generator(temps, pid, args.seed + n)
    result: dict[str, Any] = {"events": n}
    if has_events:
        stored = store.conn().execute("SELECT count(*) FROM events").fetchone()[0]
        print(f"reusing {path} ({stored:,} events)", flush=True)
        meta = store.conn().execute("SELECT value FROM meta WHERE key = 'bench_fill'").fetchone()
        result["fill"] = json.loads(meta[0]) if meta else None
    else:
        print(f"filling {path} with {n:,} events", flush=True)
        result["fill"] = fill(store, gen, n, args.batch, time.time())
        with store.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('bench_fill', ?)",
                (json.dumps(result["fill"]),),
            )
        print(f"  done: {result['fill']['events_per_s']:,.0f} events/s", flush=True)
    conn = store.conn()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    result["db_mb"] = round(path.stat().st_size / 1e6)
    result["issues"] = conn.execute("SELECT count(*) FROM issues").fetchone()[0]
    result["queries"] = {}
    for name, desc, call in query_cases(store, pid):
        stats = measure(call, args.runs)
        q = re.search(r"q=(.*)$", desc)
        if name.startswith("events") and q and "from=" not in desc:
            stats["matches"] = matches(store, pid, q.group(1))
        result["queries"][name] = {"what": desc, **stats}
        print(f"  {name:28s} p50 {stats['p50']:8.1f} ms  p95 {stats['p95']:8.1f} ms", flush=True)
    if args.ab_batches:
        result["ingest_ab"] = ingest_ab(store, gen, args.ab_batches, args.batch)
        ab = result["ingest_ab"]
        print(
            f"  storage with FTS {ab['with_fts']:,.0f}/s, without {ab['without_fts']:,.0f}/s, "
            f"events row only {ab['events_row_only']:,.0f}/s",
            flush=True,
        )
    conn.close()
    return result


# -- report -------------------------------------------------------------------------

TARGETS = {
    "events: full-text word": 150,
    "events: prefix": 150,
    "events: phrase": 150,
    "histogram 7d": 200,
    "top-10 release": 200,
    "top-10 tags.browser": 200,
    "top-10 exception.type": 200,
}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {mem:.0f} GiB RAM, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}"
    )


def table(results: list[dict], baseline: list[dict] | None) -> str:
    sizes = [r["events"] for r in results]
    head = ["query", "what"]
    for n in sizes:
        head += [f"{n:,} p50", f"{n:,} p95"]
    if baseline:
        head += [f"before: {b['events']:,} p95" for b in baseline]
    if len(sizes) > 1:
        head.append(f"p95 growth {sizes[0]:,}→{sizes[-1]:,}")
    head.append("target p95")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, q in results[0]["queries"].items():
        row = [name, f"`{q['what']}`"]
        for r in results:
            s = r["queries"][name]
            row += [f"{s['p50']:.1f} ms", f"{s['p95']:.1f} ms"]
        if baseline:
            row += [
                f"{b['queries'][name]['p95']:.1f} ms" if name in b["queries"] else "-"
                for b in baseline
            ]
        if len(sizes) > 1:
            first, last = results[0]["queries"][name]["p95"], results[-1]["queries"][name]["p95"]
            row.append(f"×{last / first:.1f}")
        target = TARGETS.get(name)
        row.append(f"< {target} ms" if target else "")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("| store | " + " | ".join(f"{n:,} events" for n in sizes) + " |")
    lines.append("|---|" + "---|" * len(sizes))

    def line(label: str, fn: Callable[[dict], str]) -> None:
        lines.append(f"| {label} | " + " | ".join(fn(r) for r in results) + " |")

    line("database size", lambda r: f"{r['db_mb']:,} MB")
    line("issues", lambda r: f"{r['issues']:,}")
    line(
        "fill: storage events/s (whole fill, with FTS)",
        lambda r: f"{r['fill']['events_per_s']:,.0f}" if r.get("fill") else "-",
    )
    if all("ingest_ab" in r for r in results):
        line(
            "storage events/s at this size, with FTS",
            lambda r: f"{r['ingest_ab']['with_fts']:,.0f}",
        )
        line(
            "storage events/s at this size, without FTS",
            lambda r: f"{r['ingest_ab']['without_fts']:,.0f}",
        )
        line(
            "FTS cost (throughput lower by)",
            lambda r: (
                f"{(1 - r['ingest_ab']['with_fts'] / r['ingest_ab']['without_fts']) * 100:.1f} %"
            ),
        )
        line(
            "storage events/s, events row only (no FTS, no field_values)",
            lambda r: f"{r['ingest_ab']['events_row_only']:,.0f}",
        )
        line(
            "field_values cost (without FTS vs events row only)",
            lambda r: (
                f"{(1 - r['ingest_ab']['without_fts'] / r['ingest_ab']['events_row_only']):.1%}"
            ),
        )
    for r in results:
        counts = ", ".join(
            f"{name.split(': ', 1)[1]} {q['matches']:,}"
            for name, q in r["queries"].items()
            if "matches" in q
        )
        lines.append("")
        lines.append(f"Matching events at {r['events']:,}: {counts}.")
    return "\n".join(lines)


SECTION = "## Search (issue 4)"


def write_doc(path: Path, command: str, body: str, notes: str) -> None:
    section = f"{SECTION}\n\nCommand: `{command}`\n\nMachine: {machine()}.\n\n{body}\n" + (
        f"\n{notes.strip()}\n" if notes else ""
    )
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(SECTION)
    if start >= 0:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", default="100000,1000000", help="comma-separated sizes")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--ab-batches", type=int, default=10, help="0 to skip the ingest A/B")
    parser.add_argument("--data-dir", type=Path, help="keep stores here (default: a temp dir)")
    parser.add_argument("--reuse", action="store_true", help="reuse stores in --data-dir")
    parser.add_argument("--templates", default="240,100,60", help="python,java,js templates")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--baseline", type=Path, help="a --json of an earlier run to compare")
    parser.add_argument("--write-doc", type=Path, help="update this markdown file's section")
    parser.add_argument("--notes", type=Path, help="markdown appended to the doc section")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    sizes = [int(s) for s in args.events.split(",")]
    py, java, js = (int(s) for s in args.templates.split(","))
    print(f"building {py + java + js} templates", flush=True)
    temps = templates(py, java, js, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        root = args.data_dir or Path(tmp)
        results = [run_size(n, root, temps, args) for n in sizes]
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None
    body = table(results, baseline)
    print()
    print(body)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.write_doc:
        command = f"python scripts/bench_search.py --events {args.events} --runs {args.runs}"
        notes = args.notes.read_text() if args.notes else ""
        write_doc(args.write_doc, command, body, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
