"""Turn whatever an SDK sent into the one processed-event shape the rest of the pipeline reads.

Follows Relay's store normalization (reference section 5).  The guarantee that
matters to callers: for *any* JSON-decoded dict this returns an event and never
raises; wrong types are coerced when the meaning is obvious and dropped
otherwise, and every such repair is written to the event's ``errors`` list so
a user can see why a field is missing.  Only a non-dict top level is refused
(:class:`InvalidEvent`).

Processed event shape (the contract :mod:`app.fields`, grouping, scrubbing and
storage rely on; keys are absent rather than ``None`` unless stated)::

    event_id     str, 32 lowercase hex                    always
    timestamp    float unix seconds, clamped               always
    received     float unix seconds                        always
    level        fatal|error|warning|info|debug            always
    platform     str                                       always ("other" by default)
    logger, transaction, server_name, environment, release, dist, type   str, trimmed
    logentry     {"formatted": str, "message"?: str, "params"?: list|dict}
    exception    {"values": [exception, ...]}  oldest -> newest, never empty
    threads      {"values": [thread, ...]}
    breadcrumbs  {"values": [crumb dict, ...]}
    stacktrace   {"frames": [frame, ...], ...}             message events with a stack
    tags         dict[str, str]                            always (maybe empty)
    user         dict (id/email/username/name/ip_address are str)
    request, contexts, extra, modules, debug_meta, sdk     dict
    fingerprint  list[str], never empty
    errors       list[{"type", "name", "reason"?, "value"?}]   always (maybe empty)
    ingest       {"client_ip": str|None, "user_agent": str|None}   always

Exceptions, threads and stacktraces hold frames whose string fields are str,
``lineno``/``colno`` int and ``in_app`` bool when present.  Unknown top-level
keys are dropped so that nothing unvalidated reaches indexed fields.

For speed the result is a new top-level dict that *shares* nested objects
(frames, extra, contexts, ...) with ``raw`` wherever they needed no repair; do
not keep using ``raw`` after normalizing it.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from app import fields

Event = dict[str, Any]
Errors = list[dict[str, Any]]

MAX_MESSAGE = 8192
MAX_TAG = 200
# Counts a caller controls, bounded as Relay and older Sentry bound them, so that one
# event cannot buy seconds of processing (every tag and value is grouped, indexed and
# searched later): tags per event, exceptions in a chain (the first and last halves
# stay: the cause and what the application saw), breadcrumbs (the SDKs keep 100), threads.
MAX_TAGS = 200
MAX_EXCEPTIONS = 24
MAX_BREADCRUMBS = 200
MAX_THREADS = 200
# user.<field> -> most characters kept (Relay: id/username/name 128; e-mail addresses are
# at most 254 by RFC 5321).
_USER_CAPS = {"id": 128, "username": 128, "name": 128, "segment": 128, "email": 254,
              "ip_address": 64}
MAX_SECS_IN_FUTURE = 60.0
MAX_SECS_IN_PAST = 30 * 24 * 3600.0
MAX_ERRORS = 100

_LEVEL_ALIASES = {"warn": "warning", "critical": "fatal", "log": "info", "err": "error"}
_LEVEL_NUMBERS = {10: "debug", 20: "info", 30: "warning", 40: "error", 50: "fatal"}

# name -> (max chars, characters that make the value invalid)
_SCALARS: dict[str, tuple[int, str]] = {
    "logger": (64, "\r\n"),
    "transaction": (200, "\r\n"),
    "server_name": (256, "\r\n"),
    "environment": (64, "\r\n\f/"),
    "release": (200, "\r\n\t\f\v"),
    "dist": (64, "\r\n\t\f\v"),
    "type": (64, "\r\n"),
}
_DICTS = ("contexts", "extra", "modules", "request", "debug_meta")
_IP_PLATFORMS = frozenset({"javascript", "cocoa", "objc"})

_HEX32 = re.compile(r"[0-9a-f]{32}")
_PLATFORM = re.compile(r"[a-z0-9_.\-]{1,64}")
_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")
_PERCENT = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?"
    r"(?P<conv>[diouxXeEfFgGcrsab%])"
)
_BRACES = re.compile(r"\{\{|\}\}|\{(?P<key>\d*|[A-Za-z_]\w*)\}")

_FRAME_STRINGS = (
    "filename",
    "abs_path",
    "function",
    "raw_function",
    "module",
    "package",
    "platform",
    "context_line",
    "instruction_addr",
)
_FRAME_INTS = ("lineno", "colno")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})


class InvalidEvent(ValueError):
    """The payload cannot be an event at all (answered with HTTP 400)."""

    status = 400
    code = "invalid_event"


def clean_event_id(value: object) -> str | None:
    """The canonical form of an event id, or None if ``value`` is not one.

    Exposed so the ingest API can answer ``{"id": ...}`` with exactly the id
    the worker will store: it passes its choice back in as ``event_id``.
    """
    if type(value) is not str:
        return None
    text = value.strip().replace("-", "").lower()
    return text if len(text) == 32 and _HEX32.fullmatch(text) else None


def normalize_event(
    raw: dict[str, Any],
    *,
    received: float,
    client_ip: str | None,
    user_agent: str | None,
    sdk_hint: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> Event:
    """Validate, coerce and enrich one event; see the module docstring for the result."""
    if not isinstance(raw, dict):
        raise InvalidEvent(f"event must be a JSON object, got {_kind(raw)}")
    errors = _incoming_errors(raw.get("errors"))
    out: Event = {}

    eid = clean_event_id(event_id) or clean_event_id(raw.get("event_id"))
    if eid is None:
        if raw.get("event_id") is not None:
            _error(errors, "invalid_data", "event_id", "expected 32 hex digits", raw["event_id"])
        eid = uuid.uuid4().hex
    out["event_id"] = eid
    out["timestamp"] = _timestamp(raw.get("timestamp"), received, errors)
    out["received"] = received
    out["level"] = _level(raw.get("level"), errors)
    platform = _platform(raw.get("platform"), errors)
    out["platform"] = platform

    for name, (limit, deny) in _SCALARS.items():
        value = raw.get(name)
        if value is not None:
            text = _short_string(value, name, limit, deny, errors)
            if text:
                out[name] = text

    logentry = _logentry(raw, errors)
    if logentry is not None:
        out["logentry"] = logentry

    exception = _values(raw.get("exception"), "exception", _exception, errors, MAX_EXCEPTIONS)
    if exception is not None:
        out["exception"] = exception
    threads = _values(raw.get("threads"), "threads", _thread, errors, MAX_THREADS)
    if threads is not None:
        out["threads"] = threads
    crumbs = _values(raw.get("breadcrumbs"), "breadcrumbs", _same_dict, errors, MAX_BREADCRUMBS)
    if crumbs is not None:
        out["breadcrumbs"] = crumbs
    if raw.get("stacktrace") is not None:
        stacktrace = _stacktrace(raw["stacktrace"], "stacktrace", errors)
        if stacktrace is not None:
            out["stacktrace"] = stacktrace

    out["tags"] = _tags(raw.get("tags"), errors)
    for name in _DICTS:
        value = raw.get(name)
        if isinstance(value, dict):
            if value:
                out[name] = value
        elif value is not None:
            _error(errors, "invalid_data", name, "expected an object")
    contexts = out.get("contexts")
    if contexts is not None and not all(isinstance(v, dict) for v in contexts.values()):
        contexts = {k: v for k, v in contexts.items() if isinstance(v, dict)}
        if contexts:
            out["contexts"] = contexts
        else:
            del out["contexts"]
        _error(errors, "invalid_data", "contexts", "dropped contexts that are not objects")

    fingerprint = _fingerprint(raw.get("fingerprint"), errors)
    if fingerprint:
        out["fingerprint"] = fingerprint

    sdk = _sdk(raw.get("sdk"), errors) or _sdk(sdk_hint, None)
    if sdk is not None:
        out["sdk"] = sdk
    user = _user(raw.get("user"), out, platform, client_ip, errors)
    if user:
        out["user"] = user

    out["errors"] = errors
    out["ingest"] = {"client_ip": client_ip, "user_agent": user_agent}
    return out


# -- helpers ---------------------------------------------------------------------------


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _error(
    errors: Errors, kind: str, name: str, reason: str | None = None, value: object = None
) -> None:
    if len(errors) >= MAX_ERRORS:
        return
    entry: dict[str, Any] = {"type": kind, "name": name}
    if reason:
        entry["reason"] = reason
    if value is not None:
        text = _to_str(value)
        entry["value"] = text[:200] if text is not None else _kind(value)
    errors.append(entry)


def _incoming_errors(value: object) -> Errors:
    """Keep earlier processing errors so that normalizing twice changes nothing."""
    if not isinstance(value, list):
        return []
    kept = [e for e in value if isinstance(e, dict) and type(e.get("type")) is str]
    return kept[:MAX_ERRORS]


def _to_str(value: object) -> str | None:
    """A scalar as text; None for containers and values without a sane text form."""
    if type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # more digits than int->str allows
            return None
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str):
        return str(value)
    return None


def _short_string(value: object, name: str, limit: int, deny: str, errors: Errors) -> str | None:
    text = _to_str(value)
    if text is None:
        _error(errors, "invalid_data", name, f"expected a string, got {_kind(value)}")
        return None
    text = text.strip()
    if any(c in text for c in deny):
        _error(errors, "invalid_data", name, "contains a forbidden character", text)
        return None
    if len(text) > limit:
        _error(errors, "value_too_long", name, f"truncated to {limit} characters")
        text = text[:limit].rstrip()
    return text


def _timestamp(value: object, received: float, errors: Errors) -> float:
    if value is None:
        return received
    ts = _parse_timestamp(value)
    if ts is None:
        _error(errors, "invalid_data", "timestamp", "expected RFC 3339 or unix seconds", value)
        return received
    if ts > received + MAX_SECS_IN_FUTURE:
        _error(errors, "future_timestamp", "timestamp", None, value)
        return received
    if ts < received - MAX_SECS_IN_PAST:
        _error(errors, "past_timestamp", "timestamp", None, value)
        return received
    return ts


def _parse_timestamp(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            ts = float(value)
        except OverflowError:
            return None
        return ts if math.isfinite(ts) else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text:
        return None
    if text[0] in "+-.0123456789" and len(text) < 32:
        try:
            ts = float(text)
        except ValueError:
            pass
        else:
            return ts if math.isfinite(ts) else None
    if len(text) > 64:
        return None
    text = _LONG_FRACTION.sub(r"\1", text.upper())
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def _level(value: object, errors: Errors) -> str:
    if value is None:
        return "error"
    if type(value) is str:
        name = value.strip().lower()
        name = _LEVEL_ALIASES.get(name, name)
        if name in fields.LEVELS:
            return name
    elif type(value) is int and value in _LEVEL_NUMBERS:
        return _LEVEL_NUMBERS[value]
    _error(errors, "invalid_data", "level", "unknown level, using error", value)
    return "error"


def _platform(value: object, errors: Errors) -> str:
    if value is None:
        return "other"
    if type(value) is str:
        name = value.strip().lower()
        if _PLATFORM.fullmatch(name):
            return name
    _error(errors, "invalid_data", "platform", "unknown platform, using other", value)
    return "other"


# -- message ---------------------------------------------------------------------------


def _logentry(raw: Event, errors: Errors) -> dict[str, Any] | None:
    entry = raw.get("logentry")
    if entry is None:
        entry = raw.get("sentry.interfaces.Message")
    message = raw.get("message")
    if entry is None and isinstance(message, dict):
        entry, message = message, None
    if entry is not None:
        if isinstance(entry, dict):
            result = _clean_logentry(entry, errors)
            if result is not None:
                return result
        elif (text := _to_str(entry)) is not None:
            if text:  # "" is no message, as for ``message`` below (and as a replay reads it)
                return {"formatted": _cap_message(text, "logentry.formatted", errors)}
        else:
            _error(errors, "invalid_data", "logentry", f"expected an object, got {_kind(entry)}")
    if message is not None:
        text = _to_str(message)
        if text is None:
            _error(errors, "invalid_data", "message", f"expected a string, got {_kind(message)}")
        elif text:
            return {"formatted": _cap_message(text, "logentry.formatted", errors)}
    return None


def _clean_logentry(entry: dict[str, Any], errors: Errors) -> dict[str, Any] | None:
    template = _to_str(entry.get("message"))
    formatted = _to_str(entry.get("formatted"))
    params = entry.get("params")
    if params is not None and not isinstance(params, list | dict):
        _error(errors, "invalid_data", "logentry.params", "expected an array or object")
        params = None
    if not template and not formatted:
        _error(errors, "invalid_data", "logentry", "has neither formatted nor message")
        return None
    if template:
        template = _cap_message(template, "logentry.message", errors)
    if not formatted:
        formatted = format_params(template, params) if params else template
    result: dict[str, Any] = {"formatted": _cap_message(formatted, "logentry.formatted", errors)}
    if template:
        result["message"] = template
    if params:
        result["params"] = params
    return result


def _cap_message(text: str, name: str, errors: Errors) -> str:
    if len(text) <= MAX_MESSAGE:
        return text
    _error(errors, "value_too_long", name, f"truncated to {MAX_MESSAGE} characters")
    return text[:MAX_MESSAGE]


def format_params(template: str, params: list[Any] | dict[str, Any]) -> str:
    """Fill ``%s``-style (or, without ``%``, ``{}``-style) placeholders without ever raising.

    Python's ``%`` and ``str.format`` are not safe on SDK-supplied templates
    (``%999999999s`` allocates gigabytes, ``{0.__class__}`` walks attributes),
    so placeholders are substituted by hand and width/precision are ignored.
    A placeholder without a matching parameter is left as written.
    """
    positional = params if isinstance(params, list) else []
    named = params if isinstance(params, dict) else {}
    index = 0
    size = len(template)

    def value(key: str | None, original: str) -> str:
        nonlocal index, size
        if size > MAX_MESSAGE:
            return original
        if key is not None:
            if key.isdigit():
                pos = int(key)
                found = pos < len(positional)
                param = positional[pos] if found else None
            else:
                found = key in named
                param = named.get(key)
        else:
            found = index < len(positional)
            param = positional[index] if found else None
            index += 1
        if not found:
            return original
        text = _param_str(param)
        size += len(text)
        return text

    def percent(m: re.Match[str]) -> str:
        if m.group("conv") == "%":
            return "%"
        return value(m.group("key"), m.group(0))

    def braces(m: re.Match[str]) -> str:
        whole = m.group(0)
        if whole in ("{{", "}}"):
            return whole[0]
        return value(m.group("key") or None, whole)

    if "%" in template:
        return _PERCENT.sub(percent, template)[:MAX_MESSAGE]
    return _BRACES.sub(braces, template)[:MAX_MESSAGE]


def _param_str(param: object) -> str:
    if param is None:
        return "null"
    text = _to_str(param)
    if text is not None:
        return text[:MAX_MESSAGE]
    try:
        return orjson.dumps(param).decode()[:MAX_MESSAGE]
    except (TypeError, ValueError, RecursionError):
        return "<unprintable>"


# -- exceptions, threads, stack traces -------------------------------------------------


def _values(
    value: object, name: str, clean: Any, errors: Errors, most: int
) -> dict[str, Any] | None:
    """``{"values": [...]}`` from the interface, a bare list, or (legacy) one object; of
    more than ``most`` entries, the first and the last ``most // 2`` stay."""
    if value is None:
        return None
    if isinstance(value, dict):
        items = value.get("values") if "values" in value else [value]
        if items is None:
            return None
    else:
        items = value
    if not isinstance(items, list):
        _error(errors, "invalid_data", name, f"expected a list, got {_kind(items)}")
        return None
    if len(items) > most:
        half = most // 2
        _error(errors, "too_many", name, f"kept the first and last {half} of {len(items)}")
        items = items[:half] + items[-half:]
    out = []
    dropped = 0
    for item in items:
        cleaned = clean(item, name, errors) if isinstance(item, dict) else None
        if cleaned is None:
            dropped += 1
        else:
            out.append(cleaned)
    if dropped:
        _error(errors, "invalid_data", name, f"dropped {dropped} invalid entries")
    return {"values": out} if out else None


