"""Sentry envelope parsing and the small ingest-side parsers that go with it.

The grammar (sentry-protocol.md section 2) is ``Headers { "\\n" Item } [ "\\n" ]`` with
``Item = Headers "\\n" Payload``: a payload is exactly ``length`` bytes when the item header has a
``length``, else it runs to the next newline.  The parser walks the body once with ``bytes.find``
and slices payloads out without parsing them, so ingest pays JSON cost only for the items it keeps.
Items of every type are returned (unknown ones included) so the caller decides what to skip or
count; the parser only refuses what the spec calls malformed and what is over a limit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from app.decompress import BadBody, BodyError, PayloadTooLarge

__all__ = [
    "MAX_ITEMS",
    "Envelope",
    "InvalidEnvelope",
    "Item",
    "normalize_event_id",
    "parse_dsn_key",
    "parse_envelope",
    "parse_sentry_auth",
]

# SDKs send one to a few dozen items (Relay's largest per-type count limit is 100 sessions); far
# more is abuse, refused before the per-item work is spent.
MAX_ITEMS = 10_000
# Item types whose payload is one event and is held to ``max_item_bytes`` (Relay's
# ``max_event_size``).  At most one of them may appear in an envelope.
_EVENT_TYPES = frozenset({"event", "transaction"})

_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_DASHED_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_SENTRY_AUTH_PREFIX = re.compile(r"\s*sentry\s+", re.IGNORECASE)


class InvalidEnvelope(BadBody):
    """The body does not follow the envelope grammar, or an item payload is not what it claims."""

    code = "invalid_envelope"


@dataclass(slots=True)
class Item:
    type: str
    headers: dict[str, Any]
    payload: bytes

    def json(self) -> dict[str, Any]:
        """The payload as a JSON object; raises ``InvalidEnvelope`` when it is not one."""
        try:
            value = orjson.loads(self.payload)
        except orjson.JSONDecodeError as exc:
            value = _lenient_json(self.payload, self.type, exc)
        if not isinstance(value, dict):
            raise InvalidEnvelope(
                f"{self.type} item payload is JSON {type(value).__name__}, not an object"
            )
        return value


@dataclass(slots=True)
class Envelope:
    headers: dict[str, Any]
    items: list[Item]
    # The header ``event_id`` as 32 lowercase hex (None when absent): it wins over the payload's.
    event_id: str | None = None


def parse_envelope(data: bytes, max_item_bytes: int) -> Envelope:
    """Split a decoded envelope body into headers and items.

    Raises ``InvalidEnvelope`` (400) for anything malformed and ``PayloadTooLarge`` (413) for an
    ``event``/``transaction`` payload over ``max_item_bytes`` or more than ``MAX_ITEMS`` items:
    those are well-formed requests over a server limit, and 413 tells the operator so.
    """
    size = len(data)
    if not size:
        raise InvalidEnvelope("envelope is empty: it must start with a JSON header line")
    end = data.find(b"\n")
    if end < 0:
        end = size
    header_line = data[:end]
    headers = json_object(header_line, "envelope header")
    event_id = _envelope_checks(headers, header_line)

    items: list[Item] = []
    event_item = 0  # 1-based number of the event/transaction item seen, 0 if none
    pos = end + 1
    number = 0
    find = data.find
    while pos < size:
        number += 1
        if number > MAX_ITEMS:
            raise PayloadTooLarge(f"envelope holds more than {MAX_ITEMS} items")
        header_end = find(b"\n", pos)
        if header_end < 0:
            header_end = size
        if header_end == pos:
            raise InvalidEnvelope(
                f"item {number} header line is empty: a blank line may not follow an item "
                "(only one optional newline ends the envelope)"
            )
        item_headers = json_object(data[pos:header_end], f"item {number} header")
        item_type = item_headers.get("type")
        if not isinstance(item_type, str):
            raise InvalidEnvelope(f'item {number} header has no string "type"')

        start = header_end + 1 if header_end < size else size
        length = item_headers.get("length")
        if length is None:
            payload_end = find(b"\n", start)
            if payload_end < 0:
                payload_end = size
        else:
            if type(length) is not int or length < 0:
                raise InvalidEnvelope(
                    f"item {number} header length {_show(length)} is not a non-negative integer"
                )
            payload_end = start + length
            if payload_end > size:
                raise InvalidEnvelope(
                    f"item {number} declares length {length} but only {size - start} bytes remain"
                )
            if payload_end < size and data[payload_end] != 0x0A:
                raise InvalidEnvelope(
                    f"item {number} payload of declared length {length} is followed by "
                    f"{data[payload_end : payload_end + 1]!r} instead of a newline or the end"
                )

        if item_type in _EVENT_TYPES:
            if payload_end - start > max_item_bytes:
                raise PayloadTooLarge(
                    f"item {number} ({item_type}) is {payload_end - start} bytes; "
                    f"the limit is {max_item_bytes}"
                )
            if event_item:
                raise InvalidEnvelope(
                    f"item {number} ({item_type}) is a second event-like item after item "
                    f"{event_item}; an envelope holds at most one event or transaction"
                )
            event_item = number
        items.append(Item(item_type, item_headers, data[start:payload_end]))
        pos = payload_end + 1
    return Envelope(headers, items, event_id)


def json_object(raw: bytes, what: str, error: type[BodyError] = InvalidEnvelope) -> dict[str, Any]:
    """Parse a JSON object, or raise ``error`` saying what ``what`` held instead."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise error(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise error(f"{what} is JSON {type(value).__name__}, not an object")
    return value


