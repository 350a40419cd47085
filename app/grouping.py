"""Decide which issue a processed event belongs to (reference section 7).

The fingerprint has to be stable across everything that varies between two
occurrences of the same bug (line numbers, ids and numbers in messages,
recursion depth, bundle hashes) and different for different bugs.  Priority:
the SDK's ``fingerprint`` list, then stack frames (per exception, chained
exceptions each contributing), then exception type/value, then the message.

``components`` lists, in order, the values that went into the hash, so that
"why are these two events (not) grouped together?" can be answered from the
stored issue.  The hash is MD5 over the length-prefixed components; it only
needs to be self-consistent, not equal to Sentry's.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

from app import fields

Event = dict[str, Any]

MAX_TITLE = 200
MAX_CULPRIT = 200
UNLABELED = "<unlabeled event>"

_ANONYMOUS = frozenset(
    {"?", "<anonymous>", "anonymous", "<unknown>", "Anonymous function", "[native code]"}
)
_NO_FILENAME = frozenset({"<anonymous>", "[native code]", "native", "<unknown>", "<string>"})
_JS_FUNCTION_PREFIX = re.compile(r"^(?:async\s+|new\s+)*(?:Object\.)?")
_RUBY_BLOCK = re.compile(r"^block (?:\(\d+ levels\) )?in ")
_JAVA_GENERATED = re.compile(r"\$\$Lambda[\w/$]*|\$\$(?:EnhancerBy|FastClassBy)\w*?\$\$\w+")
_BUNDLE_HASH = re.compile(r"(?<=[.\-_])(?=[0-9a-f]*\d)[0-9a-f]{8,}(?=[.\-_])")
_VARIABLE = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")

# Variable parts of messages and exception values, replaced by <name>.  One
# alternation so each text is scanned once; at any position the earliest
# listed alternative wins (a quoted string beats the number inside it).
_MASKS = (
    ("quoted_str", r"(?<![A-Za-z\d])'[^'\n]*'|\"[^\"\n]*\""),
    ("email", r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]+(?:\.[\w-]+)+"),
    ("url", r"(?<![\w+.-])[a-zA-Z][a-zA-Z\d+.-]{0,31}://[^\s'\"<>()\[\]{}]+"),
    ("uuid", r"\b[\da-fA-F]{8}-[\da-fA-F]{4}-[\da-fA-F]{4}-[\da-fA-F]{4}-[\da-fA-F]{12}\b"),
    (
        "date",
        r"(?<!\w)\d{4}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?"
        r"(?:Z|[+-]\d{2}:?\d{2}\b)?"
        r"|(?<![\w:])\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?![\w:])",
    ),
    ("ip", r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)"),
    (
        "ipv6",
        r"(?<![\w:])(?:[\da-fA-F]{1,4}:){7}[\da-fA-F]{1,4}(?![\w:])"
        r"|(?<![\w:])(?:[\da-fA-F]{1,4}(?::[\da-fA-F]{1,4})*)?::"
        r"(?:[\da-fA-F]{1,4}(?::[\da-fA-F]{1,4})*)?(?![\w:])",
    ),
    ("hex", r"\b0[xX][\da-fA-F]+\b|\b(?=[a-fA-F]*\d)(?=\d*[a-fA-F])[\da-fA-F]{16,}\b"),
    ("float", r"(?<![A-Za-z_\d.])-?\d+\.\d+(?:[eE][-+]?\d+)?"),
    ("int", r"(?<![A-Za-z_\d])-?\d+"),
    ("bool", r"(?<==)(?:true|false|True|False)\b"),
)
_MASK = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in _MASKS))
# IPv6 is the costliest alternative and rare; skip it when the text cannot hold one.
_MASK_NO_IPV6 = re.compile(
    "|".join(f"(?P<{name}>{pattern})" for name, pattern in _MASKS if name != "ipv6")
)
# Every mask needs one of these characters; most texts without them skip the regex.
_MAY_MASK = re.compile(r"[\d'\"@=:]")


class Grouping(NamedTuple):
    fingerprint: str  # 32 hex digits (MD5)
    title: str
    culprit: str
    components: list[str]


def group(event: Event) -> Grouping:
    """Fingerprint, title and culprit of a processed event (output of normalize_event)."""
    excs = fields.exceptions(event)
    components = default_components(event, excs)
    custom = event.get("fingerprint")
    if isinstance(custom, list) and custom:
        expanded = _expand(custom, event, excs, components)
        if expanded is not None:
            components = expanded
    return Grouping(_hash(components), _title(event, excs), _culprit(event, excs), components)


def default_components(event: Event, excs: list[dict[str, Any]] | None = None) -> list[str]:
    """What Sentry-style default grouping hashes: frames, then exception, then message."""
    if excs is None:
        excs = fields.exceptions(event)
    if excs:
        components = _exception_components(excs, app_only=True)
        if components is None:
            components = _exception_components(excs, app_only=False)
        if components:
            return components
    stack = _lone_stacktrace(event)
    if stack:
        for app_only in (True, False):
            keys = _frame_keys(stack, app_only)
            if keys:
                return keys
    text = _message_for_grouping(event)
    if text:
        return ["message:" + text]
    return ["fallback"]


def mask(text: str) -> str:
    """Replace the variable parts of a message (ids, numbers, dates, ...) by <kind>."""
    if not _MAY_MASK.search(text):
        return text
    pattern = _MASK if "::" in text or text.count(":") >= 7 else _MASK_NO_IPV6
    return pattern.sub(_mask_one, text)


def _mask_one(m: re.Match[str]) -> str:
    kind = m.lastgroup or "value"
    if kind == "ipv6":
        if not any(c.isdigit() for c in m.group(0)):
            return m.group(0)  # "a::b" is C++/Ruby scope, not an address
        kind = "ip"
    return f"<{kind}>"


def _hash(components: list[str]) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    for component in components:
        data = component.encode("utf-8", "surrogatepass")
        digest.update(b"%d:" % len(data))
        digest.update(data)
    return digest.hexdigest()


def _expand(
    custom: list[Any], event: Event, excs: list[dict[str, Any]], default: list[str]
) -> list[str] | None:
    """Components of an SDK fingerprint, or None when it means "group by default"."""
    values = [v for v in custom if isinstance(v, str)]
    if not values:
        return None
    out = []
    for value in values:
        m = _VARIABLE.fullmatch(value.strip())
        name = m.group(1).lower() if m else None
        if name == "default":
            out.append("default:" + _hash(default))
        elif name is not None and (resolved := _variable(name, event, excs)) is not None:
            out.append(f"{name}:{resolved}")
        else:
            out.append("fingerprint:" + value)
    if len(out) == 1 and out[0].startswith("default:"):
        return None
    return out


def _variable(name: str, event: Event, excs: list[dict[str, Any]]) -> str | None:
    last = excs[-1] if excs else {}
    if name == "transaction":
        return _str(event.get("transaction")) or "<no-transaction>"
    if name in ("type", "error.type"):
        return _str(last.get("type")) or "<no-type>"
    if name in ("value", "error.value"):
        return _str(last.get("value")) or "<no-value>"
    if name in ("level", "logger"):
        return _str(event.get(name)) or f"<no-{name}>"
    if name == "message":
        return fields.message(event) or "<no-message>"
    if name in ("function", "stack.function", "module", "stack.module"):
        frame = _culprit_frame(event, excs)
        key = "function" if name.endswith("function") else "module"
        return (_str(frame.get(key)) if frame else "") or f"<no-{key}>"
    return None


# -- frames ----------------------------------------------------------------------------


def _frames(container: object) -> list[dict[str, Any]]:
    stacktrace = container.get("stacktrace") if isinstance(container, dict) else None
    frames = stacktrace.get("frames") if isinstance(stacktrace, dict) else None
    if not isinstance(frames, list):
        return []
    return [f for f in frames if isinstance(f, dict)]


def _exception_components(excs: list[dict[str, Any]], *, app_only: bool) -> list[str] | None:
    """Components of all exceptions; None if app_only and no frame contributed."""
    components: list[str] = []
    any_frames = False
    for exc in excs:
        keys = _frame_keys(_frames(exc), app_only)
        any_frames = any_frames or bool(keys)
        mechanism = exc.get("mechanism")
        synthetic = isinstance(mechanism, dict) and mechanism.get("synthetic") is True
        exc_type = _str(exc.get("type"))
        if exc_type and not synthetic:
            components.append("type:" + exc_type)
        if keys:
            components.extend(keys)
        else:
            value = _str(exc.get("value"))
            if value:
                components.append("value:" + mask(value))
    if app_only and not any_frames:
        return None
    return components


def _frame_keys(frames: list[dict[str, Any]], app_only: bool) -> list[str]:
    keys: list[str] = []
    previous = None
    for frame in frames:
        if app_only and frame.get("in_app") is not True:
            continue
        key = _frame_key(frame)
        if key is not None and key != previous:  # direct recursion counts once
            keys.append(key)
            previous = key
    return keys


def _frame_key(frame: dict[str, Any]) -> str | None:
    """``frame:<module or file basename>:<function>``; line numbers never count."""
    location = ""
    module = frame.get("module")
    if isinstance(module, str) and module.strip():
        location = module.strip()
        if "$$" in location:
            location = _JAVA_GENERATED.sub("<auto>", location)
    else:
        filename = frame.get("filename") or frame.get("abs_path")
        if isinstance(filename, str):
            location = _basename(filename)
    function = frame.get("function")
    function = _clean_function(function) if isinstance(function, str) else ""
    if not location and not function:
        return None
    return f"frame:{location}:{function}"


def _basename(filename: str) -> str:
    name = filename.strip()
    if name in _NO_FILENAME:
        return ""
    if "://" in name:
        name = name.split("?", 1)[0].split("#", 1)[0]
    name = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].lower()
    if name in _NO_FILENAME:
        return ""
    return _BUNDLE_HASH.sub("<hash>", name)


def _clean_function(function: str) -> str:
    name = function.strip()
    if not name or name in _ANONYMOUS or name.startswith("<anonymous"):
        return ""
    if name.startswith("block "):
        name = _RUBY_BLOCK.sub("", name)
    if name.startswith(("async ", "new ", "Object.")):
        name = _JS_FUNCTION_PREFIX.sub("", name)
    if "$$" in name:
        name = _JAVA_GENERATED.sub("<auto>", name)
    if name in _ANONYMOUS or name.endswith(".<anonymous>"):
        return ""
    return name


def _lone_stacktrace(event: Event) -> list[dict[str, Any]]:
    """Frames of a message event: top-level stacktrace, else the crashed/current/only thread."""
    frames = _frames(event)
    if frames:
        return frames
    threads = event.get("threads")
    values = threads.get("values") if isinstance(threads, dict) else None
    if not isinstance(values, list):
        return []
    with_stack = [t for t in values if isinstance(t, dict) and _frames(t)]
    for flag in ("crashed", "current"):
        for thread in with_stack:
            if thread.get(flag) is True:
                return _frames(thread)
    return _frames(with_stack[0]) if len(with_stack) == 1 else []


def _all_stacks(event: Event, excs: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Stacks in culprit order: the raised exception first, then its causes."""
    for exc in reversed(excs):
        yield _frames(exc)
    yield _lone_stacktrace(event)


