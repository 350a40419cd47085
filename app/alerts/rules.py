"""Alert rules as the API takes them (see the contract's "Alert rules" section).

Validation happens here, once, when a rule is saved, so the worker never meets
a rule it cannot evaluate: the query must parse, durations must read, and a
frequency rule must say how many events in how long.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.query import parse

Trigger = Literal["new_issue", "regression", "every_event", "frequency"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_EMAIL = re.compile(r"^[^@\s,<>\"]+@[^@\s,<>\"]+\.[^@\s,<>\"]+$")
MAX_DURATION = 30 * 86400.0


class RuleError(ValueError):
    """A rule the API refuses; the message names the field and what is wrong."""

    status = 400
    code = "invalid_rule"


def duration(text: str) -> float:
    """Seconds in a duration like ``30s``, ``5m``, ``1h`` or ``2d`` (a bare number: seconds)."""
    m = _DURATION.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 1h or 2d")
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds > MAX_DURATION:
        raise ValueError(f"{text!r} is longer than 30 days")
    return seconds


def _addresses(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("needs at least one address")
    for addr in value:
        if not _EMAIL.match(addr):
            raise ValueError(f"{addr!r} is not an e-mail address")
    return value


class _Addressed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: list[str] = Field(max_length=50)

    @field_validator("to")
    @classmethod
    def _to(cls, value: list[str]) -> list[str]:
        return _addresses(value)


class EmailChannel(_Addressed):
    """Sent through ``STACKSIFT_SMTP_URL``."""

    type: Literal["email"]


class PostmarkChannel(_Addressed):
    """Sent through the Postmark API (``STACKSIFT_POSTMARK_SERVER_TOKEN``)."""

    type: Literal["postmark"]


class WebhookChannel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["webhook"]
    url: str = Field(max_length=2000)
    secret: str | None = Field(
        None,
        max_length=500,
        description="Signs each body: X-Stacksift-Signature: sha256=HMAC-SHA256(secret, body). "
        "Write-only: answers never contain it, they say secret_set instead. On PUT and PATCH "
        "a webhook channel without 'secret' keeps the secret stored for the same URL; "
        "null or an empty string removes it.",
    )
    secret_set: bool | None = Field(
        None,
        description="In answers: whether the channel has a secret. Accepted back so that a "
        "rule read with GET can be sent back with PUT: without 'secret', true keeps the "
        "secret stored for the same URL (a 400 when there is none) and false removes it.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value


Channel = Annotated[EmailChannel | PostmarkChannel | WebhookChannel, Field(discriminator="type")]


class Rule(BaseModel):
    """The rule body of ``POST``/``PUT``; ``GET`` adds id, project_id and timestamps."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    query: str = Field("", max_length=4000)
    trigger: Trigger
    threshold: int | None = Field(None, ge=1, le=1_000_000)
    window: str | None = None
    throttle: str = "30m"
    channels: list[Channel] = Field(min_length=1, max_length=20)
    enabled: bool = True

    @field_validator("window", "throttle")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            duration(value)
        return value

    @model_validator(mode="after")
    def _frequency(self) -> Rule:
        if self.trigger == "frequency":
            if self.threshold is None or self.window is None:
                raise ValueError("a frequency rule needs both threshold and window")
            if duration(self.window) <= 0:
                raise ValueError("window must be longer than 0s")
        return self


def public_channels(channels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Channels as answers show them: a webhook's secret replaced by ``secret_set``."""
    out = []
    for channel in channels:
        if channel.get("type") == "webhook":
            secret = channel.get("secret")
            channel = {k: v for k, v in channel.items() if k != "secret"}
            channel["secret_set"] = bool(secret)
        out.append(channel)
    return out


def stored_form(rule: Rule, stored: list[dict[str, Any]]) -> dict[str, Any]:
    """What to save of ``rule``: a webhook channel that gave no secret and whose URL is
    unchanged keeps the secret in ``stored`` (the channels saved before; [] when
    creating), because answers never show secrets and reading a rule and writing it back
    must not drop them."""
    secrets: dict[str, str] = {}
    for channel in stored:
        if channel.get("type") == "webhook" and channel.get("secret"):
            secrets.setdefault(channel["url"], channel["secret"])
    data = rule.model_dump(mode="json")
    for i, (model, channel) in enumerate(zip(rule.channels, data["channels"], strict=True)):
        if not isinstance(model, WebhookChannel):
            continue
        secret_set = channel.pop("secret_set")
        if "secret" not in model.model_fields_set and secret_set is not False:
            channel["secret"] = secrets.get(model.url)
            if channel["secret"] is None and secret_set:
                raise RuleError(
                    f"invalid alert rule: channels.{i}.secret_set is true but no secret is "
                    f"stored for {model.url}: send the secret"
                )
        channel["secret"] = channel["secret"] or None
    return data


def validate_rule(data: Any) -> Rule:
    """The rule in ``data`` or RuleError; a query that does not parse raises QueryError."""
    try:
        rule = Rule.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()))
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            parts.append(f"{where}: {msg}" if where else msg)
        raise RuleError("invalid alert rule: " + "; ".join(parts)) from None
    parse(rule.query)  # QueryError (400 invalid_query) says at which position
    return rule
