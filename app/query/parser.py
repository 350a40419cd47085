"""The query language (``q``): a hand-written scanner and recursive-descent parser.

Grammar (``NOT`` binds tighter than ``AND``, ``AND`` tighter than ``OR``)::

    query   := or? END
    or      := and ("OR" and)*
    and     := unary (["AND"] unary)*          juxtaposition is AND
    unary   := ("NOT" | "-") unary | "(" or ")" | term
    term    := WORD | PHRASE | FIELD ":" [op] value
    op      := ">=" | "<=" | ">" | "<" | "="
    value   := BARE | PHRASE                   a trailing * (bare, or right after
                                                the closing quote) makes it a prefix

Only upper-case ``AND``/``OR``/``NOT`` are operators; ``and`` is a word.  ``-``
negates when it starts a term (``-level:error``, ``-(a b)``); inside a word it
is just a character.  In quotes ``\\"`` and ``\\\\`` are escapes and ``*`` is
literal.  ``name:`` makes a field term when ``name`` looks like a field name
(``[A-Za-z_][A-Za-z0-9_.]*``) or starts with ``tags.``; unknown names are an
error, so text that contains ``:`` (a URL) must be quoted.  Tag keys with odd
characters can be quoted: ``tags."my key":x``.

Semantics, identical in the SQLite, Elasticsearch and in-process compilers:

* Free words and phrases search app.fields.text (message, exception
  type/value/module, frame function/module/filename) with the two-stream rule
  of app/text.py: the term's tokens must occur consecutively in ``words`` or in
  ``parts``; ``word*`` makes the last token a prefix.  ``NullPointerException``,
  ``nullpointer*``, ``pointer``, ``my_module`` and ``handleRequest`` all work.
* ``message:`` and ``exception.value:`` are text fields: the same rule,
  restricted to that field (for exception.value, to one value at a time).
* Keyword fields (environment, release, platform, logger, server_name,
  transaction, user.id, user.email, exception.type, frame.function,
  frame.module, frame.filename, tags.<key>) match exactly and
  case-sensitively, like Sentry; ``field:abc*`` is a prefix match and
  ``field:*`` means the field is present.
* ``level`` takes a level name (any case) and compares by severity:
  ``level:>=warning``.  ``issue`` takes an issue id.  ``timestamp`` takes
  ``2026-11-01``, ``2026-11-01T10:00``, ``2026-11-01T10:00:00[.ffffff]`` with an
  optional ``Z``/``+01:00`` (UTC when absent), or a relative ``-30s``/``-15m``/
  ``-24h``/``-7d``/``-2w``.  An absolute time is an interval at its precision
  (``timestamp:2026-11-01`` is that whole UTC day, ``<=2026-11-01`` includes
  it, ``>2026-11-01`` starts the next day); a relative time is a point, and
  ``timestamp:-24h`` means "since".  Comparisons on any other field are an error.
* Multi-valued fields match when ANY value matches, so ``-exception.type:X``
  means no exception has type X.  A missing field never matches
  ``field:value``, so it always matches ``-field:value``.
* Limits against hostile input: at most 1,000 characters and 12 levels of
  nesting (parentheses and negations).  The nesting limit is Elasticsearch's:
  it refuses bool queries nested more than 29 deep
  (``indices.query.bool.max_nested_depth``), and each level here can add two
  (an OR inside an AND inside the parentheses), plus three around them, so 12
  keeps every query that parses answerable by every backend.

Every mistake raises :class:`QueryError` (a ``400``) with the 0-based
character position and what was expected there.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import NamedTuple

from app.fields import LEVELS
from app.query import ast
from app.query.ast import Node
from app.text import query_tokens

MAX_LENGTH = 1000
MAX_DEPTH = 12
_MAX_ISSUE = 2**63 - 1

_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_OPS = (">=", "<=", ">", "<", "=")
_STOP = frozenset('()"')
_ISSUE = re.compile(r"[0-9]{1,19}")
_RELATIVE = re.compile(r"-([0-9]{1,9})([smhdw])")
# Seconds per unit of relative times (-24h) and of histogram intervals (1h).
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_ABSOLUTE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?",
    re.IGNORECASE | re.ASCII,
)
_TIME_FORMS = "a time like 2026-11-01, 2026-11-01T10:00:00Z or -24h"
_LEVEL_NAMES = ", ".join(LEVELS)


class QueryError(ValueError):
    """A query that does not parse; the API answers ``400 invalid_query``."""

    status = 400
    code = "invalid_query"

    def __init__(self, position: int, expected: str, got: str | None = None) -> None:
        self.position = position
        self.expected = expected
        message = f"at position {position}: expected {expected}"
        if got is not None:
            message += f", got {got}"
        super().__init__(message)


class _Tok(NamedTuple):
    kind: str  # "(", ")", "AND", "OR", "NOT", "-", "text", "field", "end"
    pos: int
    value: str = ""  # text / field value, unquoted
    prefix: bool = False
    field: str = ""  # field name as written ("tags.<key>" for tags)
    op: str = ""
    op_pos: int = 0
    value_pos: int = 0


def _describe(tok: _Tok, query: str) -> str:
    if tok.kind == "end":
        return "the end of the query"
    if tok.kind in ("(", ")", "AND", "OR", "NOT", "-"):
        return f"'{tok.kind}'"
    end = tok.pos + 1
    while end < len(query) and not query[end].isspace():
        end += 1
    return repr(query[tok.pos : min(end, tok.pos + 40)])


def _quoted(q: str, start: int) -> tuple[str, int]:
    """The string in the quotes opening at ``start`` and the index after its close."""
    out: list[str] = []
    i, n = start + 1, len(q)
    while i < n:
        c = q[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\" and i + 1 < n and q[i + 1] in '"\\':
            out.append(q[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    raise QueryError(start, "a closing '\"' for the quote opened here")


def _bare_end(q: str, i: int) -> int:
    n = len(q)
    while i < n and not q[i].isspace() and q[i] not in _STOP:
        i += 1
    return i


def _wildcard(raw: str, pos: int) -> tuple[str, bool]:
    """Split a bare value into (value, is_prefix); ``*`` is allowed only at the end."""
    prefix = raw.endswith("*")
    value = raw[:-1] if prefix else raw
    star = value.find("*")
    if star >= 0:
        raise QueryError(
            pos + star, "'*' only at the end of a value (quote the value to search a literal '*')"
        )
    return value, prefix


def _scan(q: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(q)
    while True:
        while i < n and q[i].isspace():
            i += 1
        if i >= n:
            toks.append(_Tok("end", n))
            return toks
        c = q[i]
        if c in "()":
            toks.append(_Tok(c, i))
            i += 1
        elif c == '"':
            value, after = _quoted(q, i)
            prefix = after < n and q[after] == "*"
            toks.append(_Tok("text", i, value, prefix))
            i = after + prefix
        elif c == "-" and i + 1 < n and not q[i + 1].isspace() and q[i + 1] != ")":
            toks.append(_Tok("-", i))
            i += 1
        else:
            i = _scan_bare(q, i, toks)


def _scan_bare(q: str, start: int, toks: list[_Tok]) -> int:
    n = len(q)
    end = _bare_end(q, start)
    run = q[start:end]
    if run in ("AND", "OR", "NOT"):
        toks.append(_Tok(run, start))
        return end
    colon = run.find(":")
    name = run[:colon] if colon > 0 else ""
    if run == "tags." and end < n and q[end] == '"':
        key, after = _quoted(q, end)
        if after >= n or q[after] != ":":
            raise QueryError(after, "':' after the quoted tag key")
        return _scan_value(q, start, "tags." + key, after + 1, toks)
    if colon > 0 and (name.startswith("tags.") or _FIELD_NAME.fullmatch(name)):
        return _scan_value(q, start, name, start + colon + 1, toks)
    if run == "-":
        raise QueryError(start, "a term after '-'")
    value, prefix = _wildcard(run, start)
    toks.append(_Tok("text", start, value, prefix))
    return end


def _scan_value(q: str, start: int, name: str, i: int, toks: list[_Tok]) -> int:
    """Scan the ``[op] value`` that follows ``name:`` (``i`` is just past the colon)."""
    n = len(q)
    op_pos = i
    op = next((o for o in _OPS if q.startswith(o, i)), "")
    i += len(op)
    if i < n and q[i] == '"':
        value, after = _quoted(q, i)
        prefix = after < n and q[after] == "*"
        toks.append(_Tok("field", start, value, prefix, name, op, op_pos, i))
        return after + prefix
    end = _bare_end(q, i)
    if end == i:
        raise QueryError(i, f"a value after '{q[start:i]}'")
    value, prefix = _wildcard(q[i:end], i)
    toks.append(_Tok("field", start, value, prefix, name, op, op_pos, i))
    return end


class _Parser:
    def __init__(self, q: str) -> None:
        self.q = q
        self.toks = _scan(q)
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def parse(self) -> Node | None:
        if self.peek().kind == "end":
            return None
        node = self.or_(0, None)
        tok = self.peek()
        if tok.kind != "end":
            expected = "AND, OR or the end of the query"
            if tok.kind == ")":
                expected = "the end of the query (this ')' closes nothing)"
            raise QueryError(tok.pos, expected, _describe(tok, self.q))
        return node

    def or_(self, depth: int, after: _Tok | None) -> Node:
        children = [self.and_(depth, after)]
        while self.peek().kind == "OR":
            op = self.next()
            children.append(self.and_(depth, op))
        return _flat(ast.Or, children)

    def and_(self, depth: int, after: _Tok | None) -> Node:
        children = [self.unary(depth, after)]
        while True:
            kind = self.peek().kind
            if kind == "AND":
                op = self.next()
                children.append(self.unary(depth, op))
            elif kind in ("text", "field", "(", "-", "NOT"):
                children.append(self.unary(depth, None))
            else:
                return _flat(ast.And, children)

    def unary(self, depth: int, after: _Tok | None) -> Node:
        tok = self.next()
        if tok.kind in ("NOT", "-", "("):
            if depth >= MAX_DEPTH:
                raise QueryError(tok.pos, f"at most {MAX_DEPTH} levels of nesting")
            if tok.kind == "(":
                node = self.or_(depth + 1, tok)
                close = self.next()
                if close.kind != ")":
                    raise QueryError(
                        close.pos,
                        f"')' to close the '(' at position {tok.pos}",
                        _describe(close, self.q),
                    )
                return node
            return ast.Not(self.unary(depth + 1, tok))
        if tok.kind == "text":
            return ast.Text(_tokens(tok.value, tok.pos), tok.prefix)
        if tok.kind == "field":
            return _field(tok, self.q)
        expected = "a term" if after is None else f"a term after '{after.kind}'"
        raise QueryError(tok.pos, expected, _describe(tok, self.q))


def _flat(kind: type[ast.And] | type[ast.Or], children: list[Node]) -> Node:
    if len(children) == 1:
        return children[0]
    flat: list[Node] = []
    for child in children:
        flat.extend(child.children if isinstance(child, kind) else (child,))
    return kind(tuple(flat))


def _tokens(value: str, pos: int) -> tuple[str, ...]:
    tokens = tuple(query_tokens(value))
    if not tokens:
        raise QueryError(pos, "a search term with letters or digits")
    return tokens


def _field(tok: _Tok, q: str) -> Node:
    name, value, pos = tok.field, tok.value, tok.value_pos
    if name.startswith(ast.TAG_PREFIX):
        key = name[len(ast.TAG_PREFIX) :]
        if not key:
            raise QueryError(tok.pos + len(ast.TAG_PREFIX), "a tag key after 'tags.'")
        kind = ast.KEYWORD_SCALAR
    else:
        kind = ast.FIELDS.get(name, "")
        if not kind:
            raise QueryError(
                tok.pos,
                f"a known field ({', '.join(ast.FIELDS)} or tags.<key>)",
                f"{name!r} (quote the term to search text that contains ':')",
            )
    if tok.op and kind != ast.ORDERED:
        raise QueryError(
            tok.op_pos,
            f"a value without '{tok.op}': only level, issue and timestamp can be compared",
        )
    if kind == ast.ORDERED:
        if tok.prefix:
            raise QueryError(_star_pos(tok, q), f"a value without '*': {name} has no prefixes")
        return _ordered(name, tok.op or "=", value, pos)
    if kind in (ast.TEXT_SCALAR, ast.TEXT_MULTI):
        return ast.FieldText(name, _tokens(value, pos), tok.prefix)
    if name.startswith(ast.TAG_PREFIX):
        return ast.Tag(name[len(ast.TAG_PREFIX) :], value, tok.prefix)
    return ast.Keyword(name, value, tok.prefix)


def _star_pos(tok: _Tok, q: str) -> int:
    star = q.find("*", tok.value_pos)
    return star if star >= 0 else tok.value_pos


def _ordered(name: str, op: str, value: str, pos: int) -> ast.Compare:
    if name == "level":
        num = LEVELS.get(value.lower())
        if num is None:
            raise QueryError(pos, f"a level ({_LEVEL_NAMES})", repr(value))
        return ast.Compare("level", op, num)
    if name == "issue":
        if not _ISSUE.fullmatch(value) or int(value) > _MAX_ISSUE:
            raise QueryError(pos, "an issue id (a whole number)", repr(value))
        return ast.Compare("issue", op, int(value))
    return _time(op, value, pos)


def _time(op: str, value: str, pos: int) -> ast.Compare:
    rel = _RELATIVE.fullmatch(value)
    if rel:
        seconds = int(rel.group(1)) * UNIT_SECONDS[rel.group(2)]
        return ast.Compare("timestamp", op, float(seconds), relative=True)
    m = _ABSOLUTE.fullmatch(value)
    if not m:
        raise QueryError(pos, _TIME_FORMS, repr(value))
    year, month, day, hour, minute, second, frac, tz = m.groups()
    try:
        zone = UTC if tz is None or tz.upper() == "Z" else _zone(tz)
        when = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((frac or "0").ljust(6, "0")),
            tzinfo=zone,
        )
        start = when.timestamp()
    except (ValueError, OverflowError):
        raise QueryError(pos, _TIME_FORMS, f"{value!r}, which is not a valid date") from None
    span = 86400.0 if hour is None else 60.0 if second is None else 0.0 if frac else 1.0
    return ast.Compare("timestamp", op, start, span)


def _zone(tz: str) -> timezone:
    sign = -1 if tz[0] == "-" else 1
    digits = tz[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


def parse(q: str) -> Node | None:
    """The syntax tree of ``q``; None for an empty (match-everything) query."""
    if len(q) > MAX_LENGTH:
        raise QueryError(MAX_LENGTH, f"a query of at most {MAX_LENGTH} characters")
    return _Parser(q).parse()


def quote(value: str) -> str:
    """``value`` as a query value that parses back to exactly ``value`` (no wildcard)."""
    if value and _bare_end(value, 0) == len(value) and _plain(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _plain(value: str) -> bool:
    return (
        "*" not in value
        and ":" not in value
        and value not in ("AND", "OR", "NOT")
        and not value.startswith(("-", *_OPS))
    )