def _envelope_checks(headers: dict[str, Any], header_line: bytes) -> str | None:
    """Header rules of the spec; returns the normalised ``event_id``."""
    if header_line.count(b'"sent_at"') > 1 and _top_level_key_count(header_line, "sent_at") > 1:
        raise InvalidEnvelope('envelope header has more than one "sent_at"')
    raw_id = headers.get("event_id")
    if raw_id is None:
        return None
    event_id = normalize_event_id(raw_id)
    if event_id is None:
        raise InvalidEnvelope(
            f"envelope header event_id {_show(raw_id)} is not a UUID "
            "(32 hex digits, dashes optional)"
        )
    return event_id


def _top_level_key_count(header_line: bytes, key: str) -> int:
    """orjson keeps the last duplicate silently; the stdlib hook sees every pair (rare path)."""
    try:
        pairs = json.loads(header_line, object_pairs_hook=lambda p: p)
    except (ValueError, RecursionError):
        return 0
    return sum(1 for k, _ in pairs if k == key)


def _show(value: object) -> str:
    """A short rendering of a bad JSON value for an error message (never the whole body)."""
    if isinstance(value, str):
        return repr(value[:64])
    if isinstance(value, bool | int | float):
        return orjson.dumps(value).decode()
    return f"(a JSON {type(value).__name__})"


def _lenient_json(payload: bytes, item_type: str, error: orjson.JSONDecodeError) -> Any:
    """Old Python SDKs wrote bare NaN/Infinity; accept those as null like Relay repairs them."""
    if b"NaN" in payload or b"Infinity" in payload:
        try:
            return json.loads(payload, parse_constant=lambda _: None)
        except (ValueError, RecursionError):
            pass
    raise InvalidEnvelope(f"{item_type} item payload is not valid JSON: {error}") from None


def normalize_event_id(value: object) -> str | None:
    """32 lowercase hex digits from a 32-hex or dashed 36-char UUID string; None otherwise."""
    if not isinstance(value, str):
        return None
    if len(value) == 32 and _HEX32.fullmatch(value):
        return value.lower()
    if len(value) == 36 and _DASHED_UUID.fullmatch(value):
        return value.replace("-", "").lower()
    return None


def parse_dsn_key(dsn: str) -> tuple[str, str] | None:
    """``(public_key, project_id)`` of ``scheme://key[:secret]@host[/path]/project``, else None."""
    if not isinstance(dsn, str):
        return None
    try:
        parts = urlsplit(dsn.strip())
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    key = parts.username
    project_id = parts.path.rstrip("/").rpartition("/")[2]
    if not key or not project_id:
        return None
    return key, project_id


def parse_sentry_auth(header: str) -> dict[str, str]:
    """Fields of an ``X-Sentry-Auth`` value; pieces without ``=`` are ignored, never an error."""
    match = _SENTRY_AUTH_PREFIX.match(header)
    if match:
        header = header[match.end() :]
    fields: dict[str, str] = {}
    for part in header.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if sep and key:
            fields[key] = value.strip()
    return fields
