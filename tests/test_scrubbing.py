"""Scrubbing of secrets and personal data, on events made by the real sentry-sdk."""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import sentry_sdk
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sentry_sdk.scrubber import EventScrubber

from app.project_settings import ProjectSettings, ScrubbingSettings
from app.scrubbing import FILTERED, InvalidEventError, Scrubber, is_card_number, luhn_ok
from tests.capture import KeepEvents

Event = dict[str, Any]

# Kept far from the raising code: source lines near a frame travel in the event.
SECRETS = ("hunter2-Zq9", "4111 1111 1111 1111", "abc.def", "pgpass-9271")
REQUEST = {
    "url": "https://shop.example.com/pay?token=tok-77aa&step=2",
    "method": "POST",
    "headers": {"Authorization": "Bearer abc.def", "User-Agent": "Mozilla/5.0", "X-Trace": "t1"},
    "cookies": "sessionid=sess-5150; theme=dark",
    "data": {"username": "ada", "password": "hunter2-Zq9", "note": "Bearer abc.def"},
}


# --------------------------------------------------------------------------- SDK events

def sdk_event(fail: Callable[[], None], request: dict[str, Any] | None = None) -> Event:
    """The event the official SDK sends for the exception ``fail`` raises.

    The SDK's own scrubber is emptied so that every secret reaches the server:
    what is tested is *our* scrubbing.
    """
    transport = KeepEvents()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # send_default_pii, as apps use it
        sentry_sdk.init(
            dsn="http://public@127.0.0.1:9/1",
            transport=transport,
            send_default_pii=True,
            include_local_variables=True,
            event_scrubber=EventScrubber(denylist=[], send_default_pii=True),
        )
    try:
        with sentry_sdk.isolation_scope() as scope:
            # A fork of the process scope: without this it carries every breadcrumb the
            # SDK's logging integration took from earlier tests (77 KB events, order-dependent).
            scope.clear_breadcrumbs()
            if request is not None:
                scope.add_event_processor(lambda event, hint: {**event, "request": request})
            scope.set_user({"id": "42", "email": "ada@example.com", "ip_address": "198.51.100.7"})
            scope.set_tag("region", "eu-west-1")
            sentry_sdk.add_breadcrumb(category="auth", message="sent Authorization: Bearer abc.def")
            try:
                fail()
            except Exception as exc:  # noqa: BLE001 - capturing is the point
                sentry_sdk.capture_exception(exc)
    finally:
        sentry_sdk.get_client().close()
    assert len(transport.events) == 1
    return transport.events[0]


class PaymentDeclined(Exception):
    pass


def _charge(dsn: str) -> None:
    password = "hunter2-Zq9"
    card = "4111 1111 1111 1111"
    raise PaymentDeclined(f"card {card} declined for {dsn!r} ({len(password)})")


def fail_with_secrets() -> None:
    dsn = "postgres://user:pgpass-9271@db/x"
    _charge(dsn)


def dumps(event: Event) -> str:
    return orjson.dumps(event).decode()


def frame_vars(event: Event, function: str) -> dict[str, Any]:
    for exc in event["exception"]["values"]:
        for frame in exc["stacktrace"]["frames"]:
            if frame.get("function") == function:
                return frame["vars"]
    raise AssertionError(f"no frame {function}")


@pytest.fixture(scope="module")
def raw_event() -> Event:
    return sdk_event(fail_with_secrets, copy.deepcopy(REQUEST))


@pytest.fixture
def event(raw_event: Event) -> Event:
    return copy.deepcopy(raw_event)


def scrub(event: Event, **options: Any) -> Event:
    return Scrubber(ScrubbingSettings(**options)).scrub(event)


# ------------------------------------------------------------------------- defaults
def test_sdk_event_carries_the_secrets_before_scrubbing(raw_event: Event) -> None:
    text = dumps(raw_event)
    for secret in SECRETS:
        assert secret in text, secret


def test_no_secret_survives_default_scrubbing(event: Event) -> None:
    scrubbed = scrub(event)
    text = dumps(scrubbed)
    for secret in (*SECRETS, "tok-77aa", "sess-5150"):
        assert secret not in text, secret
    assert FILTERED in text


