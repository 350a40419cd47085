"""The one settings object, read from ``STACKSIFT_*`` environment variables.

Unknown ``STACKSIFT_`` variables are refused too: a typo such as
``STACKSIFT_REDIS_URI`` would otherwise silently select embedded mode.
"""

from __future__ import annotations

import ipaddress
import os
import re
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app import datadir


class SettingsError(Exception):
    """Raised with a message that names the offending setting."""


def check_url(value: str, schemes: tuple[str, ...]) -> str:
    """``value`` when it is a URL of one of ``schemes`` naming a host (``unix://``: a path);
    a typo such as ``http://`` for an SMTP server would otherwise only show when the first
    alert fails."""
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        expected = " or ".join(f"{s}://" for s in schemes)
        # Only the scheme is echoed: the rest of a URL may hold a password.
        raise ValueError(f"must start with {expected}, got {parts.scheme or 'no'} scheme")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError("the port is not a number from 0 to 65535") from None
    if parts.scheme == "unix" and not parts.path:
        raise ValueError("a unix:// URL needs the socket's path, e.g. unix:///run/redis.sock")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"names no host, e.g. {schemes[0]}://host:port")
    return value


# The URL settings and the schemes each takes.
_URL_SCHEMES: dict[str, tuple[str, ...]] = {
    "base_url": ("http", "https"),
    "elasticsearch_url": ("http", "https"),
    "postmark_api_url": ("http", "https"),
    "redis_url": ("redis", "rediss", "unix"),
    "smtp_url": ("smtp", "smtps"),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STACKSIFT_", extra="forbid", frozen=True)

    data_dir: Path = Path("./stacksift-data")
    redis_url: str | None = None
    elasticsearch_url: str | None = None
    admin_token: str | None = None
    # Unset: the address `stacksift serve` recorded in the data directory (app.datadir).
    base_url: str | None = None
    retention_days: int = 90
    max_event_bytes: int = 1_048_576
    max_envelope_bytes: int = 20 * 1_048_576
    max_compressed_bytes: int = 20 * 1_048_576
    rate_limit: str = "1000/minute"
    postmark_server_token: str | None = None
    postmark_api_url: str = "https://api.postmarkapp.com"
    smtp_url: str | None = None
    alert_from: str = "stacksift@localhost"
    trusted_proxies: str = ""
    log_level: str = "INFO"
    # Distributed mode: names of indices, index templates and Redis keys start with this, so
    # several deployments (or test runs) can share one cluster and one Redis.
    index_prefix: str = "stacksift"
    # Distributed mode: queue entries a worker took but did not finish (it died) are taken
    # over by another worker after this many seconds.
    reclaim_seconds: float = 30.0
    # Seconds a client may take to send a request's headers, and then again its body:
    # a slower request is closed (headers) or answered 408 (ingest bodies), so slow or
    # stalled clients cannot hold connections and memory forever.
    read_timeout_seconds: float = 30.0
    # Events waiting for processing above which ingest answers 429 (Retry-After: 60) until
    # processing catches up: a sustained overload fills the queue's disk or memory
    # otherwise (~8.5 KB an event). 0: no bound.
    max_backlog: int = 1_000_000

    @field_validator(
        "retention_days", "max_event_bytes", "max_envelope_bytes", "max_compressed_bytes"
    )
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be a positive integer")
        return value

    @field_validator(*_URL_SCHEMES)
    @classmethod
    def _url(cls, value: str | None, info: ValidationInfo) -> str | None:
        # An empty optional URL (``STACKSIFT_SMTP_URL=`` from a compose file's ${VAR:-})
        # is unset; a URL with a default must be one.
        name = str(info.field_name)
        if value is None or (not value and cls.model_fields[name].default is None):
            return None
        url = check_url(value, _URL_SCHEMES[name])
        return url.rstrip("/") if name == "base_url" else url

    @field_validator("alert_from")
    @classmethod
    def _alert_from(cls, value: str) -> str:
        address = parseaddr(value)[1]
        if "@" not in address or any(c in value for c in "\r\n"):
            raise ValueError("must be an e-mail address, e.g. alerts@example.com")
        return value

    @field_validator("data_dir")
    @classmethod
    def _data_dir(cls, value: Path) -> Path:
        # Absolute once, so that every message and every process names the same place.
        return value.expanduser().absolute()

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from app.ratelimit import check_rate_limit

        check_rate_limit(value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        for item in filter(None, (p.strip() for p in value.split(","))):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
        return value

    @field_validator("index_prefix")
    @classmethod
    def _index_prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,39}", value):
            raise ValueError("must be 1-40 characters of a-z, 0-9, '-' and '_'")
        return value

    @field_validator("reclaim_seconds")
    @classmethod
    def _reclaim(cls, value: float) -> float:
        if not 1 <= value <= 3600:
            raise ValueError("must be between 1 and 3600 seconds")
        return value

    @field_validator("read_timeout_seconds")
    @classmethod
    def _read_timeout(cls, value: float) -> float:
        if not 0 < value <= 3600:
            raise ValueError("must be more than 0 and at most 3600 seconds")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value.upper()

    @property
    def distributed(self) -> bool:
        return bool(self.redis_url and self.elasticsearch_url)

    @property
    def public_base_url(self) -> str:
        """Where users and SDKs reach this server: for DSNs and links in notifications."""
        return (
            self.base_url
            or datadir.recorded_base_url(self.data_dir)
            or datadir.DEFAULT_BASE_URL
        )

    @property
    def db_path(self) -> Path:
        return self.data_dir / "stacksift.db"


_KNOWN = {f"STACKSIFT_{name.upper()}" for name in Settings.model_fields}
# Read by scripts/ (services.sh, the tests), not by the server; allowed so that one
# environment (services.sh exports them for its own `stop`) can serve both.
_SCRIPT_ONLY = {
    "STACKSIFT_SERVICES_DIR",
    "STACKSIFT_TEST_BACKEND",
    "STACKSIFT_TEST_EXIT_GRACE",
    "STACKSIFT_ES_PORT",
    "STACKSIFT_ES_TRANSPORT_PORT",
    "STACKSIFT_REDIS_PORT",
    "STACKSIFT_ES_VERSION",
    "STACKSIFT_ES_HEAP",
    "STACKSIFT_ES_USER",
    "STACKSIFT_ES_JAVA_HOME",
    "STACKSIFT_ES_START_TIMEOUT",
}


def load_settings() -> Settings:
    """Read and validate settings; raise SettingsError naming the bad variable."""
    unknown = sorted(
        k for k in os.environ if k.startswith("STACKSIFT_") and k not in _KNOWN | _SCRIPT_ONLY
    )
    if unknown:
        raise SettingsError(
            f"unknown setting {unknown[0]}; known settings: {', '.join(sorted(_KNOWN))}"
        )
    try:
        settings = Settings()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = "STACKSIFT_" + str(err["loc"][0]).upper() if err["loc"] else "settings"
            lines.append(f"{name}: {err['msg']}")
        raise SettingsError("invalid setting " + "; ".join(lines)) from None
    if settings.elasticsearch_url and not settings.redis_url:
        raise SettingsError(
            "STACKSIFT_REDIS_URL: distributed mode (STACKSIFT_ELASTICSEARCH_URL) needs Redis too"
        )
    # REDIS_URL alone keeps embedded storage and shares rate limits between processes.
    return settings
