"""Golden Elasticsearch DSL for representative queries, written out by hand.

The distributed backend runs these against a real cluster; here they pin the
compiler's output so a change in it is a deliberate, reviewed change.
"""

from __future__ import annotations

from typing import Any

import pytest

from app.query import es_document, parse, to_es
from app.query.es import tag_kv

NOW = 1_793_491_200.0  # 2026-11-01T00:00:00Z


def _either(query: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    return {"bool": {"should": [query, other], "minimum_should_match": 1}}


GOLDEN: list[tuple[str, dict[str, Any]]] = [
    ("", {"match_all": {}}),
    (
        "NullPointerException",
        _either(
            {"match_phrase": {"words": "nullpointerexception"}},
            {"match_phrase": {"parts": "nullpointerexception"}},
        ),
    ),
    (
        "nullpointer*",
        _either({"prefix": {"words": "nullpointer"}}, {"prefix": {"parts": "nullpointer"}}),
    ),
    (
        "my_module",
        _either({"match_phrase": {"words": "my module"}}, {"match_phrase": {"parts": "my module"}}),
    ),
    (
        '"connection ref"*',
        _either(
            {
                "span_near": {
                    "clauses": [
                        {"span_term": {"words": "connection"}},
                        {"span_multi": {"match": {"prefix": {"words": "ref"}}}},
                    ],
                    "slop": 0,
                    "in_order": True,
                }
            },
            {
                "span_near": {
                    "clauses": [
                        {"span_term": {"parts": "connection"}},
                        {"span_multi": {"match": {"prefix": {"parts": "ref"}}}},
                    ],
                    "slop": 0,
                    "in_order": True,
                }
            },
        ),
    ),
    (
        'message:"Connection refused"',
        _either(
            {"match_phrase": {"message_words": "connection refused"}},
            {"match_phrase": {"message_parts": "connection refused"}},
        ),
    ),
    (
        "exception.value:timeout*",
        _either(
            {"prefix": {"exception_value_words": "timeout"}},
            {"prefix": {"exception_value_parts": "timeout"}},
        ),
    ),
    ("environment:production", {"term": {"environment": "production"}}),
    ("release:1.2.*", {"prefix": {"release": "1.2."}}),
    ("release:*", {"exists": {"field": "release"}}),
    ('transaction:"/a b"', {"term": {"transaction": "/a b"}}),
    ("user.id:42", {"term": {"user_id": "42"}}),
    ("user.email:a@x.io", {"term": {"user_email": "a@x.io"}}),
    ("exception.type:ValueError", {"term": {"exception_type": "ValueError"}}),
    ("frame.filename:src/*", {"prefix": {"frame_filename": "src/"}}),
    ("tags.browser:Chrome", {"term": {"tags_kv": "browser=Chrome"}}),
    ("tags.browser:Chr*", {"prefix": {"tags_kv": "browser=Chr"}}),
    ("tags.browser:*", {"term": {"tags_keys": "browser"}}),
    ('tags."a=b":c', {"term": {"tags_kv": "a\\=b=c"}}),
    ("level:error", {"term": {"level_num": 40}}),
    ("level:>=warning", {"range": {"level_num": {"gte": 30}}}),
    ("level:<info", {"range": {"level_num": {"lt": 20}}}),
    ("issue:7", {"term": {"issue_id": 7}}),
    ("timestamp:>-24h", {"range": {"timestamp": {"gt": 1_793_404_800_000}}}),
    ("timestamp:-1h", {"range": {"timestamp": {"gte": 1_793_487_600_000}}}),
    (
        "timestamp:2026-11-01",
        {"range": {"timestamp": {"gte": 1_793_491_200_000, "lt": 1_793_577_600_000}}},
    ),
    ("timestamp:<=2026-11-01", {"range": {"timestamp": {"lt": 1_793_577_600_000}}}),
    (
        "timestamp:>=2026-11-01T10:00:00+01:00",
        {"range": {"timestamp": {"gte": 1_793_523_600_000}}},
    ),
    (
        "environment:production level:>=error",
        {
            "bool": {
                "filter": [
                    {"term": {"environment": "production"}},
                    {"range": {"level_num": {"gte": 40}}},
                ]
            }
        },
    ),
    (
        "-exception.type:KeyError",
        {"bool": {"must_not": [{"term": {"exception_type": "KeyError"}}]}},
    ),
    (
        "a OR b c",
        {
            "bool": {
                "should": [
                    _either({"match_phrase": {"words": "a"}}, {"match_phrase": {"parts": "a"}}),
                    {
                        "bool": {
                            "filter": [
                                _either(
                                    {"match_phrase": {"words": "b"}},
                                    {"match_phrase": {"parts": "b"}},
                                ),
                                _either(
                                    {"match_phrase": {"words": "c"}},
                                    {"match_phrase": {"parts": "c"}},
                                ),
                            ]
                        }
                    },
                ],
                "minimum_should_match": 1,
            }
        },
    ),
    (
        "NOT (environment:prod* OR tags.region:eu) issue:>3",
        {
            "bool": {
                "filter": [
                    {
                        "bool": {
                            "must_not": [
                                {
                                    "bool": {
                                        "should": [
                                            {"prefix": {"environment": "prod"}},
                                            {"term": {"tags_kv": "region=eu"}},
                                        ],
                                        "minimum_should_match": 1,
                                    }
                                }
                            ]
                        }
                    },
                    {"range": {"issue_id": {"gt": 3}}},
                ]
            }
        },
    ),
]


@pytest.mark.parametrize(("query", "dsl"), GOLDEN, ids=[g[0] or "<empty>" for g in GOLDEN])
def test_golden(query: str, dsl: dict[str, Any]) -> None:
    assert to_es(parse(query), NOW) == dsl


def test_tag_kv_is_unambiguous() -> None:
    assert tag_kv("a=b", "c") != tag_kv("a", "b=c")
    assert tag_kv("a\\", "=c") != tag_kv("a\\=", "c")
    assert tag_kv("a\\", "=c") == "a\\\\==c"


def test_document_shape() -> None:
    event = {
        "event_id": "e" * 32,
        "project_id": 1,
        "issue_id": 9,
        "timestamp": 1_793_491_200.25,
        "received": 1_793_491_201.0,
        "level": "warning",
        "platform": "java",
        "environment": "",
        "user": {"id": 42},
        "tags": {"a=b": "c", "browser": "Chrome"},
        "logentry": {"formatted": "Timeout in handleRequest"},
        "exception": {
            "values": [
                {
                    "type": "java.lang.NullPointerException",
                    "value": "boom here",
                    "stacktrace": {"frames": [{"function": "handleRequest", "filename": "A.java"}]},
                },
                {"type": "KeyError", "value": "other"},
            ]
        },
    }
    assert es_document(event) == {
        "event_id": "e" * 32,
        "project_id": 1,
        "issue_id": 9,
        "timestamp": 1_793_491_200_250,
        "received": 1_793_491_201_000,
        "level": "warning",
        "level_num": 30,
        "platform": "java",
        "user_id": "42",
        "message": "Timeout in handleRequest",
        "message_words": "timeout in handlerequest",
        "message_parts": "handle request",
        "exception_type": ["java.lang.NullPointerException", "KeyError"],
        "exception_value": ["boom here", "other"],
        "exception_value_words": ["boom here", "other"],
        "exception_value_parts": ["", ""],
        "frame_function": ["handleRequest"],
        "frame_filename": ["A.java"],
        "words": (
            "timeout in handlerequest java lang nullpointerexception boom here keyerror other "
            "handlerequest a java"
        ),
        "parts": "handle request null pointer exception key error handle request",
        "tags_kv": ["a\\=b=c", "browser=Chrome"],
        "tags_keys": ["a=b", "browser"],
    }