def test_scrub_mutates_in_place_and_returns_the_same_object(event: Event) -> None:
    assert scrub(event) is event


def test_keys_stay_and_only_the_secret_part_goes(event: Event) -> None:
    scrubbed = scrub(event)
    assert frame_vars(scrubbed, "_charge")["password"] == FILTERED
    assert frame_vars(scrubbed, "fail_with_secrets")["dsn"] == "'postgres://user:[Filtered]@db/x'"
    request = scrubbed["request"]
    assert request["headers"]["Authorization"] == FILTERED
    assert request["headers"]["X-Trace"] == "t1"
    assert request["data"] == {"username": "ada", "password": FILTERED, "note": "Bearer [Filtered]"}
    assert request["url"] == "https://shop.example.com/pay?token=[Filtered]&step=2"
    assert request["cookies"] == "sessionid=[Filtered]; theme=dark"
    value = scrubbed["exception"]["values"][-1]["value"]
    assert value.startswith("card [Filtered] declined for 'postgres://user:[Filtered]@db/x'")
    crumbs = [
        c["message"] for c in scrubbed["breadcrumbs"]["values"] if c.get("category") == "auth"
    ]
    assert crumbs == ["sent Authorization: Bearer [Filtered]"]


def test_structural_fields_and_personal_data_are_untouched_by_default(event: Event) -> None:
    before = copy.deepcopy(event)
    scrubbed = scrub(event)
    assert scrubbed["event_id"] == before["event_id"]
    assert scrubbed["user"] == before["user"]  # IPs and e-mails are opt-in
    assert scrubbed["sdk"] == before["sdk"]
    frames = scrubbed["exception"]["values"][-1]["stacktrace"]["frames"]
    assert [f["function"] for f in frames] == [
        f["function"] for f in before["exception"]["values"][-1]["stacktrace"]["frames"]
    ]
    assert scrubbed["request"]["headers"]["User-Agent"] == "Mozilla/5.0"


def test_source_context_lines_are_scrubbed_too(event: Event) -> None:
    scrubbed = scrub(event)
    frames = [f for e in scrubbed["exception"]["values"] for f in e["stacktrace"]["frames"]]
    lines = [
        line for f in frames for line in (*f.get("pre_context", []), f.get("context_line", ""))
    ]
    assert '    password = "[Filtered]"' in lines
    assert '    card = "[Filtered]"' in lines


# ------------------------------------------------------------------------- cards
@pytest.mark.parametrize(
    "number",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "3782 822463 10005",
        "5555 5555 5555 4444",
        "6011 1111 1111 1117",
    ],
)
def test_luhn_valid_cards_are_filtered(number: str) -> None:
    assert (
        scrub({"message": f"paid with {number} today"})["message"] == "paid with [Filtered] today"
    )


@pytest.mark.parametrize(
    "digits",
    ["4111 1111 1111 1112", "1700000000000", "1234567812345670", "41111111111111111111"],
)
def test_numbers_that_are_not_cards_are_kept(digits: str) -> None:
    event = {"message": f"id {digits} end", "extra": {"n": int(digits.replace(" ", ""))}}
    assert scrub(copy.deepcopy(event)) == event


def test_card_helpers() -> None:
    assert luhn_ok("1234567812345670")  # Luhn-valid, but no card brand starts with 1
    assert not is_card_number("1234567812345670")
    assert is_card_number("4111111111111111")
    assert not is_card_number("4111111111111112")


def test_card_stored_as_a_number_is_filtered() -> None:
    assert scrub({"extra": {"cc": 4111111111111111, "n": 4111111111111112}})["extra"] == {
        "cc": FILTERED,
        "n": 4111111111111112,
    }


