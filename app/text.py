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


def streams(text: str) -> Streams:
    """The two space-joined token streams of a document."""
    words: list[str] = []
    parts: list[str] = []
    for word in _WORD.findall(text):
        words.append(word.lower())
        sub = _PARTS.findall(word)
        if len(sub) > 1:
            parts.extend(p.lower() for p in sub)
    return Streams(" ".join(words), " ".join(parts))
