"""Envelope parsing against real SDK traffic, the spec's examples, and every malformation."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
import sentry_sdk
import sentry_sdk.logger
from hypothesis import given, settings
from hypothesis import strategies as st
from sentry_sdk.crons import capture_checkin
from sentry_sdk.envelope import Envelope as SdkEnvelope

from app.decompress import BadBody, BodyError, PayloadTooLarge, decompress
from app.envelope import (
    MAX_ITEMS,
    InvalidEnvelope,
    Item,
    normalize_event_id,
    parse_dsn_key,
    parse_envelope,
    parse_sentry_auth,
)

MiB = 1 << 20
EVENT_ID = "9ec79c33ec9942ab8353589fcb2e04dc"


# --- real SDK traffic ----------------------------------------------------------------------


class _Capture(BaseHTTPRequestHandler):
    """Loopback stand-in for the server: records each request exactly as the SDK sent it."""

    requests: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.requests.append((self.path, dict(self.headers.items()), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"id":null}')

    def log_message(self, *args: Any) -> None:
        pass


def _drive_sdk(dsn: str, algo: str) -> dict[str, str]:
    """Send one of each common envelope kind through the real SDK HTTP transport."""
    sentry_sdk.init(
        dsn=dsn,
        default_integrations=False,
        traces_sample_rate=1.0,
        release="app@1.0",
        enable_logs=True,
        _experiments={"transport_compression_algo": algo},
    )
    ids: dict[str, str] = {}
    try:
        sentry_sdk.get_isolation_scope().add_attachment(
            bytes=b"line1\nline2\n", filename="notes.txt"
        )
        try:
            {}["missing"]  # noqa: B018
        except KeyError:
            ids["error"] = sentry_sdk.capture_exception()
        sentry_sdk.get_isolation_scope().clear()
        ids["message"] = sentry_sdk.capture_message("multi\nline message")
        capture_checkin(monitor_slug="nightly", status="ok")
        with sentry_sdk.start_transaction(name="checkout"):
            pass
        sentry_sdk.get_isolation_scope().start_session()
        sentry_sdk.get_isolation_scope().end_session()
        sentry_sdk.logger.info("a log line {n}", n=1)
        sentry_sdk.flush(timeout=10)
    finally:
        sentry_sdk.get_client().close(timeout=10)
        sentry_sdk.init()  # leave no live client behind for other tests
    return ids


@pytest.fixture(scope="module")
def sdk_traffic() -> Iterator[dict[str, Any]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    dsn = f"http://abc123@127.0.0.1:{server.server_address[1]}/sub/42"
    try:
        traffic = {}
        for algo in ("br", "gzip"):
            _Capture.requests = []
            ids = _drive_sdk(dsn, algo)
            traffic[algo] = {"ids": ids, "requests": list(_Capture.requests)}
        yield {"dsn": dsn, **traffic}
    finally:
        server.shutdown()
        server.server_close()


def _decoded(headers: dict[str, str], body: bytes) -> bytes:
    return decompress(body, headers.get("Content-Encoding"), 10 * MiB)


@pytest.mark.parametrize("algo", ["br", "gzip"])
def test_sdk_requests_decode_and_match_the_sdk_own_parser(
    sdk_traffic: dict[str, Any], algo: str
) -> None:
    requests = sdk_traffic[algo]["requests"]
    seen_types = set()
    for path, headers, body in requests:
        assert path == "/sub/api/42/envelope/"
        assert headers["Content-Encoding"] == algo
        raw = _decoded(headers, body)
        envelope = parse_envelope(raw, MiB)
        reference = SdkEnvelope.deserialize(raw)
        assert envelope.headers == reference.headers
        assert [i.type for i in envelope.items] == [i.type for i in reference.items]
        for ours, theirs in zip(envelope.items, reference.items, strict=True):
            assert ours.headers == theirs.headers
            if ours.type in ("event", "transaction"):
                assert ours.json() == theirs.payload.json
            else:
                assert ours.payload == theirs.get_bytes()
            seen_types.add(ours.type)
    assert {"event", "attachment", "check_in", "transaction", "session", "log"} <= seen_types


@pytest.mark.parametrize("algo", ["br", "gzip"])
def test_sdk_error_envelope_content(sdk_traffic: dict[str, Any], algo: str) -> None:
    ids = sdk_traffic[algo]["ids"]
    envelopes = [parse_envelope(_decoded(h, b), MiB) for _, h, b in sdk_traffic[algo]["requests"]]
    by_id = {e.event_id: e for e in envelopes if e.event_id}

    error = by_id[ids["error"]]
    event_item, attachment = error.items
    event = event_item.json()
    assert event["event_id"] == ids["error"]
    assert event["exception"]["values"][-1]["type"] == "KeyError"
    assert attachment.headers["filename"] == "notes.txt"
    assert attachment.payload == b"line1\nline2\n"  # newlines inside a length-framed payload

    message = by_id[ids["message"]].items[0].json()
    assert message["message"] == "multi\nline message"


def test_sdk_auth_header_and_dsn(sdk_traffic: dict[str, Any]) -> None:
    _, headers, _ = sdk_traffic["br"]["requests"][0]
    auth = parse_sentry_auth(headers["X-Sentry-Auth"])
    assert auth["sentry_key"] == "abc123"
    assert auth["sentry_version"] == "7"
    assert auth["sentry_client"].startswith("sentry.python/")
    assert parse_dsn_key(sdk_traffic["dsn"]) == ("abc123", "42")


# --- the spec's examples -------------------------------------------------------------------

SPEC_EVENT = b'{"message":"hello world","level":"error"}'


def test_spec_full_example_with_lengths() -> None:
    data = (
        b'{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc",'
        b'"dsn":"https://e12d836b15bb49d7bbf99e64295d995b:@sentry.io/42"}\n'
        b'{"type":"attachment","length":10,"content_type":"text/plain","filename":"hello.txt"}\n'
        b"\xef\xbb\xbfHello\r\n\n"
        b'{"type":"event","length":41,"content_type":"application/json",'
        b'"filename":"application.log"}\n' + SPEC_EVENT + b"\n"
    )
    envelope = parse_envelope(data, MiB)
    assert envelope.event_id == EVENT_ID
    assert parse_dsn_key(envelope.headers["dsn"]) == ("e12d836b15bb49d7bbf99e64295d995b", "42")
    attachment, event = envelope.items
    assert attachment.payload == b"\xef\xbb\xbfHello\r\n"  # the \r belongs to the payload
    assert event.json() == {"message": "hello world", "level": "error"}


def test_spec_implicit_length_terminated_by_newline_and_by_eof() -> None:
    head = b'{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc"}\n{"type":"attachment"}\nhelloworld'
    for data in (head + b"\n", head):
        (item,) = parse_envelope(data, MiB).items
        assert (item.type, item.payload) == ("attachment", b"helloworld")


def test_spec_empty_payloads() -> None:
    data = b'{}\n{"type":"attachment","length":0}\n\n{"type":"attachment"}\n\n{"type":"x"}\n'
    items = parse_envelope(data, MiB).items
    assert [(i.type, i.payload) for i in items] == [
        ("attachment", b""),
        ("attachment", b""),
        ("x", b""),
    ]


@pytest.mark.parametrize("data", [b"{}", b"{}\n", b'{"sent_at":"2024-01-01T00:00:00Z"}\n'])
def test_headers_only_envelope_is_valid(data: bytes) -> None:
    envelope = parse_envelope(data, MiB)
    assert envelope.items == [] and envelope.event_id is None


def test_item_header_at_end_of_input_has_empty_payload() -> None:
    (item,) = parse_envelope(b'{}\n{"type":"attachment"}', MiB).items
    assert item.payload == b""


def test_unknown_item_types_are_returned_and_parsing_goes_on() -> None:
    data = (
        b'{}\n{"type":"profile_chunk_v9","length":5}\na\nb\nc\n'
        b'{"type":"mystery"}\nno length here\n'
        b'{"type":"event"}\n' + SPEC_EVENT
    )
    items = parse_envelope(data, MiB).items
    assert [(i.type, i.payload) for i in items[:2]] == [
        ("profile_chunk_v9", b"a\nb\nc"),
        ("mystery", b"no length here"),
    ]
    assert items[2].json()["message"] == "hello world"


def test_carriage_returns_stay_with_their_line() -> None:
    data = b'{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc"}\r\n{"type":"event"}\r\n{"a":1}\r\n'
    envelope = parse_envelope(data, MiB)
    (item,) = envelope.items
    assert envelope.event_id == EVENT_ID
    assert item.payload == b'{"a":1}\r'
    assert item.json() == {"a": 1}


def test_dashed_event_id_is_normalised() -> None:
    data = b'{"event_id":"9EC79C33-EC99-42AB-8353-589FCB2E04DC"}\n'
    assert parse_envelope(data, MiB).event_id == EVENT_ID


def test_sent_at_inside_a_nested_object_is_not_a_duplicate() -> None:
    data = b'{"sent_at":"2024-01-01T00:00:00Z","trace":{"sent_at":"x"}}\n'
    assert parse_envelope(data, MiB).headers["trace"] == {"sent_at": "x"}


# --- malformations -------------------------------------------------------------------------

MALFORMED = [
    (b"", "envelope is empty"),
    (b"\n", "envelope header is not valid JSON"),
    (b"not json\n", "envelope header is not valid JSON"),
    (b'{"a":\xff}\n', "envelope header is not valid JSON"),
    (b"[]\n", "envelope header is JSON list, not an object"),
    (b'{"event_id":"nope"}\n', "envelope header event_id 'nope' is not a UUID"),
    (b'{"event_id":123}\n', "envelope header event_id 123 is not a UUID"),
    (b'{"sent_at":"a","sent_at":"b"}\n', 'more than one "sent_at"'),
    (b'{}\n{"type":"event"\n{}', "item 1 header is not valid JSON"),
    (b'{}\n{"type":"a","length":1}\nx\n{bad}\n', "item 2 header is not valid JSON"),
    (b'{}\n["event"]\n{}', "item 1 header is JSON list, not an object"),
    (b'{}\n{"length":0}\n\n', 'item 1 header has no string "type"'),
    (b'{}\n{"type":7}\nx', 'item 1 header has no string "type"'),
    (b'{}\n{"type":"a","length":-1}\nx', "item 1 header length -1 is not a non-negative integer"),
    (b'{}\n{"type":"a","length":1.0}\nx', "item 1 header length 1.0 is not"),
    (b'{}\n{"type":"a","length":"1"}\nx', "item 1 header length '1' is not"),
    (b'{}\n{"type":"a","length":true}\nx', "item 1 header length true is not"),
    (b'{}\n{"type":"a","length":[1]}\nx', r"item 1 header length \(a JSON list\) is not"),
    (
        b'{}\n{"type":"event","length":500}\n' + b"x" * 120,
        "item 1 declares length 500 but only 120 bytes remain",
    ),
    (b'{}\n{"type":"a","length":3}', "item 1 declares length 3 but only 0 bytes remain"),
    (
        b'{}\n{"type":"a","length":2}\n{}}\n',
        r"item 1 payload of declared length 2 is followed by b'}'",
    ),
    (b'{}\n{"type":"a","length":2}\nab \n', r"followed by b' ' instead of a newline"),
    (b'{}\n{"type":"a","length":2}\nab\r\n', r"followed by b'\\r' instead of a newline"),
    (b'{}\n{"type":"a"}\nx\n\n', "item 2 header line is empty"),
    (b'{}\n{"type":"a","length":1}\nx\n\n{"type":"b"}\ny', "item 2 header line is empty"),
    (b'{}\n{"type":"event"}\n{}\n{"type":"event"}\n{}', "item 2 \\(event\\) is a second event"),
    (
        b'{}\n{"type":"event"}\n{}\n{"type":"transaction"}\n{}',
        "second event-like item after item 1",
    ),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED)
def test_malformed_envelope_is_rejected_with_a_precise_message(data: bytes, message: str) -> None:
    with pytest.raises(InvalidEnvelope, match=message) as info:
        parse_envelope(data, MiB)
    assert isinstance(info.value, BadBody)
    assert (info.value.status, info.value.code) == (400, "invalid_envelope")


def test_short_length_that_lands_on_a_newline_is_caught_at_the_next_header() -> None:
    # "length":1 over "a\nb": the byte after "a" is \n, so item 2 wrongly starts at "b".
    with pytest.raises(InvalidEnvelope, match="item 2 header is not valid JSON"):
        parse_envelope(b'{}\n{"type":"a","length":1}\na\nb\n', MiB)


# --- limits --------------------------------------------------------------------------------


@pytest.mark.parametrize("item_type", ["event", "transaction"])
def test_event_item_size_limit_is_inclusive(item_type: str) -> None:
    payload = b'{"x":"' + b"a" * 994 + b'"}'
    assert len(payload) == 1002
    head = b'{}\n{"type":"' + item_type.encode() + b'","length":1002}\n'
    (item,) = parse_envelope(head + payload, 1002).items
    assert item.payload == payload
    with pytest.raises(
        PayloadTooLarge, match=f"item 1 \\({item_type}\\) is 1002 bytes; the limit is 1001"
    ):
        parse_envelope(head + payload, 1001)


def test_event_without_length_is_size_checked_too() -> None:
    with pytest.raises(PayloadTooLarge, match="is 50 bytes"):
        parse_envelope(b'{}\n{"type":"event"}\n' + b"x" * 50 + b"\n", 49)


def test_other_item_types_are_not_held_to_the_event_limit() -> None:
    (item,) = parse_envelope(b'{}\n{"type":"attachment","length":50}\n' + b"x" * 50, 10).items
    assert len(item.payload) == 50


def _many_items(count: int, payload: bytes) -> bytes:
    item = b'{"type":"session","length":%d}\n' % len(payload) + payload + b"\n"
    return b"{}\n" + item * count


def test_ten_thousand_items_parse_in_one_linear_pass() -> None:
    data = _many_items(MAX_ITEMS, b"s" * 1000)  # 10 MB; quadratic slicing would copy ~50 GB
    started = time.perf_counter()
    envelope = parse_envelope(data, MiB)
    elapsed = time.perf_counter() - started
    assert len(envelope.items) == MAX_ITEMS
    assert envelope.items[-1].payload == b"s" * 1000
    assert elapsed < 1.0, f"took {elapsed:.2f}s"


def test_more_than_ten_thousand_items_is_too_large() -> None:
    data = _many_items(MAX_ITEMS + 1, b"{}")
    with pytest.raises(PayloadTooLarge, match="more than 10000 items") as info:
        parse_envelope(data, MiB)
    assert info.value.status == 413
    # The same count without length headers is refused the same way.
    with pytest.raises(PayloadTooLarge):
        parse_envelope(b"{}\n" + b'{"type":"x"}\n\n' * (MAX_ITEMS + 1), MiB)


# --- Item.json -----------------------------------------------------------------------------


def test_item_json_rejects_non_json_and_non_objects() -> None:
    with pytest.raises(InvalidEnvelope, match="event item payload is not valid JSON"):
        Item("event", {}, b"{oops").json()
    with pytest.raises(InvalidEnvelope, match="event item payload is JSON list, not an object"):
        Item("event", {}, b"[1, 2]").json()
    with pytest.raises(InvalidEnvelope, match="not valid JSON"):
        Item("event", {}, b'{"a":"\xff"}').json()
    with pytest.raises(InvalidEnvelope, match="not valid JSON"):
        Item("event", {}, b"[" * 5000 + b"]" * 5000).json()


def test_item_json_reads_bare_nan_from_old_python_sdks_as_null() -> None:
    value = Item("event", {}, b'{"extra":{"a":NaN,"b":-Infinity,"c":1.5}}').json()
    assert value == {"extra": {"a": None, "b": None, "c": 1.5}}
    with pytest.raises(InvalidEnvelope, match="not valid JSON"):
        Item("event", {}, b'{"a":NaN,').json()
    with pytest.raises(InvalidEnvelope, match="not an object"):
        Item("event", {}, b"NaN").json()


# --- fuzzing and round trips ---------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_body_errors(data: bytes) -> None:
    with contextlib.suppress(BodyError):
        parse_envelope(data, 100)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(alphabet="abcdefgh_", min_size=1, max_size=8),
            st.binary(max_size=60),
            st.booleans(),
        ),
        max_size=8,
    ),
    st.booleans(),
)
def test_serialised_items_parse_back_exactly(
    items: list[tuple[str, bytes, bool]], trailing_newline: bool
) -> None:
    parts = [b'{"event_id":"9ec79c33ec9942ab8353589fcb2e04dc"}']
    expected = []
    for item_type, payload, with_length in items:
        framed = with_length or b"\n" in payload
        header: dict[str, Any] = {"type": item_type}
        if framed:
            header["length"] = len(payload)
        parts.append(orjson.dumps(header))
        parts.append(payload)
        expected.append((item_type, header, payload))
    data = b"\n".join(parts) + (b"\n" if trailing_newline else b"")
    envelope = parse_envelope(data, MiB)
    assert [(i.type, i.headers, i.payload) for i in envelope.items] == expected


# --- small parsers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (EVENT_ID, EVENT_ID),
        (EVENT_ID.upper(), EVENT_ID),
        ("9ec79c33-ec99-42ab-8353-589fcb2e04dc", EVENT_ID),
        ("{9ec79c33-ec99-42ab-8353-589fcb2e04dc}", None),
        ("9ec79c33ec9942ab8353589fcb2e04d", None),
        ("9ec79c33ec9942ab8353589fcb2e04dcc", None),
        ("9ec79c33ec9942ab8353589fcb2e04dg", None),
        ("9ec79c33-ec9942ab-8353-589fcb2e04dc", None),
        ("9ec79c33ec9942ab8353589fcb2e04d\n", None),
        ("٩ec79c33ec9942ab8353589fcb2e04dc", None),  # a non-ASCII digit
        ("", None),
        (None, None),
        (12, None),
    ],
)
def test_normalize_event_id(value: object, expected: str | None) -> None:
    assert normalize_event_id(value) == expected


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("https://abc@host/42", ("abc", "42")),
        ("https://abc@host/path/to/42", ("abc", "42")),
        ("https://abc:secret@host:9000/42", ("abc", "42")),
        ("http://abc@127.0.0.1:8000/7/", ("abc", "7")),
        (" https://abc@host/42 ", ("abc", "42")),
        ("https://host/42", None),
        ("https://@host/42", None),
        ("https://abc@host/", None),
        ("https://abc@host", None),
        ("ftp://abc@host/42", None),
        ("abc@host/42", None),
        ("https://abc@[::1/42", None),
        ("", None),
    ],
)
def test_parse_dsn_key(dsn: str, expected: tuple[str, str] | None) -> None:
    assert parse_dsn_key(dsn) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            "Sentry sentry_key=abc, sentry_version=7, sentry_client=raven-js/3.0",
            {"sentry_key": "abc", "sentry_version": "7", "sentry_client": "raven-js/3.0"},
        ),
        ("sentry sentry_key=abc,sentry_version=7", {"sentry_key": "abc", "sentry_version": "7"}),
        ("  SENTRY   sentry_key = abc ", {"sentry_key": "abc"}),
        ("sentry_key=abc", {"sentry_key": "abc"}),
        (
            "Sentry sentry_key=a=b, junk, =x, sentry_secret=",
            {"sentry_key": "a=b", "sentry_secret": ""},
        ),
        ("Sentry", {}),
        ("", {}),
    ],
)
def test_parse_sentry_auth(header: str, expected: dict[str, str]) -> None:
    assert parse_sentry_auth(header) == expected
