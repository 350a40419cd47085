"""Per-project scrubbing and inbound-filter settings (``/api/v1/projects/{id}/settings``).

Everything a user can type is checked here, once, when the settings are saved or
loaded, so the worker's hot path never meets a bad pattern: unknown keys are
refused (a typo must be a 400, not a silently ignored option), custom regexes
must compile, must not match the empty string and must not look catastrophic.
A pattern that still turns out slow is bounded at run time by
:class:`app.scrubbing.Scrubber`.

The compiled forms live in :class:`app.scrubbing.Scrubber` and
:class:`app.filters.InboundFilter`; :meth:`ProjectSettings.scrubber` and
:meth:`ProjectSettings.inbound_filter` build them once per settings object, so a
caller that keeps the settings object keeps the compiled patterns too.
"""

from __future__ import annotations

import re
import re._parser as sre_parse  # structure of a pattern, to spot nested unbounded repeats
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Annotated, Literal

import regex
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from app.ratelimit import STORED, LimitSettings

if TYPE_CHECKING:
    from app.filters import InboundFilter
    from app.scrubbing import Scrubber

MAX_PATTERNS = 50
MAX_PATTERN_CHARS = 500
MAX_NAMES = 200
# How long one probe of a custom pattern may take when it is saved, and all probes of
# all patterns of one request together: the budget bounds what one request costs.
PROBE_TIMEOUT_S = 0.05
PATTERNS_BUDGET_S = 0.25
# Strings that make the usual backtracking blow-ups show: long runs of one
# character class followed by a character that breaks the match.
_PROBES = tuple(
    run * 64 + tail
    for run, tail in (("a", "!"), ("1", "x"), (" ", "x"), ("a1", "!"), ("a ", "!"), ("-", "x"))
)

# Largest size, in pattern items, a custom regex may compile to.  The ``regex`` module
# copies the body of a counted repeat ``count`` times, so nested counts multiply:
# ``(?:x{2000}){2000}`` took 3.6 s and 1.2 GB to compile, and ``(?:x{65535}){65535}``
# (18 characters) exhausted the memory.  Real scrubbing patterns are far below this.
MAX_EXPANDED_ITEMS = 20_000
# The same bound for patterns already saved (by versions without it): generous enough for
# any of them that could compile before, still far from exhausting the memory.
STORED_MAX_EXPANDED_ITEMS = 200_000
_REPEATS = (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, sre_parse.POSSESSIVE_REPEAT)
_COUNTS = re.compile(r"\{(\d*),?(\d*)\}")

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Glob = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATTERN_CHARS)]
Level = Literal["debug", "info", "warning", "error", "fatal"]


def _repeat_is_unbounded(op: object, av: object) -> bool:
    return (
        op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT)
        and isinstance(av, tuple)
        and av[1] == sre_parse.MAXREPEAT
    )


def _only_repeats(items: list[tuple[object, object]]) -> bool:
    """True when every item of a sequence is quantified and one is unbounded.

    Such a body (``a+``, ``\\w+\\s?``) can split the same text in many ways;
    repeating it again (``(a+)+``) makes the number of ways explode.
    """
    unbounded = False
    for op, av in items:
        if op is sre_parse.SUBPATTERN and isinstance(av, tuple):
            if not _only_repeats(list(av[-1])):
                return False
            unbounded = True
        elif op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT) and isinstance(av, tuple):
            unbounded = unbounded or av[1] == sre_parse.MAXREPEAT
        elif op is sre_parse.BRANCH and isinstance(av, tuple):
            if not any(_only_repeats(list(b)) for b in av[1]):
                return False
            unbounded = True
        else:
            return False
    return unbounded


def _children(op: object, av: object) -> list[list[tuple[object, object]]]:
    """The sub-sequences of one parsed node (group body, branches, repeat body, lookaround)."""
    if not isinstance(av, tuple):
        return []
    if op is sre_parse.SUBPATTERN:
        return [list(av[-1])]
    if op is sre_parse.BRANCH:
        return [list(b) for b in av[1]]
    if op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT):
        return [list(av[2])]
    if op in (sre_parse.ASSERT, sre_parse.ASSERT_NOT):
        return [list(av[1])]
    return []


def _nested_unbounded(items: list[tuple[object, object]]) -> bool:
    for op, av in items:
        if _repeat_is_unbounded(op, av) and _only_repeats(list(av[2])):  # type: ignore[index]
            return True
        if any(_nested_unbounded(child) for child in _children(op, av)):
            return True
    return False


