"""Turning an ingest request into inbox rows, fast.

Ingest only authenticates, decodes, checks that each event is a JSON object
and records server-side facts (received time, client IP, user agent, SDK);
all other work waits for processing.  The event JSON is stored exactly as
sent, so nothing the SDK wrote is lost if processing code changes.
"""

from __future__ import annotations

import base64
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.decompress import BodyError, PayloadTooLarge, decompress
from app.envelope import (
    json_object,
    normalize_event_id,
    parse_dsn_key,
    parse_envelope,
    parse_sentry_auth,
)

Row = tuple[int, float, bytes, bytes]
MAX_NATIVE_BATCH = 1000


class AuthError(Exception):
    status = 401
    code = "unauthorized"


class Forbidden(AuthError):
    status = 403
    code = "forbidden"


class InvalidEvent(BodyError):
    status = 400
    code = "invalid_event"


@dataclass(slots=True)
class Client:
    """Who sent the request, as far as the server can tell."""

    ip: str | None
    user_agent: str | None
    sdk: dict[str, str] | None


@dataclass(slots=True)
class Accepted:
    rows: list[Row] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    counts: Counter[tuple[int, str]] = field(default_factory=Counter)


def sdk_from(client: str | None, user_agent: str | None) -> dict[str, str] | None:
    """``sentry.python/2.19.0`` from sentry_client or the User-Agent."""
    for value in (client, user_agent):
        if value and "/" in value:
            name, _, version = value.partition("/")
            return {
                "name": name.strip()[:64],
                "version": version.split()[0][:64] if version else "",
            }
    return None