def _same_dict(item: dict[str, Any], name: str, errors: Errors) -> dict[str, Any]:
    return item


def _exception(exc: dict[str, Any], name: str, errors: Errors) -> dict[str, Any] | None:
    out = dict(exc)
    for key in ("type", "value", "module"):
        value = exc.get(key)
        if type(value) is str:
            continue
        if value is None:
            out.pop(key, None)
            continue
        text = _to_str(value)
        if text is None:
            del out[key]
            _error(
                errors, "invalid_data", f"{name}.{key}", f"expected a string, got {_kind(value)}"
            )
        else:
            out[key] = text
    value = out.get("value")
    if value is not None and len(value) > MAX_MESSAGE:
        out["value"] = value[:MAX_MESSAGE]
    mechanism = exc.get("mechanism")
    if mechanism is not None and not isinstance(mechanism, dict):
        del out["mechanism"]
        _error(errors, "invalid_data", f"{name}.mechanism", "expected an object")
    if exc.get("stacktrace") is not None:
        stacktrace = _stacktrace(exc["stacktrace"], f"{name}.stacktrace", errors)
        if stacktrace is None:
            del out["stacktrace"]
        else:
            out["stacktrace"] = stacktrace
    if not out.get("type") and not out.get("value") and "stacktrace" not in out:
        return None
    return out