def looks_catastrophic(pattern: str) -> bool:
    """Cheap structural test for ``(a+)+``-style patterns (nested unbounded repeats).

    Patterns that only the ``regex`` module understands are not analysed; the
    run-time probe and the scrubber's time budget still bound them.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. FutureWarning on "[[" in a class
            parsed = sre_parse.parse(pattern)
    except Exception:  # noqa: BLE001 - any parse failure just means "cannot tell"
        return False
    return _nested_unbounded(list(parsed))


def _parts(av: object) -> Iterator[sre_parse.SubPattern]:
    """The sub-patterns inside one parsed node's argument, however it nests them."""
    if isinstance(av, sre_parse.SubPattern):
        yield av
    elif isinstance(av, tuple | list):
        for item in av:
            yield from _parts(item)


def _expanded_size(items: Iterable[tuple[object, object]], limit: int) -> int:
    """Items the ``regex`` module makes of a parsed pattern: a counted repeat is copied.

    Stops counting once past ``limit``, so the answer is cheap even for
    ``(?:x{65535}){65535}``.
    """
    total = 0
    for op, av in items:
        if op in _REPEATS and isinstance(av, tuple):
            low, high, body = av
            count = high if high != sre_parse.MAXREPEAT else low + 1
            total += max(count, 1) * _expanded_size(body, limit)
        else:
            total += max(sum(_expanded_size(part, limit) for part in _parts(av)), 1)
        if total > limit:
            break
    return total


def expands_too_much(pattern: str, limit: int = MAX_EXPANDED_ITEMS) -> bool:
    """True when compiling ``pattern`` would build more than ``limit`` items.

    Patterns only the ``regex`` module understands are judged from their text: every
    ``{m,n}`` count is taken as nested in every other, which can only overestimate.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = sre_parse.parse(pattern)
    except Exception:  # noqa: BLE001 - not stdlib syntax (or a count too large for it)
        size = len(pattern)
        for low, high in _COUNTS.findall(pattern):
            size *= max(int(high or low or 1), 1)
            if size > limit:
                return True
        return False
    return _expanded_size(parsed, limit) > limit


def compile_pattern(pattern: str, max_items: int = MAX_EXPANDED_ITEMS) -> regex.Pattern[str]:
    """Compile a user's scrubbing regex or raise ValueError saying why it is not one."""
    if expands_too_much(pattern, max_items):
        raise ValueError(
            f"pattern {pattern[:60]!r} compiles to more than {max_items} items "
            "(a counted repeat like x{5000}, or nested ones like (x{100}){100}, is copied "
            "out); use + or * instead of large counts"
        )
    try:
        return regex.compile(pattern)
    except (regex.error, ValueError, OverflowError) as exc:
        raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None


def _search(compiled: regex.Pattern[str], pattern: str, probe: str, deadline: float) -> bool:
    """Whether ``compiled`` finds something in ``probe``; ValueError if that takes too long."""
    left = min(PROBE_TIMEOUT_S, deadline - time.monotonic())
    try:
        if left <= 0:
            raise TimeoutError
        return compiled.search(probe, timeout=left) is not None
    except TimeoutError:
        raise ValueError(
            f"pattern {pattern!r} takes too long to check (one probe may take "
            f"{PROBE_TIMEOUT_S} s, all patterns of a request together {PATTERNS_BUDGET_S} s): "
            "it may backtrack catastrophically; simplify it"
        ) from None


def check_custom_pattern(pattern: str, deadline: float | None = None) -> regex.Pattern[str]:
    """Compile a user's scrubbing regex or raise ValueError saying what is wrong with it.

    Its probes stop at ``deadline`` (``time.monotonic()``), so that checking many patterns
    costs at most one budget, not one per pattern.
    """
    if deadline is None:
        deadline = time.monotonic() + PATTERNS_BUDGET_S
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"pattern {pattern[:40]!r}... is longer than {MAX_PATTERN_CHARS} chars")
    compiled = compile_pattern(pattern)
    if _search(compiled, pattern, "", deadline):
        raise ValueError(
            f"pattern {pattern!r} matches the empty string, so it would filter every value"
        )
    if looks_catastrophic(pattern):
        raise ValueError(
            f"pattern {pattern!r} nests unbounded repeats (like '(a+)+') and can take "
            "exponential time; rewrite it without the outer repeat"
        )
    for probe in _PROBES:
        _search(compiled, pattern, probe, deadline)
    return compiled


def _clean_names(values: list[str], what: str) -> list[str]:
    if len(values) > MAX_NAMES:
        raise ValueError(f"at most {MAX_NAMES} {what} are allowed, got {len(values)}")
    seen: dict[str, None] = {}
    for value in values:
        seen[value.lower()] = None
    return list(seen)


