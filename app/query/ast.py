"""The typed syntax tree every query compiler reads.

Nodes are immutable so a parsed query can be cached and shared between
threads (alert rules compile once, evaluate forever).  Values are already
checked and converted by the parser: a compiler never has to reject a node.
Times relative to "now" stay relative here; each compiler resolves them with
the ``now`` it is given, through :meth:`Compare.bounds`, so the three agree
to the microsecond.
"""

from __future__ import annotations

from dataclasses import dataclass

# Field kinds: how a `field:value` term is matched.
KEYWORD_SCALAR = "keyword"  # one exact string per event (or none)
KEYWORD_MULTI = "keyword_multi"  # several exact strings per event; ANY matches
TEXT_SCALAR = "text"  # one string, matched with the app/text.py rules
TEXT_MULTI = "text_multi"  # several strings, each matched with the text rules; ANY matches
ORDERED = "ordered"  # numbers: levels (severity), issue ids, timestamps

FIELDS: dict[str, str] = {
    "environment": KEYWORD_SCALAR,
    "release": KEYWORD_SCALAR,
    "platform": KEYWORD_SCALAR,
    "logger": KEYWORD_SCALAR,
    "server_name": KEYWORD_SCALAR,
    "transaction": KEYWORD_SCALAR,
    "user.id": KEYWORD_SCALAR,
    "user.email": KEYWORD_SCALAR,
    "exception.type": KEYWORD_MULTI,
    "frame.function": KEYWORD_MULTI,
    "frame.module": KEYWORD_MULTI,
    "frame.filename": KEYWORD_MULTI,
    "message": TEXT_SCALAR,
    "exception.value": TEXT_MULTI,
    "level": ORDERED,
    "issue": ORDERED,
    "timestamp": ORDERED,
}
TAG_PREFIX = "tags."


@dataclass(frozen=True, slots=True)
class Text:
    """A free word or quoted phrase, searched in app.fields.text (all searchable text)."""

    tokens: tuple[str, ...]  # app.text.query_tokens of the term, never empty
    prefix: bool = False  # the last token is a prefix


@dataclass(frozen=True, slots=True)
class FieldText:
    """``message:...`` / ``exception.value:...``: the text rules, restricted to one field."""

    field: str
    tokens: tuple[str, ...]
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Keyword:
    """Exact (case-sensitive) or prefix match on a keyword field; ``prefix`` with an empty
    ``value`` means "the field is present"."""

    field: str
    value: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Tag:
    """Exact or prefix match on the value of tag ``key``."""

    key: str
    value: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Compare:
    """``level``/``issue``/``timestamp`` against a number.

    ``value`` is a level number, an issue id, epoch seconds, or (``relative``)
    seconds before now.  An absolute time names an interval ``[value, value+span)``
    (a whole day for ``2026-11-01``, a second for ``...T10:00:00``), so ``=`` is
    "inside", ``>`` is "after" and ``<=`` is "up to its end".
    """

    field: str
    op: str  # "=", ">", ">=", "<", "<="
    value: float
    span: float = 0.0
    relative: bool = False

    def bounds(self, now: float) -> tuple[tuple[str, float], ...]:
        """The plain comparisons (all must hold) this term means at time ``now``."""
        if self.relative:
            point = now - self.value
            return ((">=" if self.op == "=" else self.op, point),)
        start, span = self.value, self.span
        if not span:
            return ((self.op, start),)
        end = start + span
        if self.op == "=":
            return ((">=", start), ("<", end))
        if self.op == ">":
            return ((">=", end),)
        if self.op == "<=":
            return (("<", end),)
        return ((self.op, start),)


@dataclass(frozen=True, slots=True)
class Not:
    child: Node


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]  # at least two, none of them an And


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]  # at least two, none of them an Or


Node = Text | FieldText | Keyword | Tag | Compare | Not | And | Or


def needle(tokens: tuple[str, ...], prefix: bool) -> str:
    """What must occur in ``" " + stream + " "`` for a text term to match.

    Streams are lower-case tokens joined by single spaces, so a leading space
    pins the first token's start, and a trailing space (left off for a prefix)
    pins the last token's end.
    """
    return " " + " ".join(tokens) + ("" if prefix else " ")