def _thread(thread: dict[str, Any], name: str, errors: Errors) -> dict[str, Any]:
    if thread.get("stacktrace") is None:
        return thread
    out = dict(thread)
    stacktrace = _stacktrace(thread["stacktrace"], f"{name}.stacktrace", errors)
    if stacktrace is None:
        del out["stacktrace"]
    else:
        out["stacktrace"] = stacktrace
    return out


def _stacktrace(value: object, name: str, errors: Errors) -> dict[str, Any] | None:
    if not isinstance(value, dict) or not isinstance(frames := value.get("frames"), list):
        _error(errors, "invalid_data", name, "expected an object with a frames list")
        return None
    cleaned = [_frame(f) for f in frames if isinstance(f, dict)]
    if len(cleaned) != len(frames):
        _error(errors, "invalid_data", f"{name}.frames", "dropped frames that are not objects")
    elif all(a is b for a, b in zip(cleaned, frames, strict=True)):
        return value
    out = dict(value)
    out["frames"] = cleaned
    return out


def _frame(frame: dict[str, Any]) -> dict[str, Any]:
    """The frame itself when it is already clean (the common case), else a repaired copy."""
    fixed: dict[str, Any] | None = None
    for key, kind, convert in _FRAME_FIELDS:
        value = frame.get(key)
        if type(value) is kind or (value is None and key not in frame):
            continue
        if fixed is None:
            fixed = dict(frame)
        clean = None if value is None else convert(value)
        if clean is None:
            del fixed[key]
        else:
            fixed[key] = clean
    if "in_app" in frame and type(frame["in_app"]) is not bool:
        if fixed is None:
            fixed = dict(frame)
        flag = _to_bool(frame["in_app"])
        if flag is None:
            del fixed["in_app"]
        else:
            fixed["in_app"] = flag
    return frame if fixed is None else fixed


