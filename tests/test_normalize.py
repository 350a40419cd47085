"""normalize_event: Sentry-compatible coercions, clamping, and never raising on JSON input."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import fields
from app.grouping import group
from app.normalize import (
    MAX_MESSAGE,
    MAX_TAGS,
    InvalidEvent,
    clean_event_id,
    format_params,
    normalize_event,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()
HEX32 = re.compile(r"[0-9a-f]{32}")


def norm(raw: Any, **kwargs: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"received": NOW, "client_ip": "198.51.100.7", "user_agent": "ua/1"}
    options.update(kwargs)
    return normalize_event(raw, **options)


def error_types(event: dict[str, Any], name: str) -> list[str]:
    return [e["type"] for e in event["errors"] if e["name"] == name]


# -- top level -------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [[], "event", None, 3, 1.5, True])
def test_non_object_is_invalid_event(raw: Any) -> None:
    with pytest.raises(InvalidEvent, match="event must be a JSON object") as info:
        norm(raw)
    assert isinstance(info.value, ValueError)
    assert (info.value.status, info.value.code) == (400, "invalid_event")


def test_defaults_and_server_metadata() -> None:
    event = norm({}, client_ip="192.0.2.1", user_agent="sentry.python/2.0")
    assert event["level"] == "error" and event["platform"] == "other"
    assert event["timestamp"] == event["received"] == NOW
    assert event["ingest"] == {"client_ip": "192.0.2.1", "user_agent": "sentry.python/2.0"}
    assert event["tags"] == {} and event["errors"] == []
    assert HEX32.fullmatch(event["event_id"])
    assert norm({})["event_id"] != event["event_id"]


def test_unknown_top_level_keys_are_dropped() -> None:
    event = norm({"level": "info", "my_custom_key": 1, "culprit": "old style"})
    assert "my_custom_key" not in event and "culprit" not in event


# -- event_id --------------------------------------------------------------------------


def test_event_id_argument_wins_and_ids_are_canonical() -> None:
    dashed = "550E8400-E29B-41D4-A716-446655440000"
    assert norm({"event_id": dashed})["event_id"] == "550e8400e29b41d4a716446655440000"
    header = "a" * 32
    assert norm({"event_id": "b" * 32}, event_id=header)["event_id"] == header
    assert norm({"event_id": "b" * 32}, event_id="nonsense")["event_id"] == "b" * 32
    assert clean_event_id(header.upper()) == header
    assert clean_event_id("g" * 32) is None and clean_event_id(123) is None


def test_invalid_event_id_is_replaced_and_reported() -> None:
    event = norm({"event_id": "not-an-id"})
    assert HEX32.fullmatch(event["event_id"])
    assert error_types(event, "event_id") == ["invalid_data"]


# -- timestamp -------------------------------------------------------------------------

ISO_CASES = [
    ("2024-05-01T11:59:00Z", NOW - 60),
    ("2024-05-01T11:59:00.250Z", NOW - 59.75),
    ("2024-05-01T11:59:00.123456789Z", NOW - 60 + 0.123456),
    ("2024-05-01T13:59:00+02:00", NOW - 60),
    ("2024-05-01T11:59:00", NOW - 60),
    ("2024-05-01 11:59:00", NOW - 60),
    ("2024-05-01t11:59:00z", NOW - 60),
    (NOW - 60, NOW - 60),
    (int(NOW) - 60, NOW - 60),
    (str(NOW - 60.5), NOW - 60.5),
]


@pytest.mark.parametrize(("value", "expected"), ISO_CASES)
def test_timestamp_forms(value: Any, expected: float) -> None:
    event = norm({"timestamp": value})
    assert event["timestamp"] == pytest.approx(expected, abs=1e-6)
    assert event["errors"] == []


@pytest.mark.parametrize(
    ("offset", "kept", "error"),
    [
        (59, True, None),
        (61, False, "future_timestamp"),
        (-timedelta(days=29).total_seconds(), True, None),
        (-timedelta(days=31).total_seconds(), False, "past_timestamp"),
    ],
)
def test_timestamp_clamping(offset: float, kept: bool, error: str | None) -> None:
    event = norm({"timestamp": NOW + offset})
    assert event["timestamp"] == (NOW + offset if kept else NOW)
    assert error_types(event, "timestamp") == ([error] if error else [])


@pytest.mark.parametrize("value", ["yesterday", "", [], {}, True, float("nan"), "1e999"])
def test_unparseable_timestamp_is_received_time(value: Any) -> None:
    event = norm({"timestamp": value})
    assert event["timestamp"] == NOW
    assert error_types(event, "timestamp") == ["invalid_data"]


# -- level, platform, short strings ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "level"),
    [("warn", "warning"), ("WARN", "warning"), ("critical", "fatal"), ("log", "info"),
     ("err", "error"), (" Info ", "info"), ("debug", "debug"), (30, "warning")],
)  # fmt: skip
def test_level_aliases(value: Any, level: str) -> None:
    event = norm({"level": value})
    assert event["level"] == level and event["errors"] == []


@pytest.mark.parametrize("value", ["verbose", "", 7, ["error"]])
def test_unknown_level_is_error_and_reported(value: Any) -> None:
    event = norm({"level": value})
    assert event["level"] == "error"
    assert error_types(event, "level") == ["invalid_data"]


def test_short_strings_are_trimmed_coerced_capped_or_dropped() -> None:
    event = norm({
        "environment": "  production ", "release": 42, "dist": "", "logger": "x" * 100,
        "server_name": {"no": 1}, "transaction": "/a\nb", "platform": "Python",
    })  # fmt: skip
    assert event["environment"] == "production"
    assert event["release"] == "42"
    assert "dist" not in event
    assert event["logger"] == "x" * 64 and error_types(event, "logger") == ["value_too_long"]
    assert "server_name" not in event and error_types(event, "server_name") == ["invalid_data"]
    assert "transaction" not in event
    assert event["platform"] == "python"
    assert "environment" not in norm({"environment": "prod/eu"})


# -- message ---------------------------------------------------------------------------


def test_message_string_becomes_logentry() -> None:
    assert norm({"message": "hello"})["logentry"] == {"formatted": "hello"}
    assert fields.message(norm({"message": "hello"})) == "hello"


def test_logentry_params_are_formatted() -> None:
    event = norm({"logentry": {"message": "order %s for %(who)s: %d%%", "params": [7, 9]}})
    assert event["logentry"]["formatted"] == "order 7 for %(who)s: 9%"
    assert event["logentry"]["message"] == "order %s for %(who)s: %d%%"
    named = norm({"message": {"message": "hi %(who)s", "params": {"who": "ann"}}})
    assert named["logentry"]["formatted"] == "hi ann"
    braces = norm({"logentry": {"message": "{} of {1} {{x}} {name}", "params": ["a", "b"]}})
    assert braces["logentry"]["formatted"] == "a of b {x} {name}"


def test_sdk_formatted_message_is_kept() -> None:
    entry = {"message": "x %s", "params": [1], "formatted": "x ONE"}
    assert norm({"logentry": entry})["logentry"]["formatted"] == "x ONE"


@pytest.mark.parametrize(
    ("template", "params"),
    [("%999999999s", ["x"]), ("%s %s %s", [1]), ("%d", ["text"]), ("%(a)s", [1]),
     ("{0.__class__}", ["x"]), ("{9}", []), ("%s", [{"deep": [None, 1.5, True]}]), ("%", [1])],
)  # fmt: skip
def test_bad_params_never_raise(template: str, params: Any) -> None:
    text = format_params(template, params)
    assert len(text) <= MAX_MESSAGE
    assert norm({"logentry": {"message": template, "params": params}})["logentry"]["formatted"]


def test_message_is_capped() -> None:
    event = norm({"message": "x" * 10_000})
    assert len(event["logentry"]["formatted"]) == MAX_MESSAGE
    assert error_types(event, "logentry.formatted") == ["value_too_long"]


def test_logentry_without_text_is_dropped() -> None:
    event = norm({"logentry": {"params": [1]}})
    assert "logentry" not in event and error_types(event, "logentry") == ["invalid_data"]


# -- tags ------------------------------------------------------------------------------


def test_tags_from_pairs_and_objects() -> None:
    pairs = norm({"tags": [["browser", "Firefox"], ["n", 3], ["ok", True], ["bad"], 5]})
    assert pairs["tags"] == {"browser": "Firefox", "n": "3", "ok": "true"}
    assert error_types(pairs, "tags") == ["invalid_data"]
    obj = norm({"tags": {"a": 1.5, "b": None, "c": [1], "k" * 300: "v" * 300}})
    assert obj["tags"] == {"a": "1.5", "k" * 200: "v" * 200}
    assert sorted(error_types(obj, "tags")) == ["invalid_data", "value_too_long"]
    assert fields.tags(obj) is obj["tags"]


def test_tags_of_wrong_type_are_dropped() -> None:
    event = norm({"tags": "a:b"})
    assert event["tags"] == {} and error_types(event, "tags") == ["invalid_data"]


# -- interfaces ------------------------------------------------------------------------

EXC = {"type": "ValueError", "value": "bad", "stacktrace": {"frames": [{"function": "f"}]}}


@pytest.mark.parametrize("shape", [{"values": [EXC]}, [EXC], EXC])
def test_exception_shapes(shape: Any) -> None:
    event = norm({"exception": shape})
    assert event["exception"] == {"values": [EXC]}
    assert fields.multi(event, "exception.type") == ["ValueError"]
    assert fields.multi(event, "frame.function") == ["f"]


def test_bad_exception_entries_are_dropped() -> None:
    event = norm({"exception": [EXC, "oops", {}, {"type": 5, "value": None}]})
    assert [e["type"] for e in event["exception"]["values"]] == ["ValueError", "5"]
    assert error_types(event, "exception") == ["invalid_data"]
    assert "exception" not in norm({"exception": [{}]})


def test_frames_are_coerced() -> None:
    frames = [
        {"function": "a", "in_app": "true", "lineno": "12", "colno": 1.0},
        {"function": "b", "in_app": 0, "lineno": "x", "filename": 7},
        {"function": "c", "in_app": "false", "module": ["m"]},
        "not a frame",
    ]
    event = norm({"stacktrace": {"frames": frames}})
    a, b, c = event["stacktrace"]["frames"]
    assert (a["in_app"], a["lineno"], a["colno"]) == (True, 12, 1)
    assert (b["in_app"], "lineno" in b, b["filename"]) == (False, False, "7")
    assert c["in_app"] is False and "module" not in c


def test_clean_frames_are_reused_not_copied() -> None:
    frame = {"function": "f", "lineno": 3, "in_app": True}
    stacktrace = {"frames": [frame]}
    event = norm({"exception": [{"type": "E", "stacktrace": stacktrace}]})
    assert event["exception"]["values"][0]["stacktrace"] is stacktrace


def test_breadcrumbs_and_threads_lists_are_wrapped() -> None:
    event = norm({"breadcrumbs": [{"message": "click"}, 3], "threads": [{"id": 1}]})
    assert event["breadcrumbs"] == {"values": [{"message": "click"}]}
    assert event["threads"] == {"values": [{"id": 1}]}


# -- user, sdk -------------------------------------------------------------------------


def test_auto_ip_is_resolved() -> None:
    event = norm({"user": {"id": 5, "ip_address": "{{auto}}"}}, client_ip="192.0.2.9")
    assert event["user"] == {"id": "5", "ip_address": "192.0.2.9"}
    assert "user" not in norm({"user": {"ip_address": "{{auto}}"}}, client_ip=None)


def test_ip_filled_for_browser_platforms_only() -> None:
    assert norm({"platform": "javascript"})["user"] == {"ip_address": "198.51.100.7"}
    assert "user" not in norm({"platform": "python"})
    explicit = norm({"platform": "cocoa", "user": {"ip_address": "10.0.0.1"}})
    assert explicit["user"]["ip_address"] == "10.0.0.1"
    never = norm(
        {"platform": "javascript", "sdk": {"name": "js", "settings": {"infer_ip": "never"}}}
    )
    assert "user" not in never


def test_sdk_from_event_else_hint() -> None:
    hint = {"name": "sentry.python", "version": "2.0"}
    assert norm({}, sdk_hint=hint)["sdk"] == hint
    own = {"name": "sentry.javascript.browser", "version": "8.1.0", "integrations": ["x"]}
    assert norm({"sdk": own}, sdk_hint=hint)["sdk"] == own
    assert norm({"sdk": "junk"}, sdk_hint=hint)["sdk"] == hint


# -- never raise, whatever the JSON ----------------------------------------------------

KEYS = [
    "event_id", "timestamp", "level", "platform", "message", "logentry", "formatted", "params",
    "exception", "values", "type", "value", "module", "mechanism", "synthetic", "stacktrace",
    "frames", "in_app", "function", "filename", "abs_path", "lineno", "colno", "tags",
    "breadcrumbs", "threads", "crashed", "current", "user", "ip_address", "id", "email", "sdk",
    "name", "version", "settings", "infer_ip", "environment", "release", "dist", "logger",
    "server_name", "transaction", "fingerprint", "contexts", "request", "env", "REMOTE_ADDR",
    "extra", "errors", "sentry.interfaces.Message",
]  # fmt: skip
SPECIAL = ["{{auto}}", "{{ default }}", "{{ type }}", "warn", "2024-05-01T11:59:00Z", "%s %d {}",
           "%(x)s", "javascript", "true", "<anonymous>", "0x1f order 12", "a" * 300]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(SPECIAL)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)
frame = st.dictionaries(st.sampled_from(KEYS[13:24]), json_values, max_size=6) | json_values
stack = st.fixed_dictionaries({}, optional={"frames": st.lists(frame, max_size=5) | json_values})
exception = st.fixed_dictionaries(
    {},
    optional={k: json_values for k in ("type", "value", "module", "mechanism")}
    | {"stacktrace": stack | json_values},
)
shaped = st.fixed_dictionaries(
    {},
    optional={k: json_values for k in KEYS}
    | {
        "exception": st.lists(exception, max_size=3)
        | st.fixed_dictionaries({"values": st.lists(exception, max_size=3)})
        | exception,
        "threads": st.lists(st.fixed_dictionaries({"stacktrace": stack}), max_size=2),
        "stacktrace": stack,
    },
)
events = shaped | st.dictionaries(st.sampled_from(KEYS), json_values, max_size=10)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events, st.sampled_from([None, "192.0.2.1"]), st.none() | json_values)
def test_any_json_normalizes_and_groups(raw: dict[str, Any], ip: str | None, hint: Any) -> None:
    event = norm(raw, client_ip=ip, sdk_hint=hint if isinstance(hint, dict) else None)

    assert HEX32.fullmatch(event["event_id"])
    assert isinstance(event["timestamp"], float) and math.isfinite(event["timestamp"])
    assert event["level"] in fields.LEVELS and isinstance(event["platform"], str)
    assert all(type(k) is str and type(v) is str and len(k) <= 200 and len(v) <= 200
               for k, v in event["tags"].items())  # fmt: skip
    assert all(type(e["type"]) is str for e in event["errors"])
    for exc in fields.exceptions(event):
        assert all(type(exc.get(k)) is str for k in ("type", "value", "module") if k in exc)
    for f in fields.frames(event):
        assert type(f.get("in_app", False)) is bool and type(f.get("lineno", 0)) is int
    encoded = orjson.dumps(event)

    # what storage and search do with it must work too
    fields.text(event)
    for name in fields.SCALAR_FIELDS:
        assert fields.scalar(event, name) is None or isinstance(fields.scalar(event, name), str)
    for name in fields.MULTI_FIELDS:
        fields.multi(event, name)
    result = group(event)
    assert HEX32.fullmatch(result.fingerprint) and result.components
    assert 0 < len(result.title) <= 200 and isinstance(result.culprit, str)

    # processing a processed event changes nothing (replays are safe)
    again = norm(event, client_ip=ip, sdk_hint=hint if isinstance(hint, dict) else None)
    assert orjson.dumps(again) == encoded
    assert group(again) == result


@settings(max_examples=100, deadline=None)
@given(events)
def test_group_never_raises_even_on_raw_input(raw: dict[str, Any]) -> None:
    assert HEX32.fullmatch(group(raw).fingerprint)


def test_counts_a_sender_controls_are_capped() -> None:
    """One event must not buy seconds of processing: tags, exception chains, breadcrumbs
    and threads are capped, user fields truncated, each noted in the event's errors."""
    chain = [{"type": f"E{i}", "value": "v"} for i in range(14_000)]
    event = norm({
        "tags": {f"k{i}": "v" for i in range(40_000)},
        "exception": {"values": chain},
        "breadcrumbs": [{"message": f"b{i}"} for i in range(1_000)],
        "user": {"id": "u" * 10_000, "email": "e" * 1_000 + "@example.com"},
    })
    assert len(event["tags"]) == MAX_TAGS and "k0" in event["tags"]
    types = [v["type"] for v in event["exception"]["values"]]
    assert types == [f"E{i}" for i in range(12)] + [f"E{i}" for i in range(13_988, 14_000)]
    assert len(event["breadcrumbs"]["values"]) == 200
    assert event["breadcrumbs"]["values"][-1]["message"] == "b999"  # the latest stay
    assert len(event["user"]["id"]) == 128 and len(event["user"]["email"]) == 254
    for name in ("tags", "exception", "breadcrumbs", "user.id", "user.email"):
        assert error_types(event, name), name