# ------------------------------------------------------------------ strings in detail
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer eyJhbGciOi.eyJzdWIi.sig", "Authorization: Bearer [Filtered]"),
        ("the bearer of bad news", "the bearer of bad news"),
        ("Basic dXNlcjpwYXNz", "Basic [Filtered]"),
        ("basic usage of the api", "basic usage of the api"),
        ("redis://:p@ss@cache:6379/0", "redis://:[Filtered]@cache:6379/0"),
        ("http://host:8080/path?email=a@b.com", "http://host:8080/path?email=a@b.com"),
        ('{"password": "x", "user": "bob"}', '{"password": "[Filtered]", "user": "bob"}'),
        ("{'api_key': 'k-1'}", "{'api_key': '[Filtered]'}"),
        ("user=bob&password=hunter2&next=/", "user=bob&password=[Filtered]&next=/"),
        ("Server=db;Password=pw1;Database=x", "Server=db;Password=[Filtered];Database=x"),
        ("Config(dsn='x', secret_key='abc')", "Config(dsn='x', secret_key='[Filtered]')"),
        ("if password == expected:", "if password == expected:"),
        ("password: is required", "password: is required"),
        ("author=bob", "author=bob"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
            "-----BEGIN RSA PRIVATE KEY-----\n[Filtered]\n-----END RSA PRIVATE KEY-----",
        ),
    ],
)
def test_string_rules(text: str, expected: str) -> None:
    assert Scrubber(ScrubbingSettings()).scrub_string(text) == expected


def test_request_shapes_headers_as_pairs_cookies_as_dict_query_as_pairs() -> None:
    event = {
        "request": {
            "headers": [["Cookie", "a=b"], ["X-Api-Key", "k"], ["Accept", "*/*"]],
            "cookies": {"PHPSESSID": "p", "csrftoken": "c", "lang": "en"},
            "query_string": [["token", "t"], ["page", "2"]],
        }
    }
    assert scrub(event)["request"] == {
        "headers": [["Cookie", FILTERED], ["X-Api-Key", FILTERED], ["Accept", "*/*"]],
        "cookies": {"PHPSESSID": FILTERED, "csrftoken": FILTERED, "lang": "en"},
        "query_string": [["token", FILTERED], ["page", "2"]],
    }


def test_sensitive_container_is_replaced_whole_and_empty_values_kept() -> None:
    event = {"extra": {"credentials": {"user": "u", "pass": "p"}, "auth_token": "", "secret": None}}
    assert scrub(event)["extra"] == {"credentials": FILTERED, "auth_token": "", "secret": None}


def test_tags_as_pairs_and_as_dict() -> None:
    assert scrub({"tags": [["session", "s1"], ["region", "eu"]]})["tags"] == [
        ["session", FILTERED],
        ["region", "eu"],
    ]
    assert scrub({"tags": {"session": "s1", "region": "eu"}})["tags"] == {
        "session": FILTERED,
        "region": "eu",
    }


# -------------------------------------------------------------------- options
def test_safe_fields_are_never_scrubbed(event: Event) -> None:
    scrubbed = scrub(event, safe_fields=["Password", "token"])
    assert frame_vars(scrubbed, "_charge")["password"] == "'hunter2-Zq9'"
    assert scrubbed["request"]["data"]["password"] == "hunter2-Zq9"
    assert scrubbed["request"]["url"].endswith("?token=tok-77aa&step=2")
    assert "pgpass-9271" not in dumps(scrubbed)  # other rules still apply


def test_extra_sensitive_fields() -> None:
    event = {"extra": {"order_ref": "A-1", "ok": "B"}, "request": {"url": "/x?order_ref=A-1"}}
    scrubbed = scrub(event, sensitive_fields=["ORDER_REF"])
    assert scrubbed["extra"] == {"order_ref": FILTERED, "ok": "B"}
    assert scrubbed["request"]["url"] == "/x?order_ref=[Filtered]"


def test_defaults_can_be_switched_off(event: Event) -> None:
    scrubbed = scrub(event, scrub_defaults=False, custom_patterns=[r"hunter\d-\w+"])
    assert frame_vars(scrubbed, "_charge")["password"] == "'[Filtered]'"
    text = dumps(scrubbed)
    assert "4111 1111 1111 1111" in text and "pgpass-9271" in text


