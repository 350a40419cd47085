"""The searchable fields of a processed event, read one way for every backend.

Storage fills its indexed columns from here, the query matcher evaluates
``field:value`` against the same values, and the Elasticsearch document is
built from them too; a field added here is a field every backend knows.

The input is a *processed* event, the output of :func:`app.normalize.normalize_event`
(see that module for its shape) with ``issue_id`` set by the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Event = dict[str, Any]

LEVELS: dict[str, int] = {"debug": 10, "info": 20, "warning": 30, "error": 40, "fatal": 50}

# Fields with one value per event; stored as columns.
SCALAR_FIELDS = (
    "level",
    "environment",
    "release",
    "platform",
    "logger",
    "server_name",
    "transaction",
    "message",
    "user.id",
    "user.email",
)
# The events-table column of each scalar field (quoted where SQL needs it), for every
# piece of SQL that reads them: the query compiler and the stats queries.
SQL_COLUMNS: dict[str, str] = {
    name: '"transaction"' if name == "transaction" else name.replace(".", "_")
    for name in SCALAR_FIELDS
}
# Fields with several values per event (one per exception / frame).
MULTI_FIELDS = (
    "exception.type",
    "exception.value",
    "frame.function",
    "frame.module",
    "frame.filename",
)


def exceptions(event: Event) -> list[dict[str, Any]]:
    exc = event.get("exception")
    if isinstance(exc, dict):
        values = exc.get("values")
        return [v for v in values if isinstance(v, dict)] if isinstance(values, list) else []
    return []


def _stacktraces(event: Event) -> Iterator[Any]:
    for exc in exceptions(event):
        yield exc.get("stacktrace")
    yield event.get("stacktrace")  # message events with attach_stacktrace
    threads = event.get("threads")
    if isinstance(threads, dict) and isinstance(threads.get("values"), list):
        for thread in threads["values"]:
            if isinstance(thread, dict):
                yield thread.get("stacktrace")


def frames(event: Event) -> Iterator[dict[str, Any]]:
    """Frames of every stack trace in the event: exceptions, then the event's own, then threads."""
    for st in _stacktraces(event):
        if isinstance(st, dict) and isinstance(st.get("frames"), list):
            yield from (f for f in st["frames"] if isinstance(f, dict))


def message(event: Event) -> str:
    logentry = event.get("logentry")
    if isinstance(logentry, dict):
        text = logentry.get("formatted") or logentry.get("message")
        if isinstance(text, str):
            return text
    return ""


def scalar(event: Event, name: str) -> str | None:
    if name == "message":
        return message(event) or None
    if name.startswith("user."):
        user = event.get("user")
        value = user.get(name[5:]) if isinstance(user, dict) else None
    else:
        value = event.get(name)
    if value is None or value == "":
        return None
    return str(value)


def multi(event: Event, name: str) -> list[str]:
    kind, _, attr = name.partition(".")
    source = exceptions(event) if kind == "exception" else frames(event)
    return [str(item[attr]) for item in source if item.get(attr) not in (None, "")]


def tags(event: Event) -> dict[str, str]:
    value = event.get("tags")
    return value if isinstance(value, dict) else {}


def text(event: Event) -> str:
    """What free words in a query search: message, exceptions and stack frames."""
    parts = [message(event)]
    for exc in exceptions(event):
        parts.extend(str(exc.get(k) or "") for k in ("type", "value", "module"))
    for frame in frames(event):
        parts.extend(str(frame.get(k) or "") for k in ("function", "module", "filename"))
    return "\n".join(p for p in parts if p)


def level_num(level: str | None) -> int:
    return LEVELS.get(level or "error", 40)
