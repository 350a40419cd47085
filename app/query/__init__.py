"""stacksift's one query language: parse once, compile to SQLite, Elasticsearch or a matcher.

The semantics are written down in :mod:`app.query.parser`.
"""

from app.query.ast import Node
from app.query.es import es_document, to_es
from app.query.matcher import compile_matcher
from app.query.parser import QueryError, parse, quote
from app.query.sqlite import register, to_sqlite

__all__ = [
    "Node",
    "QueryError",
    "compile_matcher",
    "es_document",
    "parse",
    "quote",
    "register",
    "to_es",
    "to_sqlite",
]