def _to_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return int(value) if abs(value) < 2**53 else None
    if isinstance(value, str) and len(value) < 16 and value.strip().isdecimal():
        return int(value)
    return None


# Frame fields, their type and how a value of another type is repaired (None: dropped).
_FRAME_FIELDS: tuple[tuple[str, type, Callable[[object], object]], ...] = (
    *((key, str, _to_str) for key in _FRAME_STRINGS),
    *((key, int, _to_int) for key in _FRAME_INTS),
)


def _to_bool(value: object) -> bool | None:
    if isinstance(value, int | float):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return None


# -- tags, fingerprint, sdk, user ------------------------------------------------------


def _tags(value: object, errors: Errors) -> dict[str, str]:
    """Tags as ``{key: value}``; the first occurrence of a key wins, like Relay."""
    if value is None:
        return {}
    if isinstance(value, dict):
        pairs: Any = value.items()
    elif isinstance(value, list):
        pairs = value
    else:
        _error(errors, "invalid_data", "tags", f"expected an object or pairs, got {_kind(value)}")
        return {}
    out: dict[str, str] = {}
    dropped = truncated = over = 0
    for pair in pairs:
        if len(out) >= MAX_TAGS:
            over += 1
            continue
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            dropped += 1
            continue
        key, val = _to_str(pair[0]), _to_str(pair[1])
        if key is None or val is None or not (key := key.strip()):
            dropped += 1
            continue
        if len(key) > MAX_TAG or len(val) > MAX_TAG:
            truncated += 1
            key, val = key[:MAX_TAG], val[:MAX_TAG]
        out.setdefault(key, val)
    if dropped:
        _error(errors, "invalid_data", "tags", f"dropped {dropped} invalid tags")
    if truncated:
        _error(errors, "value_too_long", "tags", f"truncated {truncated} tags to {MAX_TAG} chars")
    if over:
        _error(errors, "too_many", "tags", f"dropped {over} tags past the first {MAX_TAGS}")
    return out


