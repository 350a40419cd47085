"""Grouping of events produced by the real Python SDK (and a few hand-built JS/native ones)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.transport import Transport

from app.grouping import Grouping, default_components, group, mask
from app.normalize import normalize_event

HEX32 = re.compile(r"[0-9a-f]{32}")


class ListTransport(Transport):
    """Keeps every event exactly as it would go over the wire (JSON round trip)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        if envelope.get_event() is None:
            return
        for item in envelope.items:
            if item.type == "event":
                self.events.append(json.loads(item.payload.get_bytes()))


@pytest.fixture
def sdk() -> Iterator[Callable[..., ListTransport]]:
    def start(**options: Any) -> ListTransport:
        transport = ListTransport()
        sentry_sdk.init(
            dsn="http://public@localhost/1",
            transport=transport,
            default_integrations=False,
            auto_enabling_integrations=False,
            integrations=[LoggingIntegration(level=None, event_level=logging.ERROR)],
            **options,
        )
        return transport

    yield start
    sentry_sdk.get_client().close()


@pytest.fixture
def transport(sdk: Callable[..., ListTransport]) -> ListTransport:
    return sdk()


def process(raw: dict[str, Any]) -> dict[str, Any]:
    return normalize_event(raw, received=time.time(), client_ip="203.0.113.5", user_agent=None)


def captured(transport: ListTransport, fn: Callable[..., None], *args: Any) -> dict[str, Any]:
    """Run fn, capture what it raises with the SDK, return the processed event."""
    try:
        fn(*args)
    except Exception:
        sentry_sdk.capture_exception()
    else:
        raise AssertionError(f"{fn.__name__} did not raise")
    return process(transport.events[-1])


def grouped(transport: ListTransport, fn: Callable[..., None], *args: Any) -> Grouping:
    return group(captured(transport, fn, *args))


# -- code that fails -------------------------------------------------------------------


def fail_at(where: str) -> None:
    if where == "top":
        raise ValueError("invalid order 1")
    raise ValueError(f"invalid order {where}, giving up")


def fail_with(kind: str) -> None:
    if kind == "value":
        raise ValueError("bad")
    raise KeyError("bad")


def fail_elsewhere() -> None:
    raise ValueError("invalid order 1")


def recurse(depth: int) -> None:
    if depth == 0:
        raise ValueError("bottom")
    recurse(depth - 1)


def fail_chained(cause: type[Exception]) -> None:
    try:
        raise cause("inner")
    except Exception as exc:
        raise RuntimeError("outer") from exc


# -- exceptions ------------------------------------------------------------------------


def test_same_exception_from_two_lines_of_one_function_groups_together(
    transport: ListTransport,
) -> None:
    first = captured(transport, fail_at, "top")
    second = captured(transport, fail_at, "bottom")
    first_line = first["exception"]["values"][-1]["stacktrace"]["frames"][-1]["lineno"]
    second_line = second["exception"]["values"][-1]["stacktrace"]["frames"][-1]["lineno"]
    assert first_line != second_line
    assert group(first).fingerprint == group(second).fingerprint
    assert HEX32.fullmatch(group(first).fingerprint)


def test_different_exception_types_split(transport: ListTransport) -> None:
    value = grouped(transport, fail_with, "value")
    key = grouped(transport, fail_with, "key")
    assert value.fingerprint != key.fingerprint
    assert "type:ValueError" in value.components and "type:KeyError" in key.components


def test_same_type_in_another_function_splits(transport: ListTransport) -> None:
    assert (
        grouped(transport, fail_at, "top").fingerprint
        != grouped(transport, fail_elsewhere).fingerprint
    )


def test_recursion_depth_does_not_split(transport: ListTransport) -> None:
    shallow = captured(transport, recurse, 2)
    deep = captured(transport, recurse, 6)
    frames = lambda e: e["exception"]["values"][-1]["stacktrace"]["frames"]  # noqa: E731
    assert len(frames(shallow)) != len(frames(deep))
    assert group(shallow).fingerprint == group(deep).fingerprint


def test_every_exception_of_a_chain_contributes(transport: ListTransport) -> None:
    from_key = grouped(transport, fail_chained, KeyError)
    from_type = grouped(transport, fail_chained, TypeError)
    assert from_key.fingerprint != from_type.fingerprint
    assert [c for c in from_key.components if c.startswith("type:")] == [
        "type:KeyError",
        "type:RuntimeError",
    ]
    assert from_key.title == "RuntimeError: outer"  # the raised one, not the cause