def _culprit_frame(event: Event, excs: list[dict[str, Any]]) -> dict[str, Any] | None:
    for frames in _all_stacks(event, excs):
        for frame in reversed(frames):
            if frame.get("in_app") is True:
                return frame
    return None


# -- title and culprit -----------------------------------------------------------------


def _title(event: Event, excs: list[dict[str, Any]]) -> str:
    if excs:
        last = excs[-1]
        exc_type = _str(last.get("type"))
        value = _first_line(_str(last.get("value")))
        title = f"{exc_type}: {value}" if exc_type and value else exc_type or value
        if title:
            return title[:MAX_TITLE]
    title = _first_line(fields.message(event))
    return title[:MAX_TITLE] if title else UNLABELED


def _culprit(event: Event, excs: list[dict[str, Any]]) -> str:
    """Sentry style ``module in function`` of the last in-app frame, else the transaction.

    Without either, the raised exception's last frame is better than nothing.
    """
    frame = _culprit_frame(event, excs)
    if frame is None:
        transaction = _str(event.get("transaction"))
        if transaction:
            return transaction[:MAX_CULPRIT]
        frame = next((frames[-1] for frames in _all_stacks(event, excs) if frames), None)
        if frame is None:
            return ""
    location = _str(frame.get("module")) or _str(frame.get("filename"))
    function = _str(frame.get("function"))
    culprit = f"{location} in {function}" if location and function else location or function
    return culprit[:MAX_CULPRIT]


# -- message ---------------------------------------------------------------------------


def _message_for_grouping(event: Event) -> str:
    """The masked first two non-empty lines of the template (else formatted message)."""
    logentry = event.get("logentry")
    text = ""
    if isinstance(logentry, dict):
        template = logentry.get("message")
        text = template if isinstance(template, str) and template.strip() else ""
    text = text or fields.message(event)
    if not text:
        return ""
    lines: list[str] = []
    for line in text.splitlines():
        if line.strip():
            if len(lines) == 2:
                lines.append("...")
                break
            lines.append(line.strip())
    return mask("\n".join(lines))


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""
