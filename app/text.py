"""Tokenization of searchable text, written down once.

Every backend (SQLite FTS5, Elasticsearch, the in-process matcher) indexes and
queries the *output* of this module, so that search semantics cannot drift
between them.  Rules:

* Text is split on anything that is not a letter or digit (``.``, ``_``, ``/``,
  ``:``, ``-``, whitespace, ...) and lower-cased. ``my_module.py`` gives the
  words ``my``, ``module``, ``py``.
* A document has two token streams: ``words`` (the words above, in order) and
  ``parts`` (each word split at case changes and letter/digit boundaries, for
  words that split at all).  ``NullPointerException`` is the word
  ``nullpointerexception`` and the parts ``null``, ``pointer``, ``exception``.
* A query term is split the same way into words (:func:`query_tokens`).  It
  matches when its words appear consecutively in ``words`` or in ``parts``; a
  trailing ``*`` makes the last word a prefix.  So ``my_module`` is the phrase
  ``my module``; ``NullPointerException``, ``nullpointer*``, ``pointer`` and
  ``handleRequest`` all find an event whose stack mentions
  ``java.lang.NullPointerException`` or ``handleRequest``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_WORD = re.compile(r"[^\W_]+")
_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+|[^\W\d_]+")


class Streams(NamedTuple):
    words: str
    parts: str


def query_tokens(text: str) -> list[str]:
    """Words of a query term, lower-cased."""
    return [w.lower() for w in _WORD.findall(text)]


# word -> its parts joined by spaces, or "" when it does not split.  Stack traces
# repeat the same identifiers endlessly, so this turns most regex runs into one
# dict lookup (the tokenizer was ~30 % of storage time); cleared when full.
_SPLIT_CACHE: dict[str, str] = {}
_SPLIT_CACHE_MAX = 50_000


def _split(word: str) -> str:
    """``word``'s parts joined by spaces (original case), or "" if it is one part."""
    # ASCII words of lower-case letters, upper-case letters, one capital then lower
    # case, or digits only are one _PARTS match: skip the regex for them.
    if word.isascii() and (
        word.isdigit() or (word.isalpha() and (word.isupper() or word[1:].islower()))
    ):
        return ""
    sub = _PARTS.findall(word)
    return " ".join(sub) if len(sub) > 1 else ""


def streams(text: str) -> Streams:
    """The two space-joined token streams of a document.

    Lower-casing the joined stream once equals lower-casing each token: tokens
    are separated by spaces, which end every case context (final sigma)."""
    words = _WORD.findall(text)
    cache = _SPLIT_CACHE
    parts: list[str] = []
    for word in words:
        split = cache.get(word)
        if split is None:
            if len(cache) >= _SPLIT_CACHE_MAX:
                cache.clear()
            split = cache[word] = _split(word)
        if split:
            parts.append(split)
    return Streams(" ".join(words).lower(), " ".join(parts).lower())