def test_frames_use_module_and_function_never_line_or_value(transport: ListTransport) -> None:
    result = grouped(transport, fail_at, "top")
    frames = [c for c in result.components if c.startswith("frame:")]
    assert frames[-1] == f"frame:{fail_at.__module__}:fail_at"
    assert not any("invalid order" in c for c in result.components)
    assert not any(re.search(r"\d", c) for c in frames)


def test_title_and_culprit_follow_sentry(transport: ListTransport) -> None:
    result = grouped(transport, fail_at, "top")
    assert result.title == "ValueError: invalid order 1"
    assert result.culprit == f"{fail_at.__module__} in fail_at"


def test_title_is_truncated_to_200() -> None:
    event = process({"exception": [{"type": "E", "value": "x" * 500}]})
    assert group(event).title == ("E: " + "x" * 500)[:200]


# -- messages --------------------------------------------------------------------------


def test_messages_differing_in_numbers_group_together(transport: ListTransport) -> None:
    sentry_sdk.capture_message("order 1231 failed")
    sentry_sdk.capture_message("order 99 failed")
    sentry_sdk.capture_message("payment 99 failed")
    first, second, other = (group(process(e)) for e in transport.events)
    assert first.fingerprint == second.fingerprint
    assert first.fingerprint != other.fingerprint
    assert first.components == ["message:order <int> failed"]
    assert (first.title, second.title) == ("order 1231 failed", "order 99 failed")


def test_logging_events_group_by_template(transport: ListTransport) -> None:
    log = logging.getLogger("stacksift.test")
    log.error("order %s failed for %s", 1231, "ann")
    log.error("order %s failed for %s", "A-7", "bob")
    first, second = (process(e) for e in transport.events)
    assert first["logentry"]["formatted"] == "order 1231 failed for ann"
    assert group(first).fingerprint == group(second).fingerprint
    assert group(first).title == "order 1231 failed for ann"


def test_message_with_attached_stack_groups_by_stack(sdk: Callable[..., ListTransport]) -> None:
    transport = sdk(attach_stacktrace=True)

    def here() -> None:
        sentry_sdk.capture_message("same text")

    def there() -> None:
        sentry_sdk.capture_message("same text")

    here()
    there()
    first, second = (group(process(e)) for e in transport.events)
    assert first.fingerprint != second.fingerprint
    assert any(c.endswith(":here") for c in first.components)


def test_message_uses_first_two_lines_masked() -> None:
    one = process({"message": "job 17 failed\n\nretry 3 of 5\nlog: 12:00:01 abc"})
    two = process({"message": "job 18 failed\nretry 4 of 5\nlog: totally different"})
    assert group(one).components == ["message:job <int> failed\nretry <int> of <int>\n..."]
    assert group(one).fingerprint == group(two).fingerprint
    assert group(one).title == "job 17 failed"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("mail ann@example.com now", "mail <email> now"),
        ("GET https://api.example.com/v1/x?id=3 failed", "GET <url> failed"),
        ("from 10.1.2.3 and fe80::1", "from <ip> and <ip>"),
        ("id 550e8400-e29b-41d4-a716-446655440000", "id <uuid>"),
        ("at 2024-05-01T10:00:00.123Z", "at <date>"),
        ("ptr 0x7ffd12ab", "ptr <hex>"),
        ("commit da39a3ee5e6b4b0d3255bfef95601890afd80709", "commit <hex>"),
        ("took 1.25 s, -3 left", "took <float> s, <int> left"),
        ("key='abc' other=\"d e\" ok=true", "key=<quoted_str> other=<quoted_str> ok=<bool>"),
        ("can't find 'x' in Foo::Bar", "can't find <quoted_str> in Foo::Bar"),
        ("user42 and v2 stay", "user42 and v2 stay"),
    ],
)
def test_mask(text: str, masked: str) -> None:
    assert mask(text) == masked


# -- custom fingerprints ---------------------------------------------------------------


def test_custom_fingerprint_wins(transport: ListTransport) -> None:
    with sentry_sdk.new_scope() as scope:
        scope.fingerprint = ["checkout-timeout"]
        value = grouped(transport, fail_with, "value")
        key = grouped(transport, fail_with, "key")
    assert value.fingerprint == key.fingerprint
    assert value.components == ["fingerprint:checkout-timeout"]
    assert value.title == "ValueError: bad"  # title still describes the event