class ScrubbingSettings(BaseModel):
    """What is removed from events before they are stored or indexed."""

    # Frozen: compiled forms are cached per object, so a changed setting must be a new object.
    model_config = ConfigDict(extra="forbid", frozen=True)

    scrub_defaults: bool = True
    scrub_ip_addresses: bool = False
    scrub_emails: bool = False
    # Extra key names (case-insensitive, matched as substrings like the defaults).
    sensitive_fields: list[Name] = Field(default_factory=list)
    # Key names (case-insensitive, exact) whose values are never scrubbed.
    safe_fields: list[Name] = Field(default_factory=list)
    # Regexes (Python ``regex`` syntax); every match in any string becomes [Filtered].
    custom_patterns: list[str] = Field(default_factory=list)

    @field_validator("sensitive_fields")
    @classmethod
    def _sensitive(cls, values: list[str]) -> list[str]:
        return _clean_names(values, "sensitive fields")

    @field_validator("safe_fields")
    @classmethod
    def _safe(cls, values: list[str]) -> list[str]:
        return _clean_names(values, "safe fields")

    @field_validator("custom_patterns")
    @classmethod
    def _patterns(cls, values: list[str], info: ValidationInfo) -> list[str]:
        if info.context and info.context.get(STORED):
            # Judged when saved. The judgement includes a timed probe that a busy
            # machine can fail, and later versions may judge more strictly: a
            # saved pattern must not turn into a failure of every event.
            for pattern in values:
                compile_pattern(pattern, STORED_MAX_EXPANDED_ITEMS)
            return values
        if len(values) > MAX_PATTERNS:
            raise ValueError(f"at most {MAX_PATTERNS} custom patterns are allowed")
        unique = list(dict.fromkeys(values))
        deadline = time.monotonic() + PATTERNS_BUDGET_S
        for pattern in unique:
            check_custom_pattern(pattern, deadline)
        return unique


class FilterSettings(BaseModel):
    """Which events are dropped before processing; every switch is off by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    localhost: bool = False
    browser_extensions: bool = False
    web_crawlers: bool = False
    legacy_browsers: bool = False
    # Globs (fnmatch, case-insensitive) against "Type: value" and the message.
    error_messages: list[Glob] = Field(default_factory=list, max_length=MAX_PATTERNS)
    # Globs (fnmatch, case-insensitive) against the release.
    releases: list[Glob] = Field(default_factory=list, max_length=MAX_PATTERNS)
    # Allow-list (case-insensitive); empty keeps every environment.
    environments: list[Name] = Field(default_factory=list, max_length=MAX_NAMES)
    min_level: Level | None = None


class ProjectSettings(BaseModel):
    """Everything under ``/api/v1/projects/{id}/settings``.

    Keep one object per project and replace it when the settings change: the
    compiled scrubber and filter are cached on it, and rebuilt when a part is
    replaced (``model_copy(update=...)`` or assignment).
    """

    model_config = ConfigDict(extra="forbid")

    scrubbing: ScrubbingSettings = Field(default_factory=ScrubbingSettings)
    filters: FilterSettings = Field(default_factory=FilterSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)

    _scrubber: Scrubber | None = PrivateAttr(default=None)
    _filter: InboundFilter | None = PrivateAttr(default=None)

    @classmethod
    def from_stored(cls, data: str | bytes | dict[str, object] | None) -> ProjectSettings:
        """Settings as saved in storage (JSON or parsed): checked when they were saved,
        so only compiled here, not judged again (see ``ScrubbingSettings``)."""
        context = {STORED: True}
        if data is None or isinstance(data, dict):
            return cls.model_validate(data or {}, context=context)
        return cls.model_validate_json(data or "{}", context=context)

    def scrubber(self) -> Scrubber:
        """The compiled scrubber, built on first use and kept with this object."""
        if self._scrubber is None or self._scrubber.settings is not self.scrubbing:
            from app.scrubbing import Scrubber

            self._scrubber = Scrubber(self.scrubbing)
        return self._scrubber

    def inbound_filter(self) -> InboundFilter:
        """The compiled inbound filter, built on first use and kept with this object."""
        if self._filter is None or self._filter.settings is not self.filters:
            from app.filters import InboundFilter

            self._filter = InboundFilter(self.filters)
        return self._filter

    def __eq__(self, other: object) -> bool:
        # The caches are not part of the value.
        if not isinstance(other, ProjectSettings):
            return NotImplemented
        return (
            self.scrubbing == other.scrubbing
            and self.filters == other.filters
            and self.limits == other.limits
        )

    __hash__ = None  # type: ignore[assignment]


class SettingsCache:
    """Parsed project settings, kept while their JSON is unchanged: the compiled
    scrubber and filter live on the settings object, so they are built once per
    change, not per event, and a saved change applies to the next batch."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[str, ProjectSettings]] = {}

    def get(self, project_id: int, settings_json: str) -> ProjectSettings:
        cached = self._cache.get(project_id)
        if cached is not None and cached[0] == settings_json:
            return cached[1]
        settings = ProjectSettings.from_stored(settings_json)
        self._cache[project_id] = (settings_json, settings)
        return settings


__all__ = [
    "STORED",
    "SettingsCache",
    "FilterSettings",
    "Level",
    "ProjectSettings",
    "ScrubbingSettings",
    "check_custom_pattern",
    "compile_pattern",
    "looks_catastrophic",
]
