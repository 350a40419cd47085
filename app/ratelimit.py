"""Rate limits and quotas at ingest: one budget for every API process, counted in a
file of the data directory that the processes of ``stacksift serve --workers N``
map and share (app.shared_counters), or in Redis (through slowapi's storage) when
``STACKSIFT_REDIS_URL`` is set, so that the servers of several hosts share it too.

We do the counting ourselves, after authentication, because the key that is
limited is only known once the request is authenticated (it may sit inside
the envelope), and because of three things the stock strategies get wrong
for us:

* One round trip, off the event loop. A request spends up to four counters (key,
  project, hourly and daily quota); against Redis each ``hit`` is a round trip, so all
  of them run in one Lua script, and the scripts of the requests that arrive together
  go to Redis in one pipeline from a thread of their own. (Run in the handler, the
  round trip blocked the event loop: a third of the distributed API's time.)
* A refused request spends nothing. ``hit`` keeps what a refused request
  added, so a batch of 1000 events refused by a quota with 10 left would use
  up the rest of the hour; here the counters a refused request touched are
  given back, atomically (in Redis, and under the shared file's lock).
* Counters are named by what they count and their window (``quota:7:hour``),
  not by the limit's value, so raising a quota from 1000 to 1100 allows 100
  more events this hour rather than a fresh 1100.

Windows are fixed and start with their first hit. Answers carry
``Retry-After`` and ``X-Sentry-Rate-Limits`` in the form the Sentry SDKs parse
(whole seconds), so they back off.

Redis is optional for correctness but not for availability: if it cannot be
reached (short socket timeouts, so a hung Redis cannot hang ingest) each
server limits through its data directory's file for a few seconds and tries Redis
again.  Accepting a few more events than the budget beats refusing all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from limits import RateLimitItem, parse_many
from limits.storage import Storage
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from redis.exceptions import NoScriptError, RedisError
from slowapi import Limiter

from app.shared_counters import SharedCounters

log = logging.getLogger("stacksift.ratelimit")

# SDK data categories that an error event belongs to.
ERROR_CATEGORIES = "default;error;security"
# A Redis that does not answer within this long is treated as down.
REDIS_TIMEOUT_S = 0.25
# How long to limit through the data directory after a Redis failure before trying again.
REDIS_RETRY_S = 5.0
_COMPILED_MAX = 10_000
COUNTERS_FILE = "rate-limits.counters"  # in the data directory
_PIPELINE_MAX = 500  # requests' scripts per Redis round trip

# KEYS: counters. ARGV: cost, window seconds, limit, for each key in turn.
# Spend the counters in order; at the first one past its limit, give back what
# this call spent and return {its 1-based index, its ttl in ms}; else {0, 0}.
_SPEND = """
for i, key in ipairs(KEYS) do
    local cost = tonumber(ARGV[3 * i - 2])
    local value = redis.call("INCRBY", key, cost)
    if value == cost then
        redis.call("EXPIRE", key, ARGV[3 * i - 1])
    end
    if value > tonumber(ARGV[3 * i]) then
        for j = 1, i do
            redis.call("DECRBY", KEYS[j], ARGV[3 * j - 2])
        end
        return {i, redis.call("PTTL", key)}
    end
