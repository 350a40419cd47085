"""Removal of secrets and personal data from a processed event, before it is stored.

The worker runs :meth:`Scrubber.scrub` after the inbound filters and before
fingerprinting, so nothing downstream (grouping, the raw JSON, the full-text
index, notifications) ever sees a secret.

What is removed (``[Filtered]`` replaces the value; keys stay, so users can see
that something was there):

* values under sensitive keys, anywhere: dict keys, header and cookie names,
  ``[key, value]`` pairs (headers, cookies, query strings, tags);
* inside every string: credit-card numbers (brand prefix + Luhn), ``Bearer``
  tokens, ``Basic`` credentials (only when they decode to ``user:pass``), the
  password of ``scheme://user:pass@host``, PEM private-key bodies, and the
  value of ``key=value`` / ``"key": value`` when the key is sensitive (query
  strings, form bodies, JSON text, reprs, source lines);
* in lists (``sys.argv``, argument lists in local variables), the item after a
  sensitive command-line flag: ``["--password", "hunter2"]``;
* optionally IP addresses, e-mail addresses and matches of custom regexes.

Structural fields (ids, timestamps, ``sdk``, ``modules``, frame file and
function names, exception types) are not scanned: they hold no user data, and
skipping them is part of what keeps this fast. Most strings cost one
character-class scan (``_trigger``) that rules them out.

Custom regexes run in the ``regex`` module with a time budget per event. They
are applied to all strings of an event joined into one text (one call per
pattern per event, not per string); when the budget is spent, every string
they would have covered becomes ``[Filtered]`` (fail closed: a slow pattern
never lets a secret through, and never stalls the worker).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import re
import time
from typing import Any

import regex

from app.project_settings import ScrubbingSettings

log = logging.getLogger(__name__)

FILTERED = "[Filtered]"

# Time all custom patterns together may spend on one event.
CUSTOM_BUDGET_S = 0.1
# Containers nested deeper than this are replaced whole rather than walked.
MAX_DEPTH = 64
_KEY_CACHE_MAX = 20_000
_CLEAN_CACHE_MAX = 20_000
_CLEAN_MAX_CHARS = 2_000
_NORMAL, _SENSITIVE, _SAFE = 0, 1, 2

# Substrings of key names whose values are secrets (matched on the lower-cased key).
DEFAULT_KEY_WORDS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "api-key",
    "apikey",
    "auth",
    "credential",
    "private_key",
    "private-key",
    "privatekey",
    "session",
    "cookie",
    "csrf",
    "xsrf",
)
# ``auth`` spares ``author``/``authority`` but not ``authorization``/``authorisation``.
_WORD_REGEX = {"auth": r"auth(?!or(?!i[sz]))"}
# Session cookies whose names contain none of the words above (Relay's list).
SENSITIVE_COOKIES = frozenset(
    {"sentrysid", "sudo", "su", "symfony", "phpsessid", "_vercel_jwt", "connect.sid", "jwt", "sid"}
)
IP_KEYS = frozenset(
    {
        "ip",
        "ip_address",
        "client_ip",
        "remote_addr",
        "x-forwarded-for",
        "x_forwarded_for",
        "x-real-ip",
        "x_real_ip",
        "cf-connecting-ip",
        "true-client-ip",
        "forwarded",
    }
)
EMAIL_KEYS = frozenset({"email", "email_address"})
# Never scrubbed unless listed as sensitive: the filters and the UI need the
# browser's version, and Relay exempts it too.
DEFAULT_SAFE_KEYS = frozenset({"user-agent", "user_agent"})

# Top-level keys that hold no user-supplied free text.
_SKIP_TOP = frozenset(
    {
        "event_id",
        "timestamp",
        "start_timestamp",
        "received",
        "level",
        "platform",
        "release",
        "dist",
        "environment",
        "logger",
        "type",
        "sdk",
        "modules",
        "debug_meta",
        "fingerprint",
        "_meta",
        "project",
        "project_id",
        "issue_id",
        "version",
    }
)
_SKIP_EXCEPTION = frozenset({"type", "module", "thread_id"})
_SKIP_FRAME = frozenset(
    {
        "filename",
        "abs_path",
        "function",
        "raw_function",
        "module",
        "package",
        "platform",
        "lineno",
        "colno",
        "in_app",
        "instruction_addr",
        "symbol_addr",
        "image_addr",
        "addr_mode",
        "symbol",
        "source_link",
    }
)

# Every pattern below starts with a literal or a character class so that the
# regex engine can skip quickly to candidate positions.
_URL_PASSWORD = re.compile(r"://([^:/?#@\s]*):[^/?#\s]+@")
_PEM = re.compile(r"(-----BEGIN[A-Z ]{0,40}PRIVATE KEY-----)(?s:.*?)(?=-----END|\Z)")
_AUTH = re.compile(r"(Bearer|bearer|BEARER|Basic|basic|BASIC)(\s+)([A-Za-z0-9\-._~+/]+=*)")
_CARD = re.compile(r"[2-6](?:[ -]?\d){12,18}(?!\d)")
_VALUE = r"(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^\s&;,#\"'<>(){}\[\]=][^\s&;,#\"'<>(){}\[\]]*)"
# `key=value` (not `==`, `!=`, `+=`...) or a quoted key before `:` (JSON text, reprs).
_KEY_VALUE = re.compile(
    r"(?<![\w.\-\[\]])([\w.\-\[\]]++)([\"']?)[ \t]*=(?!=)[ \t]*"
    + _VALUE
    + r"|([\"'])([\w.\-\[\]]++)\4[ \t]*:[ \t]*"
    + _VALUE
)
# IP and e-mail finders start at their one mandatory literal character (".",
# ":", "@") so the engine can jump between occurrences; the part before it is
# found by scanning back in Python, only for the few candidates.
_IPV4_TAIL = re.compile(r"\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\w]|\.\d)")
_IPV6_CORE = re.compile(r":[0-9A-Fa-f]{0,4}:")
_EMAIL_DOMAIN = re.compile(r"@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}(?![\w\-])")
_HEX_COLON = frozenset("0123456789abcdefABCDEF:")
_HEX_COLON_DOT = frozenset("0123456789abcdefABCDEF:.")
_EMAIL_LOCAL = frozenset("._+-")
_CARD_BRANDS = re.compile(
    r"4\d{12}(?:\d{3}){0,2}"  # Visa
    r"|5[1-5]\d{14}|2[2-7]\d{14}"  # Mastercard
    r"|3[47]\d{13}"  # Amex
    r"|3(?:0[0-5]|[689]\d)\d{11}"  # Diners
    r"|6(?:011|4[4-9]\d|5\d\d)\d{12,15}"  # Discover
    r"|35(?:2[89]|[3-8]\d)\d{12,15}"  # JCB
    r"|62\d{14,17}"  # UnionPay
)
# Where a custom pattern cannot be run over all strings of an event at once.
_ANCHORS = re.compile(r"[$^]|\\[AZzG]")
_TOKEN_PUNCTUATION = frozenset("0123456789._-~+/=")
_JOIN = "\x00"


class InvalidEventError(TypeError):
    """The event handed to the scrubber or the filters is not a JSON object."""


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def is_card_number(digits: str) -> bool:
    """``digits`` (no separators) has a card brand's prefix and length and passes Luhn."""
    return _CARD_BRANDS.fullmatch(digits) is not None and luhn_ok(digits)


