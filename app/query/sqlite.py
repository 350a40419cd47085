"""The SQLite compiler: a query becomes a WHERE fragment over ``events``.

The fragment uses unaliased ``events`` columns and is safe to AND with other
conditions (``SqliteStore.list_events(where=..., args=...)``).  Every
sub-expression is 0 or 1, never NULL, so ``NOT`` over a missing field gives
what the in-process matcher gives.  User input only ever reaches SQLite as a
bound parameter, and FTS5 only as double-quoted phrases built from
app.text.query_tokens, so neither SQL nor FTS5 syntax can be injected.

Free text terms are answered by the FTS5 index alone.  That is exact, not a
candidate filter: the indexed columns are app/text.py's streams (lower-cased
tokens joined by single spaces) and the ``ascii`` tokenizer splits them only
at those spaces and folds nothing else (no ``café`` -> ``cafe`` as unicode61
would), so an FTS5 phrase of query tokens, with ``*`` on the last for a
prefix, matches exactly when the app/text.py needle occurs in ``words`` or in
``parts``.  (Re-checking that with ``instr`` on the stored text read every
candidate's text and made common words cost ~0.5 s at 1M events.)
``message:`` and ``exception.value:`` need the streams of one field, which the
index does not keep, so they call the SQL function :data:`FUNCTION`, which
:func:`register` must install on every connection that runs these fragments.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from app.fields import SQL_COLUMNS
from app.query import ast
from app.query.ast import Node
from app.query.matcher import text_contains

FUNCTION = "stacksift_text_match"

# level is compared by severity (_ORDERED), not by its name.
_COLUMNS = {k: v for k, v in SQL_COLUMNS.items() if k != "level"}
_ORDERED = {"level": "level_num", "issue": "issue_id", "timestamp": "timestamp"}
# Constant JSON paths into events.multi (keys contain dots, hence the quotes).
_MULTI_PATHS = {
    "exception.type": "'$.\"exception.type\"'",
    "exception.value": "'$.\"exception.value\"'",
    "frame.function": "'$.\"frame.function\"'",
    "frame.module": "'$.\"frame.module\"'",
    "frame.filename": "'$.\"frame.filename\"'",
}
_FTS = "id IN (SELECT rowid FROM events_fts WHERE events_fts MATCH ?)"
# Longer AND/OR chains are nested in halves so SQLite's expression depth stays small.
_CHAIN = 8


def register(conn: sqlite3.Connection) -> None:
    """Install :data:`FUNCTION` (``message:``/``exception.value:`` terms need it)."""
    conn.create_function(FUNCTION, 2, _text_match, deterministic=True)


def _text_match(value: Any, needle: Any) -> int:
    return 1 if isinstance(value, str) and text_contains(value, needle) else 0


def fts_phrase(tokens: tuple[str, ...], prefix: bool) -> str:
    """An FTS5 query for the phrase ``tokens``: one quoted string, so no operator can leak."""
    quoted = '"' + " ".join(t.replace('"', '""') for t in tokens) + '"'
    return quoted + " *" if prefix else quoted


def to_sqlite(node: Node | None, now: float, project_id: int) -> tuple[str, list[Any]]:
    """``(where_fragment, params)`` for events of ``project_id`` (tag terms look it up in
    field_values' index); ``now`` fixes relative times like ``-24h``."""
    if node is None:
        return "1", []
    params: list[Any] = []
    sql, level = _sql(node, now, params, project_id)
    return (sql if level == _ATOM else f"({sql})"), params


# SQLite's parser has a fixed stack: 18 levels of ``(1 OR 1 AND (...))`` overflow it,
# fewer inside the subqueries of the issue and top queries, and the deepest queries
# app.query.parser allows failed there ("parser stack overflow", a 500).  Two things keep
# the nesting small: a parent adds parentheses only where SQL's precedence (NOT over AND
# over OR) needs them, and the deepest operand comes first, so that the parser holds no
# unfinished ``x OR y AND`` of each level while it reads the next (91 levels then fit).
_ATOM, _AND, _OR = 0, 1, 2


def _sql(node: Node, now: float, params: list[Any], project_id: int) -> tuple[str, int]:
    if isinstance(node, ast.And | ast.Or):
        level, op = (_AND, " AND ") if isinstance(node, ast.And) else (_OR, " OR ")
        children = sorted(node.children, key=_depth, reverse=True)  # stable: else as written
        parts = [_bound(c, now, params, project_id, level) for c in children]
        return _chain(parts, op), level
    if isinstance(node, ast.Not):
        return f"NOT {_bound(node.child, now, params, project_id, _ATOM)}", _ATOM
    if isinstance(node, ast.Text):
        params.append(fts_phrase(node.tokens, node.prefix))
        return _FTS, _ATOM
    if isinstance(node, ast.FieldText):
        return _field_text(node, params), _ATOM
    if isinstance(node, ast.Keyword):
        return _keyword(node, params), _ATOM
    if isinstance(node, ast.Tag):
        return _tag(node, project_id, params), _ATOM
    if isinstance(node, ast.Compare):
        column = _ORDERED[node.field]
        parts = []
        for op, bound in node.bounds(now):
            parts.append(f"{column} {op} ?")
            params.append(bound)
        return _chain(parts, " AND "), (_ATOM if len(parts) == 1 else _AND)
    raise TypeError(f"not a query node: {node!r}")


def _bound(node: Node, now: float, params: list[Any], project_id: int, context: int) -> str:
    """``node`` as an operand of an operator binding at ``context``, parenthesised if looser."""
    sql, level = _sql(node, now, params, project_id)
    return f"({sql})" if level > context else sql


def _depth(node: Node) -> int:
    if isinstance(node, ast.And | ast.Or):
        return 1 + max(_depth(c) for c in node.children)
    if isinstance(node, ast.Not):
        return 1 + _depth(node.child)
    return 0


def _chain(parts: list[str], op: str) -> str:
    """``parts`` joined by ``op``; long chains are grouped in halves so that SQLite's
    expression tree stays shallow (same operator, so the grouping changes nothing)."""
    if len(parts) > _CHAIN:
        half = len(parts) // 2
        return f"({_chain(parts[:half], op)}){op}({_chain(parts[half:], op)})"
    return op.join(parts)


def _match(column: str, value: str, prefix: bool, params: list[Any]) -> str:
    """``column`` equals / starts with ``value``: no LIKE or GLOB, so no wildcard escaping."""
    if not prefix:
        params.append(value)
        return f"{column} = ?"
    if not value:
        return f"{column} IS NOT NULL"
    params.extend((len(value), value))
    return f"substr({column}, 1, ?) = ?"


def _tag(node: ast.Tag, project_id: int, params: list[Any]) -> str:
    """Events with the tag, from field_values' index (project, field, value): a range of
    it, where reading every event's tags JSON (json_each) cost a scan of the time range.
    field_values holds exactly the string-valued tags of every stored event."""
    params.extend((project_id, "tags." + node.key))
    sql = "id IN (SELECT event FROM field_values WHERE project_id = ? AND field = ?"
    if not node.prefix:
        params.append(node.value)
        return sql + " AND value = ?)"
    if not node.value:
        return sql + ")"
    params.append(node.value)
    upper = _after_prefix(node.value)
    if upper is None:  # only U+10FFFF characters: nothing sorts after them
        return sql + " AND value >= ?)"
    params.append(upper)
    return sql + " AND value >= ? AND value < ?)"


def _after_prefix(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix`` (SQLite
    compares text as UTF-8 bytes, which orders like code points)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            bump = last + 1 if last + 1 != 0xD800 else 0xE000  # surrogates are no characters
            return prefix[:-1] + chr(bump)
        prefix = prefix[:-1]
    return None


def _keyword(node: ast.Keyword, params: list[Any]) -> str:
    if node.field in _MULTI_PATHS:
        match = _match("value", node.value, node.prefix, params)
        return f"EXISTS (SELECT 1 FROM json_each(multi, {_MULTI_PATHS[node.field]}) WHERE {match})"
    column = _COLUMNS[node.field]
    if node.prefix and not node.value:
        return f"{column} IS NOT NULL"
    return f"coalesce({_match(column, node.value, node.prefix, params)}, 0)"


def _field_text(node: ast.FieldText, params: list[Any]) -> str:
    needle = ast.needle(node.tokens, node.prefix)
    params.extend((fts_phrase(node.tokens, node.prefix), needle))
    if node.field == "message":
        check = f"{FUNCTION}(message, ?)"
    else:
        path = _MULTI_PATHS[node.field]
        check = f"EXISTS (SELECT 1 FROM json_each(multi, {path}) WHERE {FUNCTION}(value, ?))"
    # The FTS5 test is implied by the exact check (a field's text is part of the
    # indexed text); it only narrows the rows the Python function must look at.
    return f"({_FTS} AND {check})"
