"""Request-body pools for the wrk script, one fresh event id per request.

A server that deduplicates by event id would make a replayed body nearly free,
so every request must carry a new id. Uncompressed bodies are stored split
around the id (header and payload) and around the event's ``timestamp`` value,
and the Lua script splices a new id and the current time in per request, so ids
never repeat and events are stamped when they are sent, as an SDK does. (With
the generation-time stamps of a few hundred events, every stored event's time
fell on one of a few hundred values, so each index on time took inserts at as
many places and processing slowed as the database grew: 0.40 -> 0.55 ms CPU
per event over 120,000 events, against a flat 0.40-0.43 with current times.)
A compressed body cannot be edited in Lua, so compressed pools hold one
pre-compressed body per request, each with its own id, and only repeat once a
run outlasts the pool.

File layout read by ingest.lua: ``<name>.bin`` is all parts back to back;
``<name>.idx`` has one line per body listing its part lengths, then, when the
body has a timestamp to splice, ``ts=N``: the N-th splice point (1-based) takes
the time, the others the event id.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import uuid
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import brotli

# The Python SDK's defaults: brotli quality 4, gzip level 9 (sentry_sdk/transport.py).
BROTLI_QUALITY = 4
GZIP_LEVEL = 9
COMPRESSIONS = ("br", "gzip", "none")

_EVENT_ID = re.compile(rb'^\{"event_id":"([0-9a-f]{32})"')
# Where the time goes: the quoted value of the event's "timestamp" (ISO 8601, as
# sentry-sdk writes it).
_TIMESTAMP = b'"timestamp":"'


class PoolError(ValueError):
    """An envelope cannot be used in a pool (no event id header, bad compression name)."""


@dataclass(frozen=True)
class Pool:
    bin_path: Path
    idx_path: Path
    bodies: int
    splices_ids: bool  # True: ids are spliced in per request (never repeat)


def event_id_of(envelope: bytes) -> bytes:
    match = _EVENT_ID.match(envelope)
    if match is None:
        raise PoolError(f"envelope does not start with an event_id header: {envelope[:80]!r}")
    return match.group(1)


def compress(body: bytes, compression: str) -> bytes:
    if compression == "br":
        return brotli.compress(body, quality=BROTLI_QUALITY)
    if compression == "gzip":
        return gzip.compress(body, compresslevel=GZIP_LEVEL)
    if compression == "none":
        return body
    raise PoolError(f"unknown compression {compression!r}; expected one of {COMPRESSIONS}")


def _write(directory: Path, name: str, bodies: Iterable[tuple[list[bytes], int | None]]) -> Pool:
    bin_path = directory / f"{name}.bin"
    idx_path = directory / f"{name}.idx"
    count = 0
    splices = False
    with bin_path.open("wb") as data, idx_path.open("w") as index:
        for parts, time_at in bodies:
            data.write(b"".join(parts))
            line = " ".join(str(len(p)) for p in parts)
            index.write(line + ("" if time_at is None else f" ts={time_at}") + "\n")
            splices = splices or len(parts) > 1
            count += 1
    return Pool(bin_path, idx_path, count, splices)


def split_body(envelope: bytes) -> tuple[list[bytes], int | None]:
    """The envelope cut at every occurrence of its event id and at the value of the
    event's ``timestamp``; which cut takes the time (None: the event has no ISO one)."""
    parts = envelope.split(event_id_of(envelope))
    if len(parts) < 3:
        raise PoolError("event id must appear in the envelope header and the payload")
    lines = envelope.split(b"\n", 3)
    event = json.loads(lines[2]) if len(lines) > 2 else {}
    stamp = event.get("timestamp") if isinstance(event, dict) else None
    if not isinstance(stamp, str):
        return parts, None
    value = stamp.encode()
    quoted = _TIMESTAMP + value + b'"'
    for i, part in enumerate(parts):
        at = part.find(quoted)
        if at >= 0:
            start = at + len(_TIMESTAMP)
            parts[i : i + 1] = [part[:start], part[start + len(value) :]]
            return parts, i + 1
    return parts, None


def write_splice_pool(envelopes: list[bytes], directory: Path, name: str = "splice") -> Pool:
    """Uncompressed bodies split around every occurrence of their event id and around
    their timestamp."""
    return _write(directory, name, (split_body(e) for e in envelopes))


_worker_envelopes: list[bytes] = []
_worker_compression = "none"


def _init_worker(envelopes: list[bytes], compression: str) -> None:
    global _worker_envelopes, _worker_compression
    _worker_envelopes, _worker_compression = envelopes, compression


def _fresh_compressed(bounds: tuple[int, int]) -> list[bytes]:
    bodies = []
    for i in range(*bounds):
        envelope = _worker_envelopes[i % len(_worker_envelopes)]
        fresh = envelope.replace(event_id_of(envelope), uuid.uuid4().hex.encode())
        bodies.append(compress(fresh, _worker_compression))
    return bodies


def write_compressed_pool(
    envelopes: list[bytes], compression: str, size: int, directory: Path, name: str = "packed"
) -> Pool:
    """``size`` compressed bodies cycling over ``envelopes``, each with a new event id."""
    if compression not in ("br", "gzip"):
        raise PoolError(f"compressed pools need br or gzip, not {compression!r}")
    chunk = 2000
    ranges = [(start, min(size, start + chunk)) for start in range(0, size, chunk)]
    workers = max(1, min(4, os.cpu_count() or 1))
    with ProcessPoolExecutor(
        workers, initializer=_init_worker, initargs=(envelopes, compression)
    ) as ex:
        chunks = ex.map(_fresh_compressed, ranges)
        return _write(directory, name, (([body], None) for bodies in chunks for body in bodies))
