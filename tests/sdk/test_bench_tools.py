"""The ingest benchmark sends realistic SDK envelopes, each with a fresh event id.

A benchmark that replays one body (one event id) would measure a server's
dedupe path, not its ingest path, so uniqueness and validity are tested here,
end to end through wrk when it is installed.
"""

from __future__ import annotations

import gzip
import json
import secrets
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import brotli
import pytest
from sdk_sink import Sink, parse_envelope, start_sink

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from bench.events import TARGET_MAX_BYTES, generate_envelopes  # noqa: E402
from bench.pool import (  # noqa: E402
    PoolError,
    event_id_of,
    write_compressed_pool,
    write_splice_pool,
)
from bench.wrk_runner import Target, run_wrk  # noqa: E402

DSN = "http://benchkey@127.0.0.1:9/3"


@pytest.fixture(scope="module")
def envelopes() -> list[bytes]:
    return generate_envelopes(60, DSN, seed=11)


@pytest.fixture()
def sink() -> Iterator[Sink]:
    recorder, server = start_sink()
    yield recorder
    server.shutdown()
    server.server_close()


def read_pool(bin_path: Path, idx_path: Path) -> list[tuple[list[bytes], int | None]]:
    """Each body's parts and the splice point (1-based) that takes the time, as ingest.lua
    reads them."""
    data = bin_path.read_bytes()
    pos = 0
    bodies = []
    for line in idx_path.read_text().splitlines():
        lengths, _, ts = line.partition(" ts=")
        parts = []
        for length in map(int, lengths.split()):
            parts.append(data[pos : pos + length])
            pos += length
        bodies.append((parts, int(ts) if ts else None))
    assert pos == len(data)
    return bodies


def rejoin(parts: list[bytes], time_at: int | None, event_id: bytes, now: bytes) -> bytes:
    if time_at is None:
        return event_id.join(parts)
    return event_id.join(parts[:time_at]) + now + event_id.join(parts[time_at:])


def test_generated_envelopes_are_realistic_sdk_errors(envelopes: list[bytes]) -> None:
    kinds = set()
    for envelope in envelopes:
        header, items = parse_envelope(envelope)
        assert [h["type"] for h, _ in items] == ["event"]
        event = json.loads(items[0][1])
        assert event["event_id"] == header["event_id"]
        assert event["sdk"]["name"].startswith("sentry.python")
        assert event["request"]["method"] == "POST"
        assert event["breadcrumbs"]["values"] or len(envelope) > TARGET_MAX_BYTES - 1500
        assert any(
            "vars" in frame for frame in event["exception"]["values"][-1]["stacktrace"]["frames"]
        )
        kinds.add(event["exception"]["values"][-1]["type"])
    assert len(kinds) >= 5
    assert any(
        len(json.loads(parse_envelope(e)[1][0][1])["exception"]["values"]) > 1 for e in envelopes
    ), "expected chained exceptions"
    sizes = sorted(len(e) for e in envelopes)
    assert sizes[len(sizes) // 2] in range(6 * 1024, TARGET_MAX_BYTES + 1)


def test_splice_pool_rejoins_to_valid_envelopes_with_any_id(
    envelopes: list[bytes], tmp_path: Path
) -> None:
    pool = write_splice_pool(envelopes, tmp_path)
    assert pool.splices_ids and pool.bodies == len(envelopes)
    now = b"2031-02-03T04:05:06.789012Z"
    bodies = read_pool(pool.bin_path, pool.idx_path)
    for original, (parts, time_at) in zip(envelopes, bodies, strict=True):
        assert time_at is not None  # every SDK event has a timestamp to refresh
        new_id = secrets.token_hex(16)
        body = rejoin(parts, time_at, new_id.encode(), now)
        header, items = parse_envelope(body)  # lengths still right
        event = json.loads(items[0][1])
        assert header["event_id"] == event["event_id"] == new_id
        assert event["timestamp"] == now.decode()
        stamp = json.loads(parse_envelope(original)[1][0][1])["timestamp"]
        assert body == original.replace(event_id_of(original), new_id.encode()).replace(
            f'"timestamp":"{stamp}"'.encode(), b'"timestamp":"' + now + b'"', 1
        )


@pytest.mark.parametrize("compression", ["br", "gzip"])
def test_compressed_pool_bodies_all_have_distinct_ids(
    envelopes: list[bytes], tmp_path: Path, compression: str
) -> None:
    pool = write_compressed_pool(envelopes, compression, 150, tmp_path)
    decode = brotli.decompress if compression == "br" else gzip.decompress
    ids = []
    for parts, time_at in read_pool(pool.bin_path, pool.idx_path):
        assert len(parts) == 1 and time_at is None
        header, items = parse_envelope(decode(parts[0]))
        ids.append(header["event_id"])
    assert len(ids) == 150 == len(set(ids))
    assert not set(ids) & {event_id_of(e).decode() for e in envelopes}


def test_pool_rejects_bad_input(envelopes: list[bytes], tmp_path: Path) -> None:
    with pytest.raises(PoolError, match="event_id header"):
        write_splice_pool([b'{"sent_at":"x"}\n'], tmp_path)
    with pytest.raises(PoolError, match="br or gzip"):
        write_compressed_pool(envelopes, "zstd", 1, tmp_path)


@pytest.mark.parametrize("compression", ["none", "br"])
def test_wrk_run_sends_unique_ids_and_counts_statuses(
    envelopes: list[bytes], tmp_path: Path, sink: Sink, compression: str
) -> None:
    if compression == "none":
        pool = write_splice_pool(envelopes, tmp_path)
    else:
        pool = write_compressed_pool(envelopes, compression, 5000, tmp_path)
    headers = {"Host": f"127.0.0.1:{sink.port}", "Content-Type": "application/x-sentry-envelope"}
    if compression != "none":
        headers["Content-Encoding"] = compression
    target = Target(f"http://127.0.0.1:{sink.port}", "/api/3/envelope/", headers)

    result = run_wrk(target, pool, duration_s=1, connections=2, threads=2, nonce="0badcafe")

    assert sink.errors == []
    ids = [r.envelope_header["event_id"] for r in sink.received]
    assert len(ids) >= 20 and len(ids) == len(set(ids))
    assert all(e["event_id"] in ids for e in sink.events())
    if compression == "none":
        assert all(i.startswith("0badcafe") and i[12] == "4" and i[16] == "8" for i in ids)
        # stamped when sent (ingest.lua), not when the envelopes were generated
        sent = {e["timestamp"] for e in sink.events()}
        generated = {json.loads(parse_envelope(e)[1][0][1])["timestamp"] for e in envelopes}
        assert sent and not sent & generated
        assert all(
            abs(datetime.fromisoformat(t[:19]).replace(tzinfo=UTC).timestamp() - time.time()) < 60
            for t in sent
        )
    assert result["status_codes"]["200"] == result["requests"] <= len(ids)
    assert result["latency_us"]["p99"] >= result["latency_us"]["p50"] > 0
