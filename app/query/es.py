"""The Elasticsearch compiler: a query becomes query DSL (a pure function, no client).

It assumes event documents of exactly this shape; build them with
:func:`es_document` so the index and the compiler cannot drift.  Missing or
empty values are left out of the document (never indexed as ``""`` or null),
which is what makes ``field:*`` an ``exists`` test and ``-field:x`` true for
events without the field.

====================  =========================  ======================================
field                 mapping                    value
====================  =========================  ======================================
event_id              keyword
project_id            long
issue_id              long                       the ``issue`` field
timestamp             date (epoch_millis)        ``round(timestamp * 1000)``
received              date (epoch_millis)
level                 keyword
level_num             integer                    app.fields.level_num: ``level:>=x``
platform, environment, release, logger, server_name, transaction, user_id, user_email
                      keyword                    app.fields.scalar (user.id -> user_id)
message               keyword (index: false)     for display only
message_words         text, whitespace analyzer  app.text.streams(message).words
message_parts         text, whitespace analyzer  ...parts
exception_type, exception_value, frame_function, frame_module, frame_filename
                      keyword arrays             app.fields.multi (dots become _)
exception_value_words text array, whitespace     app.text.streams(v).words per value
exception_value_parts text array, whitespace     ...parts per value
words                 text, whitespace analyzer  app.text.streams(app.fields.text(e)).words
parts                 text, whitespace analyzer  ...parts
tags_kv               keyword array              :func:`tag_kv` (key, value) per tag
tags_keys             keyword array              tag keys
====================  =========================  ======================================

Template requirements: keyword fields without ``ignore_above`` (a value that is
not indexed silently stops matching); text fields with ``"analyzer":
"whitespace"`` (the streams are already lower-cased tokens, so indexing must
not change them) and the default ``position_increment_gap`` (100), which stops
a phrase from spanning two values of an array.  Times compare at millisecond
precision, the precision of an ES ``date``.

Boolean structure: AND is ``bool.filter`` (no scoring: results sort by time),
OR is ``bool.should`` with ``minimum_should_match: 1``, NOT is ``bool.must_not``.
"""

from __future__ import annotations

from typing import Any

from app import fields
from app.query import ast
from app.query.ast import Node
from app.text import streams

_KEYWORDS = {
    "environment": "environment",
    "release": "release",
    "platform": "platform",
    "logger": "logger",
    "server_name": "server_name",
    "transaction": "transaction",
    "user.id": "user_id",
    "user.email": "user_email",
    "exception.type": "exception_type",
    "frame.function": "frame_function",
    "frame.module": "frame_module",
    "frame.filename": "frame_filename",
}
_TEXT_FIELDS = {
    "message": ("message_words", "message_parts"),
    "exception.value": ("exception_value_words", "exception_value_parts"),
}
_ORDERED = {"level": "level_num", "issue": "issue_id", "timestamp": "timestamp"}
_RANGE_OPS = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}


def tag_kv(key: str, value: str) -> str:
    """``key=value`` with ``\\`` and ``=`` in the key escaped, so the split is unambiguous."""
    return key.replace("\\", "\\\\").replace("=", "\\=") + "=" + value


def es_document(event: dict[str, Any]) -> dict[str, Any]:
    """The document the distributed backend indexes for a processed event (``issue_id`` set)."""
    doc: dict[str, Any] = {
        "event_id": event["event_id"],
        "project_id": event["project_id"],
        "issue_id": event["issue_id"],
        "timestamp": round(event["timestamp"] * 1000),
        "received": round(event["received"] * 1000),
        "level": event["level"],
        "level_num": fields.level_num(event["level"]),
    }
    for name in fields.SCALAR_FIELDS:
        value = fields.scalar(event, name)
        if value is not None and name != "level":
            doc[name.replace(".", "_")] = value
    if "message" in doc:
        doc["message_words"], doc["message_parts"] = streams(doc["message"])
    for name in fields.MULTI_FIELDS:
        values = fields.multi(event, name)
        if values:
            doc[name.replace(".", "_")] = values
    values = doc.get("exception_value", [])
    if values:
        split = [streams(v) for v in values]
        doc["exception_value_words"] = [s.words for s in split]
        doc["exception_value_parts"] = [s.parts for s in split]
    doc["words"], doc["parts"] = streams(fields.text(event))
    tags = {k: v for k, v in fields.tags(event).items() if isinstance(v, str)}
    if tags:
        doc["tags_kv"] = [tag_kv(k, v) for k, v in tags.items()]
        doc["tags_keys"] = list(tags)
    return doc


def to_es(node: Node | None, now: float) -> dict[str, Any]:
    """Query DSL for ``node``; ``now`` (epoch seconds) fixes relative times like ``-24h``."""
    if node is None:
        return {"match_all": {}}
    return _es(node, now)


def _es(node: Node, now: float) -> dict[str, Any]:
    if isinstance(node, ast.And):
        return {"bool": {"filter": [_es(c, now) for c in node.children]}}
    if isinstance(node, ast.Or):
        return {"bool": {"should": [_es(c, now) for c in node.children], "minimum_should_match": 1}}
    if isinstance(node, ast.Not):
        return {"bool": {"must_not": [_es(node.child, now)]}}
    if isinstance(node, ast.Text):
        return _text(("words", "parts"), node.tokens, node.prefix)
    if isinstance(node, ast.FieldText):
        return _text(_TEXT_FIELDS[node.field], node.tokens, node.prefix)
    if isinstance(node, ast.Keyword):
        return _keyword(_KEYWORDS[node.field], node.value, node.prefix)
    if isinstance(node, ast.Tag):
        if node.prefix and not node.value:
            return {"term": {"tags_keys": node.key}}
        return _keyword("tags_kv", tag_kv(node.key, node.value), node.prefix)
    if isinstance(node, ast.Compare):
        return _compare(node, now)
    raise TypeError(f"not a query node: {node!r}")


def _keyword(field: str, value: str, prefix: bool) -> dict[str, Any]:
    if not prefix:
        return {"term": {field: value}}
    if not value:
        return {"exists": {"field": field}}
    return {"prefix": {field: value}}


def _text(names: tuple[str, str], tokens: tuple[str, ...], prefix: bool) -> dict[str, Any]:
    return {
        "bool": {
            "should": [_phrase(name, tokens, prefix) for name in names],
            "minimum_should_match": 1,
        }
    }


def _phrase(field: str, tokens: tuple[str, ...], prefix: bool) -> dict[str, Any]:
    """Exact phrase / phrase-with-prefix on pre-tokenized text.

    ``match_phrase_prefix`` is not used: it expands only the first 50 terms, so
    it would miss events the other backends find.  A span query is exact.
    """
    if not prefix:
        return {"match_phrase": {field: " ".join(tokens)}}
    if len(tokens) == 1:
        return {"prefix": {field: tokens[0]}}
    clauses: list[dict[str, Any]] = [{"span_term": {field: t}} for t in tokens[:-1]]
    clauses.append({"span_multi": {"match": {"prefix": {field: tokens[-1]}}}})
    return {"span_near": {"clauses": clauses, "slop": 0, "in_order": True}}


def _compare(node: ast.Compare, now: float) -> dict[str, Any]:
    field = _ORDERED[node.field]
    # Levels and issue ids are whole numbers; times become epoch milliseconds.
    scale = 1000 if field == "timestamp" else 1
    bounds = [(op, round(v * scale)) for op, v in node.bounds(now)]
    if len(bounds) == 1 and bounds[0][0] == "=":
        return {"term": {field: bounds[0][1]}}
    return {"range": {field: {_RANGE_OPS[op]: v for op, v in bounds}}}