def test_ip_addresses_only_when_asked(event: Event) -> None:
    event["request"]["env"] = {"REMOTE_ADDR": "10.1.2.3"}
    event["extra"] = {"log": "peer 2001:db8::7 and 192.0.2.44 said hi; version 1.2.3"}
    assert "198.51.100.7" in dumps(scrub(copy.deepcopy(event)))
    scrubbed = scrub(event, scrub_ip_addresses=True)
    assert scrubbed["user"]["ip_address"] == FILTERED
    assert scrubbed["request"]["env"]["REMOTE_ADDR"] == FILTERED
    assert scrubbed["extra"]["log"] == "peer [Filtered] and [Filtered] said hi; version 1.2.3"
    assert scrubbed["request"]["headers"]["User-Agent"] == "Mozilla/5.0"


def test_emails_only_when_asked() -> None:
    event = {"user": {"email": "ada@example.com"}, "message": "mail bob.s+x@mail.example.org now"}
    assert scrub(copy.deepcopy(event)) == event
    scrubbed = scrub(event, scrub_emails=True)
    assert scrubbed == {"user": {"email": FILTERED}, "message": "mail [Filtered] now"}


def test_custom_patterns(event: Event) -> None:
    event["extra"] = {"stripe": "key sk_live_ABCdef123456 used", "ref": "ORD-77", "x": "ORD-77 y"}
    scrubbed = scrub(event, custom_patterns=[r"sk_live_[0-9A-Za-z]{8,}", r"^ORD-\d+$"])
    assert scrubbed["extra"] == {"stripe": "key [Filtered] used", "ref": FILTERED, "x": "ORD-77 y"}
    assert scrubbed["request"]["headers"]["X-Trace"] == "t1"


def test_custom_pattern_never_joins_two_strings() -> None:
    event = {"extra": {"a": "ends with x", "b": "y starts"}}
    assert scrub(copy.deepcopy(event), custom_patterns=[r"x\W+y"]) == event


def test_catastrophic_pattern_is_refused_when_saved() -> None:
    with pytest.raises(ValidationError, match=r"\(a\+\)\+\$"):
        ScrubbingSettings(custom_patterns=["(a+)+$"])
    with pytest.raises(ValidationError, match="too long"):
        ScrubbingSettings(custom_patterns=["(a|aa)+$"])


@pytest.mark.parametrize("pattern", ["(a+)+$", "(a|aa)+$"])
def test_catastrophic_pattern_is_bounded_at_run_time(pattern: str) -> None:
    # Settings written before a check existed (or by hand) skip validation.
    scrubber = Scrubber(ScrubbingSettings.model_construct(custom_patterns=[pattern]))
    event = {"message": "a" * 5000 + "b", "extra": {"other": "fine"}}
    start = time.perf_counter()
    scrubber.scrub(event)
    assert time.perf_counter() - start < 1.0
    assert scrubber.custom_timeouts == 1
    assert event == {"message": FILTERED, "extra": {"other": FILTERED}}  # fail closed


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        (["(unclosed"], "not a valid regular expression"),
        (["a*"], "matches the empty string"),
        (["x" * 501], "longer than 500"),
        ([f"p{i}" for i in range(51)], "at most 50"),
    ],
)
def test_bad_custom_patterns_are_refused(patterns: list[str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ScrubbingSettings(custom_patterns=patterns)


def test_unknown_settings_are_refused() -> None:
    with pytest.raises(ValidationError, match="scrub_ip"):
        ProjectSettings.model_validate({"scrubbing": {"scrub_ip": True}})
    with pytest.raises(ValidationError):
        ProjectSettings.model_validate({"scrubbing": {"sensitive_fields": [""]}})


def test_settings_build_the_scrubber_once() -> None:
    settings = ProjectSettings.model_validate({"scrubbing": {"custom_patterns": ["x\\d+"]}})
    assert settings.scrubber() is settings.scrubber()
    assert settings.scrubber().scrub({"message": "id x12"}) == {"message": "id [Filtered]"}
    assert ProjectSettings.model_validate_json(settings.model_dump_json()) == settings
    changed = settings.model_copy(update={"scrubbing": ScrubbingSettings(custom_patterns=["y"])})
    assert changed.scrubber().scrub({"message": "x12 y"}) == {"message": "x12 [Filtered]"}
    with pytest.raises(ValidationError, match="frozen"):
        settings.scrubbing.scrub_emails = True  # type: ignore[misc]


# ------------------------------------------------------------------ robustness
def test_non_object_event_is_refused() -> None:
    with pytest.raises(InvalidEventError, match="JSON object, got list"):
        Scrubber(ScrubbingSettings()).scrub([])  # type: ignore[arg-type]


def test_odd_shapes_do_not_raise() -> None:
    event: Event = {
        "request": {"headers": "Authorization: Bearer abc.def", "cookies": 5, "data": [1, None]},
        "exception": "Bearer abc.def",
        "threads": {"values": [None, "x", {"stacktrace": {"frames": [None, "y"]}}]},
        "stacktrace": [1],
        "tags": 3,
    }
    scrubbed = scrub(event)
    assert "abc.def" not in dumps(scrubbed)


def test_deep_nesting_is_bounded() -> None:
    deep: Any = "Bearer abc.def"
    for _ in range(5000):
        deep = {"k": [deep]}
    scrubbed = scrub({"extra": deep})
    assert "abc.def" not in dumps(scrubbed)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["request", "exception", "extra", "tags", "x"]), json_values)
)
def test_any_json_object_scrubs_without_error(event: Event) -> None:
    Scrubber(ScrubbingSettings(scrub_ip_addresses=True, scrub_emails=True)).scrub(event)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=6, max_size=30))