def test_default_variable_extends_default_grouping(transport: ListTransport) -> None:
    plain = grouped(transport, fail_with, "value")
    results = {}
    for fp in (["{{ default }}", "eu"], ["{{default}}", "us"], ["{{ default }}"]):
        with sentry_sdk.new_scope() as scope:
            scope.fingerprint = fp
            results[tuple(fp)] = (
                grouped(transport, fail_with, "value"),
                grouped(transport, fail_with, "key"),
            )
    eu, us, only = results.values()
    assert eu[0].fingerprint != us[0].fingerprint
    assert plain.fingerprint not in (eu[0].fingerprint, us[0].fingerprint)
    assert eu[0].fingerprint != eu[1].fingerprint  # default part still splits by type
    assert only[0] == plain  # ["{{ default }}"] alone is default grouping


def test_fingerprint_variables() -> None:
    base = {"fingerprint": ["{{ transaction }}", "{{ type }}"], "exception": [{"type": "E"}]}
    a = group(process({**base, "transaction": "/checkout"}))
    b = group(process({**base, "transaction": "/cart"}))
    assert a.components == ["transaction:/checkout", "type:E"]
    assert a.fingerprint != b.fingerprint


# -- hand-built events -----------------------------------------------------------------


def js_event(function: str, bundle: str, line: int) -> dict[str, Any]:
    frames = [
        {"filename": f"https://cdn.example.com/static/{bundle}?v=1", "function": function,
         "lineno": line, "colno": line * 3, "in_app": True},
        {"filename": "app:///src/cart.js", "function": "Object.submitCart",
         "lineno": line + 1, "in_app": True},
    ]  # fmt: skip
    return process({
        "platform": "javascript",
        "exception": {"values": [{"type": "TypeError", "value": "x is undefined",
                                  "stacktrace": {"frames": frames}}]},
    })  # fmt: skip


def test_js_anonymous_functions_and_bundle_hashes_are_ignored() -> None:
    a = group(js_event("<anonymous>", "main.3f9a1c2b.js", 10))
    b = group(js_event("Object.<anonymous>", "main.77aa0e91.js", 99))
    assert a.fingerprint == b.fingerprint
    assert a.components[-2:] == ["frame:main.<hash>.js:", "frame:cart.js:submitCart"]
    assert a.culprit == "app:///src/cart.js in Object.submitCart"
    named = group(js_event("renderCart", "main.3f9a1c2b.js", 10))
    assert named.fingerprint != a.fingerprint


def system_event(functions: list[str], value: str, in_app: bool = False) -> dict[str, Any]:
    frames = [{"module": "lib.core", "function": f, "lineno": i, "in_app": in_app}
              for i, f in enumerate(functions)]  # fmt: skip
    return process({"exception": [{"type": "Boom", "value": value,
                                    "stacktrace": {"frames": frames}}]})  # fmt: skip


def test_all_frames_count_when_none_is_in_app() -> None:
    a = group(system_event(["main", "run"], "order 1"))
    b = group(system_event(["main", "stop"], "order 1"))
    assert a.fingerprint != b.fingerprint
    assert a.components == ["type:Boom", "frame:lib.core:main", "frame:lib.core:run"]


def test_value_counts_only_without_contributing_frames() -> None:
    one, other = group(system_event(["f"], "one thing")), group(system_event(["f"], "other"))
    assert one.fingerprint == other.fingerprint
    assert not any(c.startswith("value:") for c in one.components)
    no_stack = [group(process({"exception": {"type": "Boom", "value": v}})) for v in
                ("order 12 failed", "order 13 failed", "payment failed")]  # fmt: skip
    assert no_stack[0].fingerprint == no_stack[1].fingerprint != no_stack[2].fingerprint
    assert no_stack[0].components == ["type:Boom", "value:order <int> failed"]


def test_culprit_falls_back_to_transaction() -> None:
    event = process({"transaction": "/api/orders", "exception": [{"type": "E", "value": "v"}]})
    assert group(event).culprit == "/api/orders"
    assert group(process({"message": "hi"})).culprit == ""


def test_single_thread_stack_groups_message_events() -> None:
    def event(fn: str) -> dict[str, Any]:
        stack = {"frames": [{"function": fn, "filename": "/srv/App/Main.py", "in_app": True}]}
        return process({"message": "hello", "threads": [{"id": 1, "stacktrace": stack}]})

    assert group(event("a")).components == ["frame:main.py:a"]
    assert group(event("a")).fingerprint != group(event("b")).fingerprint


def test_event_with_nothing_has_a_stable_fallback() -> None:
    a, b = group(process({})), group(process({"level": "info"}))
    assert a.fingerprint == b.fingerprint and a.components == ["fallback"]
    assert a.title == "<unlabeled event>"


def test_default_components_is_what_default_hashes(transport: ListTransport) -> None:
    event = captured(transport, fail_at, "top")
    assert default_components(event) == group(event).components