def _fingerprint(value: object, errors: Errors) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        _error(errors, "invalid_data", "fingerprint", "expected a list of strings")
        return None
    out = [text for text in map(_to_str, value) if text is not None]
    if len(out) != len(value):
        _error(errors, "invalid_data", "fingerprint", "dropped entries that are not strings")
    return out


def _sdk(value: object, errors: Errors | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        if errors is not None:
            _error(errors, "invalid_data", "sdk", "expected an object")
        return None
    name, version = _to_str(value.get("name")), _to_str(value.get("version"))
    if not name:
        if errors is not None:
            _error(errors, "invalid_data", "sdk", "sdk needs a name")
        return None
    if name is value.get("name") and version is value.get("version"):
        return value
    out = dict(value)
    out["name"] = name
    if version is None:
        out.pop("version", None)
    else:
        out["version"] = version
    return out


def _user(
    value: object, event: Event, platform: str, client_ip: str | None, errors: Errors
) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        _error(errors, "invalid_data", "user", f"expected an object, got {_kind(value)}")
        value = None
    user: dict[str, Any] = dict(value) if value else {}
    for key, most in _USER_CAPS.items():
        item = user.get(key)
        if item is None:
            continue
        text = item if type(item) is str else _to_str(item)
        if text is None:
            del user[key]
            _error(errors, "invalid_data", f"user.{key}", f"expected a string, got {_kind(item)}")
            continue
        if len(text) > most:
            text = text[:most]
            _error(errors, "value_too_long", f"user.{key}", f"truncated to {most} chars")
        user[key] = text

    settings = event.get("sdk", {}).get("settings")
    infer = settings.get("infer_ip") if isinstance(settings, dict) else None
    ip = user.get("ip_address")
    if ip is not None and ip.strip() == "{{auto}}":
        if client_ip and infer != "never":
            user["ip_address"] = client_ip
        else:
            del user["ip_address"]
    elif ip is None:
        env = event.get("request", {}).get("env")
        remote = env.get("REMOTE_ADDR") if isinstance(env, dict) else None
        if type(remote) is str and remote:
            user["ip_address"] = remote
        elif client_ip and (infer == "auto" or (infer is None and platform in _IP_PLATFORMS)):
            user["ip_address"] = client_ip
    return user