def test_values_under_sensitive_keys_never_survive(secret: str) -> None:
    event = {"extra": {"db_password": secret}, "request": {"headers": [["X-Auth-Token", secret]]}}
    scrubbed = scrub(event)
    assert scrubbed["extra"]["db_password"] == FILTERED
    assert scrubbed["request"]["headers"] == [["X-Auth-Token", FILTERED]]


# ------------------------------------------------------------------ speed
def _deep(depth: int, payload: dict[str, Any]) -> None:
    order_total = depth * 10.5  # noqa: F841 - local variables are part of the event
    customer = {"id": depth, "tier": "gold", "country": "DE"}  # noqa: F841
    if depth == 0:
        raise KeyError(f"sku-{payload['sku']} missing from price list")
    _deep(depth - 1, payload)


def realistic_event() -> Event:
    request = {
        "url": "https://shop.example.com/checkout?step=payment&session=a81f",
        "method": "POST",
        "query_string": "step=payment&session=a81f",
        "headers": {
            "Host": "shop.example.com",
            "User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0.0.0",
            "Accept": "application/json",
            "Accept-Language": "en-GB,en;q=0.9",
            "Cookie": "sessionid=abc; theme=dark",
            "Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig",
            "X-Request-Id": "4f1c2a9e8d7b6a5f4e3d2c1b0a998877",
        },
        "data": {"cart_id": "c-1881", "coupon": "SUMMER24", "currency": "EUR", "items": [1, 2]},
        "env": {"REMOTE_ADDR": "10.0.3.7"},
    }

    def fail() -> None:
        for i in range(8):
            sentry_sdk.add_breadcrumb(
                category="query",
                message=f"SELECT id, sku FROM cart_items WHERE cart_id = %s -- {i}",
                data={"db.system": "postgresql", "duration_ms": 1.5 * i},
            )
        _deep(2, {"sku": 4411, "qty": 2})

    event = sdk_event(fail, request)
    size = len(orjson.dumps(event))
    assert 6_000 < size < 12_000, size
    return event


def test_scrubbing_speed_on_a_realistic_event() -> None:
    """Guards against accidental quadratic work; the real figure is printed (pytest -s)."""
    event = realistic_event()
    raw = orjson.dumps(event)
    scrubber = Scrubber(ScrubbingSettings())
    copies = [orjson.loads(raw) for _ in range(300)]
    start = time.perf_counter()
    for copy_ in copies:
        scrubber.scrub(copy_)
    rate = len(copies) / (time.perf_counter() - start)
    print(f"\nscrubbing: {rate:,.0f} events/s on a {len(raw)}-byte sentry-sdk event")
    assert "eyJhbGciOiJIUzI1NiJ9" not in dumps(copies[0])
    assert rate > 1_000
