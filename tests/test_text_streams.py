"""app.text.streams (fast path: split cache, regex skipped for words that cannot split,
one lower() per stream) gives byte-identical streams to the plain definition."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from app import text
from app.text import Streams, streams

_WORD = re.compile(r"[^\W_]+")
_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+|[^\W\d_]+")


def reference(document: str) -> Streams:
    """The tokenizer before the fast path, kept verbatim as the specification."""
    words: list[str] = []
    parts: list[str] = []
    for word in _WORD.findall(document):
        words.append(word.lower())
        sub = _PARTS.findall(word)
        if len(sub) > 1:
            parts.extend(p.lower() for p in sub)
    return Streams(" ".join(words), " ".join(parts))


# Identifiers, paths and the Unicode cases where case mapping is context- or
# length-sensitive (final sigma, dotted I, ligatures, non-ASCII digits).
pieces = st.sampled_from(
    [
        "java.lang.NullPointerException", "handleRequest", "my_module.py", "HTTPServer",
        "getHTTPResponseCode", "ABC", "abc", "Abc", "a", "A", "7", "123", "abc123", "X11",
        "ΣΑΣ", "ΟΔΟΣ", "σς", "İstanbul", "ǅ", "ﬁle", "Straße", "café", "CAFÉ", "١٢٣", "²",
        "Ⅻ", "_", ".", "/", " ", "\n", "'", "\u0301", "e\u0301", "日本語", "Dž",
    ]
)  # fmt: skip
documents = st.lists(pieces | st.text(max_size=8), max_size=30).map("".join) | st.text()


@settings(max_examples=2000, deadline=None)
@given(document=documents)
def test_streams_match_the_reference(document: str) -> None:
    expected = reference(document)
    assert streams(document) == expected
    assert streams(document) == expected  # second call answered from the cache


def test_cache_is_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(text, "_SPLIT_CACHE_MAX", 3)
    document = " ".join(f"wordNumber{i}" for i in range(10))
    assert streams(document) == reference(document)
    assert len(text._SPLIT_CACHE) <= 3