end
return {0, 0}
"""


# Validation context key: the settings come from storage, not from a user.
STORED = "stored"
MAX_LIMIT_ITEMS = 10
MAX_LIMIT_CHARS = 200
# One item of a rate limit, as the docs show it: '1000/minute', '10 per hour',
# '10/5 minutes'. Digits, blanks and letters never overlap, so matching is linear;
# limits' own pattern backtracks exponentially on a long list that does not match.
_LIMIT_ITEM = re.compile(
    r"(\d{1,9})(?:\s*/\s*|\s+per\s+)(?:(\d{1,9})\s*)?(second|minute|hour|day|month|year)s?",
    re.ASCII | re.IGNORECASE,
)
_LIMIT_SEPARATORS = re.compile(r"[,;]")


def check_rate_limit(value: str) -> list[RateLimitItem]:
    """Parse a rate limit string that a user typed, or raise ValueError saying why not.

    Accepts up to MAX_LIMIT_ITEMS items like '1000/minute' separated by ',' or ';'.
    The linear check runs first, so ``parse_many`` only ever sees strings it matches
    at once.
    """
    if len(value) > MAX_LIMIT_CHARS:
        raise ValueError(f"is longer than {MAX_LIMIT_CHARS} characters")
    items = _LIMIT_SEPARATORS.split(value)
    if len(items) > MAX_LIMIT_ITEMS:
        raise ValueError(f"has {len(items)} items; at most {MAX_LIMIT_ITEMS} are allowed")
    for item in items:
        match = _LIMIT_ITEM.fullmatch(item.strip())
        if match is None:
            raise ValueError(
                f"{item.strip()[:40]!r} is not a rate limit like '1000/minute', "
                "'10 per hour' or '10/5 minutes' (several: separated by ',' or ';')"
            )
        if int(match[1]) < 1 or (match[2] is not None and int(match[2]) < 1):
            raise ValueError(f"{item.strip()!r}: the numbers must be at least 1")
    return parse_many(value)


class LimitSettings(BaseModel):
    """Per-project limits; ``None`` means the server default (keys) or no limit."""

    model_config = ConfigDict(extra="forbid")

    key_rate_limit: str | None = Field(None, description="per ingest key, e.g. '100/second'")
    project_rate_limit: str | None = Field(None, description="all keys of the project together")
    events_per_hour: int | None = Field(None, ge=1, description="quota of accepted events")
    events_per_day: int | None = Field(None, ge=1, description="quota of accepted events")

    @field_validator("key_rate_limit", "project_rate_limit")
    @classmethod
    def _limit(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if info.context and info.context.get(STORED):
            # Judged when saved; a stricter check now must not fail every event.
            try:
                parse_many(value)
            except ValueError:
                raise ValueError(f"{value[:60]!r} is not a rate limit") from None
            return value
        check_rate_limit(value)
        return value


@dataclass(slots=True)
class Refusal:
    reason: str  # counter name: rate_limited or over_quota
    message: str
    retry_after: int
    header: str  # X-Sentry-Rate-Limits

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after), "X-Sentry-Rate-Limits": self.header}


@dataclass(slots=True, frozen=True)
class _Rule:
    """One counter a request spends: ``name`` is completed with the key or project id."""

    name: str
    window: int  # seconds
    limit: int
    per_event: bool  # quotas spend one per event, rate limits one per request
    scope: str  # key | project
    categories: str
    reason: str
    message: str

    def refusal(self, ttl_s: float, cost: int) -> Refusal:
        retry = max(1, math.ceil(ttl_s))
        code = "quota_exceeded" if self.reason == "over_quota" else "rate_limited"
        message = self.message
        if self.per_event:
            message += (
                " is used up" if cost == 1 else f" has no room for this request's {cost} events"
            )
        return Refusal(
            self.reason, message, retry, f"{retry}:{self.categories}:{self.scope}:{code}"
        )


def _rate_rules(items: list[RateLimitItem], scope: str) -> list[_Rule]:
    return [
        _Rule(
            f"{scope}:{{}}:{item.multiples}{item.GRANULARITY.name}",
            item.get_expiry(),
            item.amount,
            False,
            scope,
            "",
            "rate_limited",
            f"this {scope} is limited to {item}",
        )
        for item in items
    ]


def _quota_rule(quota: int, per: str, window: int) -> _Rule:
    return _Rule(
        f"quota:{{}}:{per}",
        window,
        quota,
        True,
        "project",
        ERROR_CATEGORIES,
        "over_quota",
        f"the project's quota of {quota} events per {per}",
    )


Spend = list[tuple[str, int, _Rule]]  # counter name, cost, rule


class RateLimiter:
    def __init__(self, default_key_limit: str, redis_url: str | None, data_dir: Path) -> None:
        # Without Redis (or while it is away) the counters live in the data directory's
        # file, one budget for all processes; limits' MemoryStorage would count per
        # process, and start a Timer thread every 10 ms under load.
        self._counters = SharedCounters(data_dir / COUNTERS_FILE)
        self._spender: _RedisSpender | None = None
        if redis_url:  # slowapi's Redis storage: its connection runs our script
            storage: Storage = Limiter(
                key_func=lambda request: "",  # unused: we pass identities explicitly
                storage_uri=redis_url,
                storage_options={
                    "socket_timeout": REDIS_TIMEOUT_S,
                    "socket_connect_timeout": REDIS_TIMEOUT_S,
                },
                strategy="fixed-window",
                key_prefix="stacksift",
            ).limiter.storage
            self._spender = _RedisSpender(storage.get_connection())  # type: ignore[attr-defined]
        self._redis_down_until = 0.0
        self._default = _rate_rules(parse_many(default_key_limit), "key")
        self._compiled: dict[int, tuple[LimitSettings, list[_Rule], list[_Rule]]] = {}

    def _rules(self, settings: LimitSettings) -> tuple[list[_Rule], list[_Rule]]:
        """(per-request rules, per-event rules), built once per settings object."""
        cached = self._compiled.get(id(settings))
        if cached is not None and cached[0] is settings:
            return cached[1], cached[2]
        per_request = (
            _rate_rules(parse_many(settings.key_rate_limit), "key")
            if settings.key_rate_limit
            else self._default
        )
        if settings.project_rate_limit:
            per_request = per_request + _rate_rules(
                parse_many(settings.project_rate_limit), "project"
            )
        per_event = []
        if settings.events_per_hour:
            per_event.append(_quota_rule(settings.events_per_hour, "hour", 3600))
        if settings.events_per_day:
            per_event.append(_quota_rule(settings.events_per_day, "day", 86400))
        if len(self._compiled) >= _COMPILED_MAX:
            self._compiled.clear()
        self._compiled[id(settings)] = (settings, per_request, per_event)
        return per_request, per_event

    async def check(
        self, project_id: int, key_hash: str, settings: LimitSettings, events: int
    ) -> Refusal | None:
        """Spend one request of the key's and project's budgets and ``events`` of the
        project's quotas; the first exhausted one refuses the request, which then
        spends nothing."""
        per_request, per_event = self._rules(settings)
        key_id, project = key_hash[:16], str(project_id)
        spend: Spend = [
            (rule.name.format(key_id if rule.scope == "key" else project), 1, rule)
            for rule in per_request
        ]
        if events:
            spend += [(rule.name.format(project), events, rule) for rule in per_event]
        if self._spender is not None and time.monotonic() >= self._redis_down_until:
            try:
                return await self._spender.spend(spend)
            except RedisError as exc:
                self._redis_down_until = time.monotonic() + REDIS_RETRY_S
                log.warning(
                    "rate limits: Redis unreachable (%s); limiting through the data "
                    "directory for %.0f s",
                    exc,
                    REDIS_RETRY_S,
                )
        return self._spend_shared(spend)

    def _spend_shared(self, spend: Spend) -> Refusal | None:
        refused = self._counters.spend(
            [(name, cost, rule.window, rule.limit) for name, cost, rule in spend]
        )
        if refused is None:
            return None
        index, ttl_s = refused
        _, cost, rule = spend[index]
        return rule.refusal(ttl_s, cost)


class _RedisSpender:
    """Runs the spend script of every request waiting at the moment in one pipeline,
    from one thread, and wakes each request's event loop once per batch."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._sha = hashlib.sha1(_SPEND.encode()).hexdigest()
        self._queue: queue.SimpleQueue[
            tuple[Spend, asyncio.AbstractEventLoop, asyncio.Future[Refusal | None]]
        ] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="rate-limits", daemon=True).start()

    async def spend(self, spend: Spend) -> Refusal | None:
        """The refusal, if any; raises RedisError when Redis could not answer."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Refusal | None] = loop.create_future()
        self._queue.put((spend, loop, future))
        return await future

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < _PIPELINE_MAX:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            outcomes: Sequence[Refusal | None | BaseException]
            try:
                try:
                    replies = self._pipeline(batch)
                except NoScriptError:  # a new or flushed Redis: nothing ran, load it once
                    self._redis.script_load(_SPEND)
                    replies = self._pipeline(batch)
                outcomes = [
                    _refusal(spend, reply)
                    for (spend, _, _), reply in zip(batch, replies, strict=True)
                ]
            except Exception as exc:  # Redis away: every request of the batch falls back
                outcomes = [exc] * len(batch)
            waiting: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any]]] = {}
            for (_, loop, future), outcome in zip(batch, outcomes, strict=True):
                waiting.setdefault(loop, []).append((future, outcome))
            for loop, settled in waiting.items():
                with contextlib.suppress(RuntimeError):  # that loop has closed (shutdown)
                    loop.call_soon_threadsafe(_settle, settled)

    def _pipeline(self, batch: Sequence[tuple[Spend, Any, Any]]) -> list[list[int]]:
        """EVALSHA per request (a Script object would add a SCRIPT EXISTS round trip)."""
        pipe = self._redis.pipeline(transaction=False)
        for spend, _, _ in batch:
            args = [v for _, cost, rule in spend for v in (cost, rule.window, rule.limit)]
            pipe.evalsha(self._sha, len(spend), *(name for name, _, _ in spend), *args)
        return pipe.execute()


def _refusal(spend: Spend, reply: list[int]) -> Refusal | None:
    index, ttl_ms = reply
    if not index:
        return None
    _, cost, rule = spend[index - 1]
    return rule.refusal((ttl_ms if ttl_ms > 0 else rule.window * 1000) / 1000, cost)


def _settle(settled: list[tuple[asyncio.Future[Refusal | None], Any]]) -> None:
    for future, outcome in settled:
        if future.done():  # the client went away
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