def header_key(
    headers: Mapping[str, str], query: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """(public key, sentry_client) from X-Sentry-Auth, ``Authorization: Sentry`` or the query.

    Several places that disagree are refused, as Relay does.
    """
    found: list[str] = []
    client = query.get("sentry_client")
    for name in ("x-sentry-auth", "authorization"):
        value = headers.get(name)
        if value and value[:7].lower() == "sentry ":
            parts = parse_sentry_auth(value)
            if parts.get("sentry_key"):
                found.append(parts["sentry_key"])
            client = parts.get("sentry_client") or client
    if query.get("sentry_key"):
        found.append(query["sentry_key"])
    if len(set(found)) > 1:
        raise AuthError("the request names more than one sentry_key")
    return (found[0] if found else None), client


def bearer_key(headers: Mapping[str, str]) -> str | None:
    """Native endpoint: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return headers.get("x-api-key") or None


def decode_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    return decompress(body, encoding, limit)


def _meta(event_id: str, received: float, client: Client) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "client_ip": client.ip,
            "user_agent": client.user_agent,
            "sdk": client.sdk,
        }
    )


def _event_object(payload: bytes, where: str) -> dict[str, Any]:
    return json_object(payload, where, InvalidEvent)


def _event_id(*candidates: Any) -> str:
    for value in candidates:
        if isinstance(value, str) and (event_id := normalize_event_id(value)):
            return event_id
    return uuid.uuid4().hex


def envelope(
    data: bytes, header_public_key: str | None, max_event_bytes: int
) -> tuple[str | None, Any]:
    """Parse an envelope; return the key it names (header key, else its ``dsn``) and itself."""
    env = parse_envelope(data, max_event_bytes)
    key = header_public_key
    dsn = env.headers.get("dsn")
    if isinstance(dsn, str) and (parsed := parse_dsn_key(dsn)):
        if key and key != parsed[0]:
            raise AuthError("the envelope dsn and the request name different keys")
        key = parsed[0]
    return key, env


# Envelope item types of the Sentry protocol, counted by name; any other name counts as
# item:other, so one envelope cannot add thousands of counter rows a day.
ITEM_TYPES = frozenset(
    [
        "transaction",
        "attachment",
        "session",
        "sessions",
        "user_report",
        "feedback",
        "client_report",
        "replay_event",
        "replay_recording",
        "replay_video",
        "check_in",
        "profile",
        "profile_chunk",
        "statsd",
        "metric_buckets",
        "span",
        "otel_span",
        "log",
        "otel_log",
        "security",
        "raw_security",
        "nel",
        "unreal_report",
        "form_data",
    ]
)


def accept_envelope(env: Any, project_id: int, client: Client) -> Accepted:
    """Rows for the event items; every other item type is only counted."""
    out = Accepted()
    received = time.time()
    for index, item in enumerate(env.items, 1):
        if item.type != "event":
            name = item.type if item.type in ITEM_TYPES else "other"
            out.counts[(project_id, f"item:{name}")] += 1
            continue
        event = _event_object(item.payload, f"envelope item {index} (event)")
        event_id = _event_id(env.headers.get("event_id"), event.get("event_id"))
        out.rows.append((project_id, received, item.payload, _meta(event_id, received, client)))
        out.event_ids.append(event_id)
        out.counts[(project_id, "accepted")] += 1
    return out


def store_body(data: bytes, max_event_bytes: int) -> bytes:
    """Legacy /store/ bodies: JSON, or base64 of zlib-deflated JSON (very old raven clients)."""
    stripped = data.lstrip()
    if stripped[:1] == b"{" or not stripped:
        return stripped
    try:
        raw = base64.b64decode(stripped, validate=True)
    except ValueError:
        raise InvalidEvent("store body is neither JSON nor base64") from None
    try:
        inflater = zlib.decompressobj()
        out = inflater.decompress(raw, max_event_bytes + 1)
    except zlib.error:
        return raw
    if len(out) > max_event_bytes:
        raise PayloadTooLarge(f"event is larger than {max_event_bytes} bytes")
    return out


def accept_events(
    payloads: Iterable[tuple[bytes, dict[str, Any]]], project_id: int, client: Client
) -> Accepted:
    out = Accepted()
    received = time.time()
    for raw, event in payloads:
        event_id = _event_id(event.get("event_id"))
        out.rows.append((project_id, received, raw, _meta(event_id, received, client)))
        out.event_ids.append(event_id)
        out.counts[(project_id, "accepted")] += 1
    return out


def store_event(data: bytes, max_event_bytes: int) -> list[tuple[bytes, dict[str, Any]]]:
    if len(data) > max_event_bytes:
        raise PayloadTooLarge(f"event is larger than {max_event_bytes} bytes")
    payload = store_body(data, max_event_bytes)
    return [(payload, _event_object(payload, "request body"))]


def native_events(
    data: bytes, max_event_bytes: int
) -> tuple[list[tuple[bytes, dict[str, Any]]], bool]:
    """One event object, or ``{"events": [...]}``; returns the events and whether it was a batch."""
    body = _event_object(data, "request body")
    if "events" not in body:
        if len(data) > max_event_bytes:
            raise PayloadTooLarge(f"event is larger than {max_event_bytes} bytes")
        return [(data, body)], False
    events = body["events"]
    if not isinstance(events, list):
        raise InvalidEvent("'events' must be a list of event objects")
    if not events:
        raise InvalidEvent("'events' is empty")
    if len(events) > MAX_NATIVE_BATCH:
        raise PayloadTooLarge(f"a batch holds at most {MAX_NATIVE_BATCH} events, got {len(events)}")
    out = []
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise InvalidEvent(f"events[{index}] must be a JSON object")
        try:
            raw = orjson.dumps(event)
        except orjson.JSONEncodeError:
            # orjson reads 1,024 levels but writes only 255: a deeper event is refused
            # here rather than failing as a 500.
            raise InvalidEvent(f"events[{index}] nests more than 255 levels deep") from None
        if len(raw) > max_event_bytes:
            raise PayloadTooLarge(f"events[{index}] is larger than {max_event_bytes} bytes")
        out.append((raw, event))
    return out, True
