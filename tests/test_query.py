"""The query parser: what each piece of syntax means, and where each mistake is reported."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.query import QueryError, parse, quote
from app.query.ast import And, Compare, FieldText, Keyword, Not, Or, Tag, Text
from app.query.parser import MAX_DEPTH, MAX_LENGTH
from app.query.sqlite import _after_prefix


def _ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


PARSES = [
    # free text: tokens from app.text.query_tokens, trailing * is a prefix
    ("NullPointerException", Text(("nullpointerexception",))),
    ("nullpointer*", Text(("nullpointer",), prefix=True)),
    ("my_module", Text(("my", "module"))),
    ("java.lang.NullPointerException", Text(("java", "lang", "nullpointerexception"))),
    ('"connection refused"', Text(("connection", "refused"))),
    ('"connection ref"*', Text(("connection", "ref"), prefix=True)),
    ('"star* inside"', Text(("star", "inside"))),
    (r'"say \"hi\""', Text(("say", "hi"))),
    ("foo-bar", Text(("foo", "bar"))),
    ("12:30", Text(("12", "30"))),
    ("  \t ", None),
    ("", None),
    # lower-case operators are words
    ("a and b", And((Text(("a",)), Text(("and",)), Text(("b",))))),
    ("not", Text(("not",))),
    # keyword fields
    ("environment:production", Keyword("environment", "production")),
    ("environment:prod*", Keyword("environment", "prod", prefix=True)),
    ("environment:*", Keyword("environment", "", prefix=True)),
    ('environment:"prod*"', Keyword("environment", "prod*")),
    ('environment:"my env"*', Keyword("environment", "my env", prefix=True)),
    ('environment:""', Keyword("environment", "")),
    ("environment:AND", Keyword("environment", "AND")),
    ("user.email:a@b.c", Keyword("user.email", "a@b.c")),
    ("transaction:/api/users/", Keyword("transaction", "/api/users/")),
    ("exception.type:ValueError", Keyword("exception.type", "ValueError")),
    ("frame.filename:src/app.py", Keyword("frame.filename", "src/app.py")),
    ("tags.url:http://x.io/a", Tag("url", "http://x.io/a")),
    # tags: any key, bare or quoted
    ("tags.browser:Chrome", Tag("browser", "Chrome")),
    ("tags.browser.name:Chrome*", Tag("browser.name", "Chrome", prefix=True)),
    ("tags.my-key:1", Tag("my-key", "1")),
    ('tags."weird key:with=stuff":"a b"', Tag("weird key:with=stuff", "a b")),
    # text fields
    ('message:"Connection refused"', FieldText("message", ("connection", "refused"))),
    ("exception.value:timeout*", FieldText("exception.value", ("timeout",), prefix=True)),
    # ordered fields
    ("level:error", Compare("level", "=", 40)),
    ("level:WARNING", Compare("level", "=", 30)),
    ("level:>=warning", Compare("level", ">=", 30)),
    ("level:<info", Compare("level", "<", 20)),
    ("issue:42", Compare("issue", "=", 42)),
    ("issue:>=7", Compare("issue", ">=", 7)),
    ("timestamp:>-24h", Compare("timestamp", ">", 86400.0, relative=True)),
    ("timestamp:-15m", Compare("timestamp", "=", 900.0, relative=True)),
    ("timestamp:<=-2w", Compare("timestamp", "<=", 1209600.0, relative=True)),
    ("timestamp:2026-11-01", Compare("timestamp", "=", _ts(2026, 11, 1), 86400.0)),
    ("timestamp:<2026-11-02", Compare("timestamp", "<", _ts(2026, 11, 2), 86400.0)),
    (
        "timestamp:>=2026-11-01T00:00:00Z",
        Compare("timestamp", ">=", _ts(2026, 11, 1), 1.0),
    ),
    ("timestamp:2026-11-01T10:30", Compare("timestamp", "=", _ts(2026, 11, 1, 10, 30), 60.0)),
    (
        "timestamp:>2026-11-01T10:30:00+02:00",
        Compare("timestamp", ">", _ts(2026, 11, 1, 8, 30), 1.0),
    ),
    (
        'timestamp:"2026-11-01 10:30:00.5"',
        Compare("timestamp", "=", _ts(2026, 11, 1, 10, 30) + 0.5, 0.0),
    ),
    # boolean structure: NOT > AND > OR, implicit AND, flattening
    ("a b c", And((Text(("a",)), Text(("b",)), Text(("c",))))),
    ("a AND b c", And((Text(("a",)), Text(("b",)), Text(("c",))))),
    ("a OR b c", Or((Text(("a",)), And((Text(("b",)), Text(("c",))))))),
    ("a b OR c", Or((And((Text(("a",)), Text(("b",)))), Text(("c",))))),
    ("(a OR b) c", And((Or((Text(("a",)), Text(("b",)))), Text(("c",))))),
    ("a OR (b OR c)", Or((Text(("a",)), Text(("b",)), Text(("c",))))),
    ("NOT a b", And((Not(Text(("a",))), Text(("b",))))),
    ("NOT (a b)", Not(And((Text(("a",)), Text(("b",)))))),
    ("-a", Not(Text(("a",)))),
    ("--a", Not(Not(Text(("a",))))),
    ("-level:error", Not(Compare("level", "=", 40))),
    ('-"a b"', Not(Text(("a", "b")))),
    ("-(a)", Not(Text(("a",)))),
    ("NOT(a)", Not(Text(("a",)))),
    ("-24h", Not(Text(("24h",)))),
    ("a(b)", And((Text(("a",)), Text(("b",))))),
    ('a"b"', And((Text(("a",)), Text(("b",))))),
]


@pytest.mark.parametrize(("query", "tree"), PARSES, ids=[q for q, _ in PARSES])
def test_parse(query: str, tree: object) -> None:
    assert parse(query) == tree


ERRORS = [
    # (query, position, part of what was expected)
    ("level:", 6, "a value after 'level:'"),
    ("environment:production level: x", 29, "a value after 'level:'"),
    ("level:>=", 8, "a value after 'level:>='"),
    ("level:>= error", 8, "a value after 'level:>='"),
    ("(level:)", 7, "a value after 'level:'"),
    ("foo:bar", 0, "a known field"),
    ("a http://x.io", 2, "a known field"),
    ("Level:error", 0, "a known field"),
    ("tags.:x", 5, "a tag key"),
    ('tags."k"x', 8, "':' after the quoted tag key"),
    ("environment:>prod", 12, "only level, issue and timestamp can be compared"),
    ("tags.a:<=1", 7, "only level, issue and timestamp can be compared"),
    ('tags."a b":>1', 11, "only level, issue and timestamp can be compared"),
    ("message:>x", 8, "only level, issue and timestamp can be compared"),
    ("level:eror", 6, "a level (debug, info, warning, error, fatal)"),
    ("level:err*", 9, "a value without '*'"),
    ("issue:abc", 6, "an issue id"),
    ("issue:99999999999999999999", 6, "an issue id"),
    ("issue:-1", 6, "an issue id"),
    ("timestamp:yesterday", 10, "a time like"),
    ("timestamp:>=2026-13-01", 12, "a time like"),
    ("timestamp:2026-02-30T00:00", 10, "a time like"),
    ("timestamp:-24y", 10, "a time like"),
    ("timestamp:-9999999999h", 10, "a time like"),
    ("env*ronment", 3, "'*' only at the end of a value"),
    ("environment:a*b", 13, "'*' only at the end of a value"),
    ("a**", 1, "'*' only at the end of a value"),
    ('"unclosed', 0, "a closing '\"'"),
    ('message:"unclosed', 8, "a closing '\"'"),
    ("a AND", 5, "a term after 'AND'"),
    ("a OR OR b", 5, "a term after 'OR'"),
    ("OR a", 0, "a term"),
    ("NOT", 3, "a term after 'NOT'"),
    ("a - b", 2, "a term after '-'"),
    ("-", 0, "a term after '-'"),
    ("(a", 2, "')' to close the '(' at position 0"),
    ("((a) b", 6, "')' to close the '(' at position 0"),
    ("a)", 1, "this ')' closes nothing"),
    ("()", 1, "a term"),
    ("*", 0, "a search term with letters or digits"),
    ('"..."', 0, "a search term with letters or digits"),
    ('message:"--"', 8, "a search term with letters or digits"),
]


@pytest.mark.parametrize(("query", "position", "expected"), ERRORS, ids=[e[0] for e in ERRORS])
def test_error_position(query: str, position: int, expected: str) -> None:
    with pytest.raises(QueryError) as info:
        parse(query)
    err = info.value
    assert err.position == position, str(err)
    assert expected in err.expected
    assert str(err).startswith(f"at position {position}: expected ")
    assert (err.status, err.code) == (400, "invalid_query")


def test_error_message_names_the_mistake() -> None:
    with pytest.raises(QueryError, match=r"^at position 14: expected a value after 'level:'$"):
        parse("issue:1 level:")
    with pytest.raises(QueryError, match=r"got 'foo' \(quote the term"):
        parse("foo:bar")
    assert isinstance(QueryError(0, "x"), ValueError)


def test_length_limit() -> None:
    assert parse("a" * MAX_LENGTH) == Text(("a" * MAX_LENGTH,))
    with pytest.raises(QueryError) as info:
        parse("a" * (MAX_LENGTH + 1))
    assert info.value.position == MAX_LENGTH


@pytest.mark.parametrize("opener", ["(", "NOT ", "-"])
def test_depth_limit(opener: str) -> None:
    closer = ")" if opener == "(" else ""
    ok = opener * MAX_DEPTH + "a" + closer * MAX_DEPTH
    node = parse(ok)
    depth = 0
    while isinstance(node, Not):
        node, depth = node.child, depth + 1
    assert node == Text(("a",)) and depth == (0 if opener == "(" else MAX_DEPTH)
    too_deep = opener * (MAX_DEPTH + 1) + "a" + closer * (MAX_DEPTH + 1)
    with pytest.raises(QueryError) as info:
        parse(too_deep)
    assert info.value.position == MAX_DEPTH * len(opener)
    assert "levels of nesting" in info.value.expected


@pytest.mark.parametrize(
    "query", ["(" * 600, "-" * 999 + "a", '"' * 999, "\x00:\x00", ")(" * 400, "a:" * 300]
)
def test_hostile_input_raises_query_error(query: str) -> None:
    with pytest.raises(QueryError):
        parse(query)


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "two words",
        'say "hi"',
        "back\\slash",
        "star*",
        "-neg",
        ">=3",
        "a:b",
        "AND",
        "",
        "(x)",
    ],
)
def test_quote_round_trips(value: str) -> None:
    assert parse(f"environment:{quote(value)}") == Keyword("environment", value)
    assert parse(f"tags.k:{quote(value)}") == Tag("k", value)


BOUNDS = [
    # (query, now, plain comparisons)
    ("level:>=warning", 0.0, ((">=", 30),)),
    ("timestamp:>-1h", 10_000.0, ((">", 6400.0),)),
    ("timestamp:-1h", 10_000.0, ((">=", 6400.0),)),
    ("timestamp:2026-11-01", 0.0, ((">=", _ts(2026, 11, 1)), ("<", _ts(2026, 11, 2)))),
    ("timestamp:>2026-11-01", 0.0, ((">=", _ts(2026, 11, 2)),)),
    ("timestamp:>=2026-11-01", 0.0, ((">=", _ts(2026, 11, 1)),)),
    ("timestamp:<2026-11-01", 0.0, (("<", _ts(2026, 11, 1)),)),
    ("timestamp:<=2026-11-01", 0.0, (("<", _ts(2026, 11, 2)),)),
    ("timestamp:<=2026-11-01T00:00:00.25", 0.0, (("<=", _ts(2026, 11, 1) + 0.25),)),
]


@pytest.mark.parametrize(("query", "now", "bounds"), BOUNDS, ids=[b[0] for b in BOUNDS])
def test_compare_bounds(query: str, now: float, bounds: tuple) -> None:
    node = parse(query)
    assert isinstance(node, Compare)
    assert node.bounds(now) == bounds


@given(st.text(max_size=6), st.text(min_size=1, max_size=4))
def test_tag_prefix_range_holds_exactly_the_strings_starting_with_it(
    value: str, prefix: str
) -> None:
    """``tags.k:prefix*`` reads field_values as ``prefix <= value < _after_prefix(prefix)``,
    compared as SQLite compares text: UTF-8 bytes."""
    upper = _after_prefix(prefix)
    below = upper is None or value.encode() < upper.encode()
    assert (prefix.encode() <= value.encode() and below) == value.startswith(prefix)


def test_tag_prefix_range_edges() -> None:
    assert _after_prefix("Chr") == "Chs"
    assert _after_prefix("a\U0010ffff") == "b"
    assert _after_prefix("\U0010ffff") is None
    assert _after_prefix("\ud7ff") == "\ue000"