def _replace_card(m: re.Match[str]) -> str:
    start, text = m.start(), m.string
    if start and text[start - 1].isdigit():
        return m.group(0)  # the tail of a longer number
    digits = m.group(0).replace(" ", "").replace("-", "")
    return FILTERED if is_card_number(digits) else m.group(0)


def _replace_auth(m: re.Match[str]) -> str:
    start, text = m.start(), m.string
    if start and text[start - 1].isalnum():
        return m.group(0)
    scheme, space, cred = m.groups()
    if scheme[1] in "eE":
        # "the bearer of bad news" must survive: real tokens have digits or
        # punctuation, or are long.
        ok = len(cred) >= 20 or any(c in _TOKEN_PUNCTUATION for c in cred)
    else:
        ok = _is_basic_credential(cred)
    return scheme + space + FILTERED if ok else m.group(0)


def _is_basic_credential(token: str) -> bool:
    if len(token) < 4 or len(token) % 4:
        return False
    try:
        return b":" in base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        return False


def _splice(text: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return text
    out: list[str] = []
    last = 0
    for start, end in spans:
        out.append(text[last:start])
        out.append(FILTERED)
        last = end
    out.append(text[last:])
    return "".join(out)


def scrub_ipv4(text: str) -> str:
    spans: list[tuple[int, int]] = []
    for m in _IPV4_TAIL.finditer(text):
        dot = m.start()
        start = dot
        while start > 0 and dot - start < 3 and text[start - 1].isdigit():
            start -= 1
        if start == dot or (start > 0 and (text[start - 1].isalnum() or text[start - 1] in "._")):
            continue
        if spans and start < spans[-1][1]:
            continue
        octets = (text[start:dot], *m.groups())
        if all(int(o) <= 255 for o in octets):
            spans.append((start, m.end()))
    return _splice(text, spans)


def scrub_ipv6(text: str) -> str:
    spans: list[tuple[int, int]] = []
    for m in _IPV6_CORE.finditer(text):
        start, end = m.start(), m.end()
        if spans and start < spans[-1][1]:
            continue
        while start > 0 and text[start - 1] in _HEX_COLON:
            start -= 1
        while end < len(text) and text[end] in _HEX_COLON_DOT:
            end += 1
        # A trailing full stop ends the sentence, not the address.
        while end > start and text[end - 1] == ".":
            end -= 1
        address_end = end
        if end < len(text) and text[end] == "%":  # zone index: fe80::1%eth0
            end += 1
            while end < len(text) and (text[end].isalnum() or text[end] == "_"):
                end += 1
        if (start > 0 and (text[start - 1].isalnum() or text[start - 1] in "_.")) or (
            end < len(text) and (text[end].isalnum() or text[end] == "_")
        ):
            continue
        try:
            ipaddress.IPv6Address(text[start:address_end])
        except ValueError:
            continue
        spans.append((start, end))
    return _splice(text, spans)


def scrub_emails(text: str) -> str:
    spans: list[tuple[int, int]] = []
    for m in _EMAIL_DOMAIN.finditer(text):
        at = m.start()
        start = at
        while start > 0 and (text[start - 1].isalnum() or text[start - 1] in _EMAIL_LOCAL):
            start -= 1
        if start < at and not (spans and start < spans[-1][1]):
            spans.append((start, m.end()))
    return _splice(text, spans)


def _has_content(value: Any) -> bool:
    if value is None or value is True or value is False:
        return False
    return not (value.__class__ in (str, list, dict) and not value)


def _word_pattern(words: list[str]) -> str:
    ordered = sorted(words, key=len, reverse=True)
    return "|".join(_WORD_REGEX.get(w) or re.escape(w) for w in ordered)


class Scrubber:
    """Compiled scrubbing rules of one project; build once, reuse for every event.

    :meth:`scrub` keeps no per-event state on the instance, so one scrubber can
    serve several threads at once.
    """

    def __init__(self, settings: ScrubbingSettings) -> None:
        self.settings = settings
        self._defaults = settings.scrub_defaults
        self._ips = settings.scrub_ip_addresses
        self._emails = settings.scrub_emails
        self._optional = self._ips or self._emails
        words = list(DEFAULT_KEY_WORDS) if self._defaults else []
        words += [w for w in settings.sensitive_fields if w not in words]
        self._safe = frozenset(settings.safe_fields) | (
            DEFAULT_SAFE_KEYS - set(settings.sensitive_fields)
        )
        exact: set[str] = set()
        if self._ips:
            exact |= IP_KEYS
        if self._emails:
            exact |= EMAIL_KEYS
        self._exact = frozenset(exact)
        self._key_words = re.compile(_word_pattern(words)) if words else None
        self._cookie_names = SENSITIVE_COOKIES if self._defaults else frozenset()
        self._key_cache: dict[str, int] = {}
        self._cookie_cache: dict[str, int] = {}
        self._clean: set[str] = set()
        # One cheap scan that rules out most strings before any real rule runs.
        # Each branch starts with a literal so the engine can skip between
        # candidate characters.
        branches: list[str] = []
        if self._defaults:
            branches += ["://", "-----BEGIN", "Bearer", "bearer", "BEARER", "Basic", "basic"]
            branches += ["BASIC", *(rf"{d}\d[\d -]{{11}}" for d in "23456")]
        if words:
            branches += ["=", r"\"\s*:", r"'\s*:"]
        if self._ips:
            branches += [r"\.\d{1,3}\.\d{1,3}\.\d", "::", r":[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:"]
        if self._emails:
            branches.append("@")
        self._trigger = re.compile("|".join(branches)).search if branches else None
        self._builtin = bool(self._defaults or words)
        self._custom = [
            (regex.compile(p), _ANCHORS.search(p) is None) for p in settings.custom_patterns
        ]
        # How often custom patterns ran out of time (for metrics and logs).
        self.custom_timeouts = 0

    # ----------------------------------------------------------------- public
    def scrub(self, event: dict[str, Any]) -> dict[str, Any]:
        """Scrub ``event`` in place and return it (the same object)."""
        if not isinstance(event, dict):
            raise InvalidEventError(f"event must be a JSON object, got {type(event).__name__}")
        walk = _Walk(self, [] if self._custom else None)
        walk.event(event)
        if walk.refs:
            self._apply_custom(walk.refs)
        return event

    def scrub_string(self, text: str) -> str:
        """The string rules (not the key rules) applied to one piece of text."""
        holder = [self.text(text)]
        if self._custom:
            self._apply_custom([(holder, 0)])
        return holder[0]

    # ---------------------------------------------------------------- keys
    def classify(self, key: str) -> int:
        """0 normal, 1 sensitive (value is filtered), 2 safe (value is never touched)."""
        cls = self._key_cache.get(key)
        if cls is None:
            low = key.lower()
            if low in self._safe:
                cls = _SAFE
            elif low in self._exact or (
                self._key_words is not None and self._key_words.search(low) is not None
            ):
                cls = _SENSITIVE
            else:
                cls = _NORMAL
            if len(self._key_cache) >= _KEY_CACHE_MAX:
                self._key_cache.clear()
            self._key_cache[key] = cls
        return cls

    def classify_cookie(self, name: str) -> int:
        cls = self._cookie_cache.get(name)
        if cls is None:
            cls = self.classify(name.strip())
            if cls == _NORMAL and name.strip().lower() in self._cookie_names:
                cls = _SENSITIVE
            if len(self._cookie_cache) >= _KEY_CACHE_MAX:
                self._cookie_cache.clear()
            self._cookie_cache[name] = cls
        return cls

    # ------------------------------------------------------------- strings
    def text(self, text: str) -> str:
        """All string rules; returns ``text`` itself when nothing matched."""
        if self._trigger is not None and self._trigger(text) is not None:
            return self.triggered(text)
        return text

    def triggered(self, text: str) -> str:
        """The string rules, for a string that the trigger scan hit."""
        if text in self._clean:
            return text
        out = text
        if self._builtin:
            out = self.builtin(out)
        if self._optional:
            out = self.optional(out)
        if out is text and len(text) <= _CLEAN_MAX_CHARS:
            # Source lines, reprs and messages repeat from event to event; only
            # strings with nothing to remove are remembered, so no secret is kept.
            if len(self._clean) >= _CLEAN_CACHE_MAX:
                self._clean.clear()
            self._clean.add(text)
        return out

    def builtin(self, text: str) -> str:
        """The default rules and sensitive ``key=value`` pairs, for a string the trigger hit."""
        if self._defaults:
            if "://" in text:
                text = _URL_PASSWORD.sub(r"://\1:" + FILTERED + "@", text)
            if "-----BEGIN" in text:
                text = _PEM.sub(r"\1\n" + FILTERED + "\n", text)
            text = _CARD.sub(_replace_card, text)
        low = text.lower()
        if self._defaults and ("bearer" in low or "basic" in low):
            text = _AUTH.sub(_replace_auth, text)
        if self._key_words is not None and self._key_words.search(low) is not None:
            text = _KEY_VALUE.sub(self._replace_key_value, text)
        return text

    def optional(self, text: str) -> str:
        """IP and e-mail rules; each is gated by a character its matches must contain."""
        if self._ips:
            if text.count(".") >= 3:
                text = scrub_ipv4(text)
            if "::" in text or text.count(":") >= 7:
                text = scrub_ipv6(text)
        if self._emails and "@" in text:
            text = scrub_emails(text)
        return text

    def _replace_key_value(self, m: re.Match[str]) -> str:
        key = m.group(1) or m.group(5)
        if self.classify(key) != _SENSITIVE:
            return m.group(0)
        group = 3 if m.group(1) else 6
        vstart, vend = m.span(group)
        if m.string[vstart] in "\"'":
            vstart, vend = vstart + 1, vend - 1
            if vstart >= vend:
                return m.group(0)
        base = m.start()
        whole = m.group(0)
        return whole[: vstart - base] + FILTERED + whole[vend - base :]

    # ------------------------------------------------------ custom patterns
    def _apply_custom(self, refs: list[tuple[Any, Any]]) -> None:
        texts = [container[key] for container, key in refs]
        joined = None if any(_JOIN in t for t in texts) else _JOIN.join(texts)
        deadline = time.monotonic() + CUSTOM_BUDGET_S
        try:
            for pattern, joinable in self._custom:
                if joinable and joined is not None:
                    new = pattern.sub(FILTERED, joined, timeout=_left(deadline))
                    if new is joined:
                        continue
                    parts = new.split(_JOIN)
                    if len(parts) == len(texts):
                        for i, part in enumerate(parts):
                            if part != texts[i]:
                                texts[i] = part
                        joined = new
                        continue
                # Anchored pattern, or a match spanning two strings: one string at a time.
                for i, t in enumerate(texts):
                    texts[i] = pattern.sub(FILTERED, t, timeout=_left(deadline))
                joined = None if any(_JOIN in t for t in texts) else _JOIN.join(texts)
        except TimeoutError:
            self.custom_timeouts += 1
            log.warning(
                "custom scrubbing patterns exceeded %.0f ms; event strings filtered",
                CUSTOM_BUDGET_S * 1000,
            )
            texts = [FILTERED] * len(texts)
        for (container, key), t in zip(refs, texts, strict=True):
            if container[key] is not t:
                container[key] = t


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _flag_name(text: str) -> str | None:
    """``password`` for a command-line flag like ``--password`` or its repr ``'--password'``.

    ``sys.argv`` (sent by the Python SDK's default argv integration) and argument
    lists in local variables carry ``--password hunter2`` as two items; the value
    item has no key of its own, so the flag before it is what marks it sensitive.
    """
    if len(text) > 2 and text[0] in "'\"" and text[-1] == text[0]:
        text = text[1:-1]
    if not text.startswith("-") or len(text) > 100 or "=" in text or " " in text:
        return None
    name = text.lstrip("-")
    return name if name and not name[0].isdigit() else None


_STRUCTURED_TOP = _SKIP_TOP | {"request", "exception", "threads", "stacktrace", "tags"}
_STRUCTURED_EXCEPTION = _SKIP_EXCEPTION | {"stacktrace"}
_REQUEST_PAIRS = ("headers", "query_string", "env", "data")
_NOTHING: frozenset[str] = frozenset()


class _Walk:
    """One pass over one event; holds the per-event state so the Scrubber holds none."""

    __slots__ = ("s", "trigger", "triggered", "classify", "cache", "clean", "refs")

    def __init__(self, scrubber: Scrubber, refs: list[tuple[Any, Any]] | None) -> None:
        self.s = scrubber
        self.trigger = scrubber._trigger
        self.triggered = scrubber.triggered
        self.classify = scrubber.classify
        self.cache = scrubber._key_cache
        self.clean = scrubber._clean
        # (container, key) of every string left in place, for the custom patterns.
        self.refs = refs

    def event(self, event: dict[str, Any]) -> None:
        self.mapping(event, 1, _STRUCTURED_TOP)
        request = event.get("request")
        if request is not None:
            if request.__class__ is dict:
                self.request(request)
            else:
                self.entry(event, "request", request, 1)
        for key in ("exception", "threads"):
            if event.get(key) is not None:
                self.values(event, key, event[key])
        stacktrace = event.get("stacktrace")
        if stacktrace.__class__ is dict:
            self.stacktrace(stacktrace)
        elif stacktrace is not None:
            self.entry(event, "stacktrace", stacktrace, 1)
        tags = event.get("tags")
        if tags.__class__ is list:
            self.pairs(tags, False, 1)
        elif tags is not None:
            self.entry(event, "tags", tags, 1)

    # ------------------------------------------------------------ generic
    def mapping(self, d: dict[str, Any], depth: int, skip: frozenset[str] = _NOTHING) -> None:
        """Every entry of ``d`` except the keys in ``skip``; the hot loop, so inlined."""
        cache = self.cache
        trigger = self.trigger
        clean = self.clean
        refs = self.refs
        for key, value in d.items():
            cls = value.__class__
            if cls is str:
                if not value or key in skip:
                    continue
            elif value is None or cls is bool or cls is float or key in skip:
                continue
            kc = cache.get(key)
            if kc is None:
                kc = self.classify(key) if key.__class__ is str else _NORMAL
            if kc:
                if kc == _SENSITIVE and _has_content(value):
                    d[key] = FILTERED
                continue
            if cls is str:
                if value not in clean:
                    if trigger is not None and trigger(value) is not None:
                        new = self.triggered(value)
                        if new is not value:
                            d[key] = new
                    elif len(value) <= _CLEAN_MAX_CHARS:
                        if len(clean) >= _CLEAN_CACHE_MAX:
                            clean.clear()
                        clean.add(value)
                if refs is not None:
                    refs.append((d, key))
            else:
                self.item(d, key, value, depth)

    def sequence(self, items: list[Any], depth: int) -> None:
        trigger = self.trigger
        clean = self.clean
        refs = self.refs
        after_flag = False  # the previous item was a sensitive flag like "--password"
        for i, value in enumerate(items):
            if after_flag:
                after_flag = False
                if value.__class__ is not str or _flag_name(value) is None:
                    if _has_content(value):
                        items[i] = FILTERED
                    continue
            if value.__class__ is str:
                if value:
                    if value[0] == "-" or (value[0] in "'\"" and value[1:2] == "-"):
                        flag = _flag_name(value)
                        after_flag = flag is not None and self.classify(flag) == _SENSITIVE
                    if value not in clean:
                        if trigger is not None and trigger(value) is not None:
                            new = self.triggered(value)
                            if new is not value:
                                items[i] = new
                        elif len(value) <= _CLEAN_MAX_CHARS:
                            if len(clean) >= _CLEAN_CACHE_MAX:
                                clean.clear()
                            clean.add(value)
                    if refs is not None:
                        refs.append((items, i))
            elif value.__class__ in (dict, list, int):
                self.item(items, i, value, depth)

    def entry(self, container: Any, key: Any, value: Any, depth: int) -> None:
        """Scrub ``container[key]`` (one dict entry), honouring the key's class."""
        if key.__class__ is str:
            kc = self.classify(key)
            if kc:
                if kc == _SENSITIVE and _has_content(value):
                    container[key] = FILTERED
                return
        self.item(container, key, value, depth)

    def item(self, container: Any, key: Any, value: Any, depth: int) -> None:
        """Scrub ``container[key]`` without looking at the key (list items, pair values)."""
        cls = value.__class__
        if cls is str:
            if value:
                if self.trigger is not None and self.trigger(value) is not None:
                    new = self.triggered(value)
                    if new is not value:
                        container[key] = new
                if self.refs is not None:
                    self.refs.append((container, key))
        elif cls is dict:
            if depth > MAX_DEPTH:
                container[key] = FILTERED
            else:
                self.mapping(value, depth + 1)
        elif cls is list:
            if depth > MAX_DEPTH:
                container[key] = FILTERED
            else:
                self.sequence(value, depth + 1)
        elif (
            cls is int
            and self.s._defaults
            and (value >= 10**12 or value <= -(10**12))
            and is_card_number(str(abs(value)))
        ):
            container[key] = FILTERED

    def pairs(self, items: list[Any], cookies: bool, depth: int) -> None:
        """``[[key, value], ...]`` (headers, cookies, query, tags); other items are walked."""
        classify = self.s.classify_cookie if cookies else self.classify
        for i, pair in enumerate(items):
            if pair.__class__ is list and len(pair) == 2 and pair[0].__class__ is str:
                kc = classify(pair[0])
                if kc == _SENSITIVE:
                    if _has_content(pair[1]):
                        pair[1] = FILTERED
                elif kc == _NORMAL:
                    self.item(pair, 1, pair[1], depth + 1)
            else:
                self.item(items, i, pair, depth + 1)

    # --------------------------------------------------------- structured
    def request(self, req: dict[str, Any]) -> None:
        special = {k for k in _REQUEST_PAIRS if req.get(k).__class__ is list}
        special.add("cookies")
        self.mapping(req, 2, frozenset(special))
        for key in special:
            value = req.get(key)
            if key == "cookies":
                if value is not None:
                    self.cookies(req, value)
            else:
                self.pairs(value, False, 2)

    def cookies(self, req: dict[str, Any], value: Any) -> None:
        if value.__class__ is str:
            new = self.cookie_header(value)
            if new is not value:
                req["cookies"] = new
            if self.refs is not None:
                self.refs.append((req, "cookies"))
        elif value.__class__ is dict:
            for name, cookie in value.items():
                if name.__class__ is not str:
                    continue
                kc = self.s.classify_cookie(name)
                if kc == _SENSITIVE:
                    if _has_content(cookie):
                        value[name] = FILTERED
                elif kc == _NORMAL:
                    self.item(value, name, cookie, 3)
        elif value.__class__ is list:
            self.pairs(value, True, 2)
        else:
            self.item(req, "cookies", value, 2)

    def cookie_header(self, header: str) -> str:
        parts = header.split(";")
        changed = False
        for i, part in enumerate(parts):
            name, sep, cookie = part.partition("=")
            if not sep or not cookie:
                continue
            kc = self.s.classify_cookie(name)
            if kc == _SAFE:
                continue
            new = FILTERED if kc == _SENSITIVE else self.s.text(cookie)
            if new is not cookie:
                parts[i] = f"{name}={new}"
                changed = True
        return ";".join(parts) if changed else header

    def values(self, container: dict[str, Any], key: str, value: Any) -> None:
        """``exception`` / ``threads``: ``{"values": [...]}`` or a bare list."""
        if value.__class__ is dict:
            items = value.get("values")
            if items.__class__ is list:
                self.mapping(value, 2, _VALUES)
                self.values(value, "values", items)
            else:
                self.mapping(value, 2)
        elif value.__class__ is list:
            for i, item in enumerate(value):
                if item.__class__ is dict:
                    self.exception(item)
                else:
                    self.item(value, i, item, 3)
        else:
            self.item(container, key, value, 1)

    def exception(self, exc: dict[str, Any]) -> None:
        self.mapping(exc, 3, _STRUCTURED_EXCEPTION)
        stacktrace = exc.get("stacktrace")
        if stacktrace.__class__ is dict:
            self.stacktrace(stacktrace)
        elif stacktrace is not None:
            self.entry(exc, "stacktrace", stacktrace, 3)

    def stacktrace(self, st: dict[str, Any]) -> None:
        frames = st.get("frames")
        if frames.__class__ is not list:
            self.mapping(st, 4)
            return
        self.mapping(st, 4, _FRAMES)
        for i, frame in enumerate(frames):
            if frame.__class__ is dict:
                self.mapping(frame, 5, _SKIP_FRAME)
            else:
                self.item(frames, i, frame, 5)


_FRAMES = frozenset({"frames"})
_VALUES = frozenset({"values"})
