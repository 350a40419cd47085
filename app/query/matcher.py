"""The in-process compiler: a query becomes a predicate over one processed event.

Alert rules run it for every stored event, so the tree is walked once, at
compile time, into nested closures; evaluating touches only the fields the
query names.  Field values come from app.fields and text from app.text, the
same functions storage indexes with, which is what keeps this matcher and the
SQLite compiler in exact agreement (tests/test_query_consistency.py).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from app import fields
from app.query import ast
from app.query.ast import Node
from app.text import query_tokens, streams

Event = dict[str, Any]
Predicate = Callable[[Event], bool]

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


@lru_cache(maxsize=4096)
def _padded_words(text: str) -> str:
    # The words stream is the query tokens of the text (app/text.py says so), and
    # much cheaper than streams(), which also splits every word into parts.
    return " " + " ".join(query_tokens(text)) + " "


@lru_cache(maxsize=4096)
def _padded_parts(text: str) -> str:
    return " " + streams(text).parts + " "


def text_contains(text: str, needle: str) -> bool:
    """The app/text.py rule: the needle's tokens occur consecutively in either stream.

    Streams are cached by text because one event meets many rules, and one
    message many events.
    """
    return needle in _padded_words(text) or needle in _padded_parts(text)


def compile_matcher(node: Node | None, now: float) -> Predicate:
    """A predicate equal to the query; ``now`` fixes relative times like ``-24h``."""
    if node is None:
        return lambda event: True
    return _compile(node, now)


def _compile(node: Node, now: float) -> Predicate:
    if isinstance(node, ast.And):
        return _all(tuple(_compile(c, now) for c in sorted(node.children, key=_cost)))
    if isinstance(node, ast.Or):
        return _any(tuple(_compile(c, now) for c in sorted(node.children, key=_cost)))
    if isinstance(node, ast.Not):
        inner = _compile(node.child, now)
        return lambda event: not inner(event)
    if isinstance(node, ast.Text):
        return _text(node.tokens, node.prefix)
    if isinstance(node, ast.FieldText):
        return _field_text(node)
    if isinstance(node, ast.Keyword):
        return _keyword(node)
    if isinstance(node, ast.Tag):
        return _tag(node)
    if isinstance(node, ast.Compare):
        return _compare(node, now)
    raise TypeError(f"not a query node: {node!r}")


def _cost(node: Node) -> int:
    """Rough evaluation cost, so AND/OR try cheap terms first and often skip tokenizing."""
    if isinstance(node, ast.Compare):
        return 0
    if isinstance(node, ast.Tag):
        return 1
    if isinstance(node, ast.Keyword):
        return 1 if ast.FIELDS[node.field] == ast.KEYWORD_SCALAR else 2
    if isinstance(node, ast.FieldText):
        return 3 if node.field == "message" else 4
    if isinstance(node, ast.Not):
        return _cost(node.child)
    if isinstance(node, ast.And | ast.Or):
        return max(_cost(c) for c in node.children)
    return 4


def _all(preds: tuple[Predicate, ...]) -> Predicate:
    if len(preds) == 2:
        a, b = preds
        return lambda event: a(event) and b(event)

    def every(event: Event) -> bool:
        # A plain loop: about twice as fast as all() over a generator, per event.
        for pred in preds:  # noqa: SIM110
            if not pred(event):
                return False
        return True

    return every


def _any(preds: tuple[Predicate, ...]) -> Predicate:
    if len(preds) == 2:
        a, b = preds
        return lambda event: a(event) or b(event)

    def some(event: Event) -> bool:
        for pred in preds:  # noqa: SIM110
            if pred(event):
                return True
        return False

    return some


def _text_test(tokens: tuple[str, ...], prefix: bool) -> Callable[[str], bool]:
    """The text rule for one term, with a cheap rejection before tokenizing.

    Every stream token is ``piece.lower()`` for some piece of the text, and
    lower-casing a whole text changes nothing about an ASCII run inside it
    (only a Greek sigma depends on context, and it is not ASCII), so an ASCII
    token missing from ``text.lower()`` cannot match.
    """
    needle = ast.needle(tokens, prefix)
    probes = tuple(t for t in tokens if t.isascii())

    def test(text: str) -> bool:
        if probes:
            low = text.lower()
            for probe in probes:
                if probe not in low:
                    return False
        return text_contains(text, needle)

    return test


def _text(tokens: tuple[str, ...], prefix: bool) -> Predicate:
    test, text_of = _text_test(tokens, prefix), fields.text
    return lambda event: test(text_of(event))


def _field_text(node: ast.FieldText) -> Predicate:
    test = _text_test(node.tokens, node.prefix)
    if node.field == "message":
        message = fields.message
        return lambda event: test(message(event))
    name, multi = node.field, fields.multi
    return lambda event: any(test(v) for v in multi(event, name))


def _keyword(node: ast.Keyword) -> Predicate:
    name, value = node.field, node.value
    if ast.FIELDS[name] == ast.KEYWORD_MULTI:
        multi = fields.multi
        if node.prefix:
            return lambda event: any(v.startswith(value) for v in multi(event, name))
        return lambda event: value in multi(event, name)
    scalar = fields.scalar
    if node.prefix:

        def starts(event: Event) -> bool:
            found = scalar(event, name)
            return found is not None and found.startswith(value)

        return starts
    return lambda event: scalar(event, name) == value


def _tag(node: ast.Tag) -> Predicate:
    key, value, tags = node.key, node.value, fields.tags
    if node.prefix:

        def starts(event: Event) -> bool:
            found = tags(event).get(key)
            return isinstance(found, str) and found.startswith(value)

        return starts

    def equals(event: Event) -> bool:
        found = tags(event).get(key)
        return isinstance(found, str) and found == value

    return equals


def _compare(node: ast.Compare, now: float) -> Predicate:
    get: Callable[[Event], Any]
    if node.field == "level":
        level_num = fields.level_num
        get = lambda event: level_num(event.get("level"))  # noqa: E731
    elif node.field == "issue":
        get = operator.methodcaller("get", "issue_id")
    else:
        get = operator.methodcaller("get", "timestamp")
    checks = tuple((_OPS[op], bound) for op, bound in node.bounds(now))
    if len(checks) == 1:
        ((test, bound),) = checks

        def one(event: Event) -> bool:
            found = get(event)
            return found is not None and test(found, bound)

        return one

    def every(event: Event) -> bool:
        found = get(event)
        return found is not None and all(test(found, bound) for test, bound in checks)

    return every
