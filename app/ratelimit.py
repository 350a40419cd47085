"""Rate limits and quotas at ingest, with slowapi's limiter.

slowapi picks the storage: in memory for one process, Redis when
``STACKSIFT_REDIS_URL`` is set so that every API process spends one budget.
We call its limiter ourselves, after authentication, because the key that is
limited is only known once the request is authenticated (it may sit inside
the envelope).  Answers carry ``Retry-After`` and ``X-Sentry-Rate-Limits`` in
the form the Sentry SDKs parse (whole seconds), so they back off.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from pydantic import BaseModel, ConfigDict, Field, field_validator
from slowapi import Limiter

# SDK data categories that an error event belongs to.
ERROR_CATEGORIES = "default;error;security"


class LimitSettings(BaseModel):
    """Per-project limits; ``None`` means the server default (keys) or no limit."""

    model_config = ConfigDict(extra="forbid")

    key_rate_limit: str | None = Field(None, description="per ingest key, e.g. '100/second'")
    project_rate_limit: str | None = Field(None, description="all keys of the project together")
    events_per_hour: int | None = Field(None, ge=1, description="quota of accepted events")
    events_per_day: int | None = Field(None, ge=1, description="quota of accepted events")

    @field_validator("key_rate_limit", "project_rate_limit")
    @classmethod
    def _limit(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_many(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a rate limit like '1000/minute'") from None
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


class RateLimiter:
    def __init__(self, default_key_limit: str, redis_url: str | None) -> None:
        self._slowapi = Limiter(
            key_func=lambda request: "",  # unused: we pass identities explicitly
            storage_uri=redis_url or "memory://",
            strategy="fixed-window",
            key_prefix="stacksift",
        )
        self._default = parse_many(default_key_limit)
        self._parsed: dict[str, list[RateLimitItem]] = {}

    def _items(self, limit: str | None) -> list[RateLimitItem]:
        if limit is None:
            return self._default
        items = self._parsed.get(limit)
        if items is None:
            items = self._parsed[limit] = parse_many(limit)
        return items

    def check(
        self, project_id: int, key_hash: str, settings: LimitSettings, events: int
    ) -> Refusal | None:
        """Spend one request of the key's and project's budgets and ``events`` of the
        project's quotas; the first exhausted one refuses the request."""
        limiter = self._slowapi.limiter
        for item in self._items(settings.key_rate_limit):
            if not limiter.hit(item, "key", key_hash[:16]):
                return self._refusal(
                    item,
                    ("key", key_hash[:16]),
                    "key",
                    "",
                    "rate_limited",
                    f"this key is limited to {item}",
                )
        if settings.project_rate_limit:
            for item in self._items(settings.project_rate_limit):
                if not limiter.hit(item, "project", str(project_id)):
                    return self._refusal(
                        item,
                        ("project", str(project_id)),
                        "project",
                        "",
                        "rate_limited",
                        f"this project is limited to {item}",
                    )
        if events:
            for quota, per in (
                (settings.events_per_hour, "hour"),
                (settings.events_per_day, "day"),
            ):
                if quota:
                    item = self._items(f"{quota}/{per}")[0]
                    ids = ("quota", str(project_id))
                    if not limiter.hit(item, *ids, cost=events):
                        return self._refusal(
                            item,
                            ids,
                            "project",
                            ERROR_CATEGORIES,
                            "over_quota",
                            f"the project's quota of {quota} events per {per} is used up",
                        )
        return None

    def _refusal(
        self,
        item: RateLimitItem,
        ids: tuple[str, ...],
        scope: str,
        categories: str,
        reason: str,
        message: str,
    ) -> Refusal:
        reset = self._slowapi.limiter.get_window_stats(item, *ids).reset_time
        retry = max(1, math.ceil(reset - time.time()))
        code = "quota_exceeded" if reason == "over_quota" else "rate_limited"
        return Refusal(reason, message, retry, f"{retry}:{categories}:{scope}:{code}")
