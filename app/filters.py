"""Inbound filters: per-project rules that drop events before they are processed.

The worker calls :meth:`InboundFilter.check` on a normalized event before
scrubbing; a non-``None`` result is the reason code under which the caller
counts the drop (per project and reason), and the event is not stored. Reason
codes are in :data:`REASONS`; the first filter that matches, in that order,
names the reason.

Semantics follow Sentry's Relay (``relay-filter``) where it has an equivalent:

* ``localhost``: ``user.ip_address`` is a loopback address (unless it is the
  connection's address that normalization filled in), the request URL's
  host is ``localhost``/``*.localhost``/a loopback IP, the URL is ``file://``,
  ``X-Forwarded-For`` is loopback, or (without a URL) ``Host`` /
  ``X-Forwarded-Host`` is local. The connection's own IP
  (``ingest.client_ip``) is deliberately *not* used: behind a reverse proxy
  on the same host every event arrives from 127.0.0.1, and the filter would
  silently drop all production traffic.
* ``browser_extension``: exception values with messages that extensions cause,
  or whose topmost frame comes from an extension URL.
* ``web_crawler`` / ``legacy_browser``: the ``User-Agent`` request header,
  falling back to ``ingest.user_agent``. Headless Chrome is *not* a crawler:
  it runs end-to-end tests and real automation whose errors matter.
* ``error_message`` / ``release``: fnmatch globs, case-insensitive, matched
  against the whole text (``"Type: value"``, the type alone, the value alone,
  and the log message).
* ``environment``: allow-list, case-insensitive; an event without an
  environment is not in the list and is dropped.
* ``level``: events below ``min_level`` (a missing level counts as ``error``).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from app.fields import LEVELS, exceptions
from app.project_settings import FilterSettings
from app.scrubbing import InvalidEventError

LOCALHOST = "localhost"
BROWSER_EXTENSION = "browser_extension"
WEB_CRAWLER = "web_crawler"
LEGACY_BROWSER = "legacy_browser"
ERROR_MESSAGE = "error_message"
RELEASE = "release"
ENVIRONMENT = "environment"
LEVEL = "level"
REASONS = (
    LOCALHOST,
    BROWSER_EXTENSION,
    WEB_CRAWLER,
    LEGACY_BROWSER,
    ERROR_MESSAGE,
    RELEASE,
    ENVIRONMENT,
    LEVEL,
)

LEVEL_ALIASES = {"warn": "warning", "critical": "fatal", "log": "info", "err": "error"}

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})

# Relay's list (relay-filter/src/browser_extensions.rs), with the same intent.
_EXTENSION_MESSAGES = re.compile(
    r"top\.GLOBALS|originalCreateNotification|canvas\.contentDocument|MyApp_RemoveAllHighlights"
    r"|http://tt\.epicplay\.com|Can't\sfind\svariable:\sZiteReader|jigsaw\sis\snot\sdefined"
    r"|ComboSearch\sis\snot\sdefined|http://loading\.retry\.widdit\.com/|atomicFindClose"
    r"|fb_xd_fragment|bmi_SafeAddOnload|EBCallBackMessageReceived|_gCrWeb|conduitPage"
    r"|null\sis\snot\san\sobject\s\(evaluating\s'elt\.parentNode'\)"
    r"|plugin\.setSuspendState\sis\snot\sa\sfunction|Extension\scontext\sinvalidated"
    r"|webkit-masked-url:|can't\saccess\sdead\sobject"
    r"|Cannot\sredefine\sproperty:\s(?:solana|ethereum|googletag)"
    r"|undefined\sis\snot\san\sobject\s\(evaluating\s'a\.L'\)",
    re.IGNORECASE,
)
_EXTENSION_SOURCES = re.compile(
    r"graph\.facebook\.com|connect\.facebook\.net|eatdifferent\.com\.woopra-ns\.com"
    r"|static\.woopra\.com/js/woopra\.js|^chrome(?:-extension)?://|^moz-extension://"
    r"|^safari(?:-web)?-extension://|^ms-browser-extension://|webkit-masked-url"
    r"|127\.0\.0\.1:4001/isrunning|webappstoolbarba\.texthelp\.com/"
    r"|metrics\.itunes\.apple\.com\.edgesuite\.net/|kaspersky-labs\.com",
    re.IGNORECASE,
)
_ANONYMOUS_FRAMES = frozenset({"<anonymous>", "[native code]"})

# Relay's crawler list (relay-filter/src/web_crawlers.rs) plus common bots it
# reaches only through the generic "bot/" rule. "cubot" is a phone brand.
_CRAWLERS = re.compile(
    r"Mediapartners-Google|AdsBot-Google|Googlebot|FeedFetcher-Google|Storebot-Google"
    r"|APIs-Google-Crawler|BingBot|BingPreview|Baiduspider|Slurp|Sogou|facebook|meta-externalagent"
    r"|ia_archiver|(?<!cu)bots?[/\s);]|(?<!cu)bot$|spider[/\s);]|crawler|Slackbot|Slack-ImgProxy"
    r"|Calypso\sAppCrawler|pingdom|lyticsbot|AWS\sSecurity\sScanner|HubSpot\sCrawler|Bytespider"
    r"|Better\sUptime|Cloudflare-Healthchecks|GTmetrix|ELB-HealthChecker|DuckDuckBot|YandexBot"
    r"|Applebot|AhrefsBot|SemrushBot|UptimeRobot|GPTBot|ClaudeBot|PetalBot|Twitterbot|LinkedInBot",
    re.IGNORECASE,
)
# Slack's link unfurler fetches pages on behalf of a person who pasted a link.
_ALLOWED_CRAWLERS = re.compile(r"Slackbot\s1\.\d+", re.IGNORECASE)

_OPERA_MINI = re.compile(r"Opera Mini/(\d+)")
_OPERA_CHROMIUM = re.compile(r"\bOPR/(\d+)")
_OPERA_PRESTO = re.compile(r"\bOpera[/ ](\d+)")
_VERSION = re.compile(r"\bVersion/(\d+)")
_MSIE = re.compile(r"\bMSIE (\d+)|\bTrident/\d+.*\brv:(\d+)")
_ANDROID = re.compile(r"\bAndroid (\d+)")
_SAFARI = re.compile(r"\bVersion/(\d+)[\d.]*(?: Mobile/\w+)? Safari/")
_NOT_SAFARI = ("Chrome/", "Chromium/", "CriOS/", "FxiOS/", "Android", "Opera", "OPR/", "Edg")
_NOT_ANDROID_BROWSER = ("Firefox/", "Opera", "OPR/", "Chrome/")


def _globs(patterns: list[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(fnmatch.translate(p) for p in patterns), re.IGNORECASE)


def normalize_level(level: Any) -> str:
    if not isinstance(level, str) or not level:
        return "error"
    low = level.lower()
    return LEVEL_ALIASES.get(low, low)


def header(event: dict[str, Any], name: str) -> str | None:
    """A request header by case-insensitive name; headers may be a dict or [k, v] pairs."""
    request = event.get("request")
    headers = request.get("headers") if isinstance(request, dict) else None
    if isinstance(headers, dict):
        items: Any = headers.items()
    elif isinstance(headers, list):
        items = (h for h in headers if isinstance(h, list | tuple) and len(h) == 2)
    else:
        return None
    for key, value in items:
        if isinstance(key, str) and key.lower() == name and isinstance(value, str):
            return value
    return None


def user_agent(event: dict[str, Any]) -> str | None:
    ua = header(event, "user-agent")
    if ua:
        return ua
    ingest = event.get("ingest")
    if isinstance(ingest, dict) and isinstance(ingest.get("user_agent"), str):
        return ingest["user_agent"] or None
    return None


def _is_loopback(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        return ipaddress.ip_address(value.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def _is_local_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host in _LOCAL_HOSTS or host.endswith(".localhost") or _is_loopback(host)


def is_localhost(event: dict[str, Any]) -> bool:
    user = event.get("user")
    if isinstance(user, dict) and _is_loopback(ip := user.get("ip_address")):
        # Normalization fills a missing or "{{auto}}" user IP with the connection's
        # address; that one says where the request came from, not where the user is.
        ingest = event.get("ingest")
        if not (isinstance(ingest, dict) and ingest.get("client_ip") == ip):
            return True
    request = event.get("request")
    url = request.get("url") if isinstance(request, dict) else None
    if isinstance(url, str) and url:
        try:
            parts = urlsplit(url.strip())
            host = parts.hostname
        except ValueError:
            parts, host = None, None
        if parts is not None and parts.scheme.lower() == "file":
            return True
        if host and _is_local_host(host):
            return True
    forwarded_for = header(event, "x-forwarded-for")
    if forwarded_for and _is_loopback(forwarded_for.split(",")[0]):
        return True
    if not (isinstance(url, str) and url):
        for name in ("host", "x-forwarded-host"):
            value = header(event, name)
            if value and _is_local_host(_strip_port(value.strip())):
                return True
    return False


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def is_browser_extension(event: dict[str, Any]) -> bool:
    for exc in exceptions(event):
        value = exc.get("value")
        if isinstance(value, str) and _EXTENSION_MESSAGES.search(value):
            return True
        source = _top_frame_path(exc)
        if source and _EXTENSION_SOURCES.search(source):
            return True
    return False


def _top_frame_path(exc: dict[str, Any]) -> str | None:
    stacktrace = exc.get("stacktrace")
    frames = stacktrace.get("frames") if isinstance(stacktrace, dict) else None
    if not isinstance(frames, list):
        return None
    for frame in reversed(frames):
        if not isinstance(frame, dict):
            continue
        path = frame.get("abs_path") or frame.get("filename")
        if isinstance(path, str) and path and path not in _ANONYMOUS_FRAMES:
            return path
    return None


def is_web_crawler(ua: str) -> bool:
    return _CRAWLERS.search(ua) is not None and _ALLOWED_CRAWLERS.search(ua) is None


def _major(pattern: re.Pattern[str], ua: str) -> int | None:
    m = pattern.search(ua)
    if m is None:
        return None
    digits = next((g for g in m.groups() if g), None)
    return int(digits) if digits else None


def is_legacy_browser(ua: str) -> bool:
    """IE <= 11, Opera < 15, Opera Mini < 8, Android browser < 4, Safari < 6."""
    if "Opera Mini/" in ua:
        version = _major(_OPERA_MINI, ua)
        return version is not None and version < 8
    if "OPR/" in ua:
        version = _major(_OPERA_CHROMIUM, ua)
        return version is not None and version < 15
    if "Opera" in ua:
        # Presto Opera says "Opera/9.80 ... Version/12.16": the real version is Version/.
        version = _major(_VERSION, ua) or _major(_OPERA_PRESTO, ua)
        return version is not None and version < 15
    if "MSIE " in ua or "Trident/" in ua:
        return _MSIE.search(ua) is not None
    if "Android " in ua and not any(token in ua for token in _NOT_ANDROID_BROWSER):
        version = _major(_ANDROID, ua)
        return version is not None and version < 4
    if "Safari/" in ua and not any(token in ua for token in _NOT_SAFARI):
        version = _major(_SAFARI, ua)
        return version is not None and version < 6
    return False


def messages(event: dict[str, Any]) -> Iterator[str]:
    """The texts error-message globs are matched against, as Relay builds them."""
    logentry = event.get("logentry")
    if isinstance(logentry, dict):
        text = logentry.get("formatted") or logentry.get("message")
        if isinstance(text, str) and text:
            yield text
    if isinstance(event.get("message"), str) and event["message"]:
        yield event["message"]
    for exc in exceptions(event):
        ty = exc.get("type") if isinstance(exc.get("type"), str) else ""
        value = exc.get("value") if isinstance(exc.get("value"), str) else ""
        if ty and value:
            yield f"{ty}: {value}"
            yield value
        elif ty or value:
            yield ty or value


class InboundFilter:
    """The compiled inbound filters of one project; build once, reuse for every event."""

    def __init__(self, settings: FilterSettings) -> None:
        self.settings = settings
        self._messages = _globs(settings.error_messages)
        self._releases = _globs(settings.releases)
        self._environments = frozenset(e.lower() for e in settings.environments)
        self._min_level = LEVELS[settings.min_level] if settings.min_level else None
        self._by_agent = settings.web_crawlers or settings.legacy_browsers
        self.enabled = bool(
            settings.localhost
            or settings.browser_extensions
            or self._by_agent
            or self._messages
            or self._releases
            or self._environments
            or self._min_level
        )

    def check(self, event: dict[str, Any]) -> str | None:
        """The reason code under which ``event`` is dropped, or None to keep it."""
        if not isinstance(event, dict):
            raise InvalidEventError(f"event must be a JSON object, got {type(event).__name__}")
        if not self.enabled:
            return None
        settings = self.settings
        if settings.localhost and is_localhost(event):
            return LOCALHOST
        if settings.browser_extensions and is_browser_extension(event):
            return BROWSER_EXTENSION
        if self._by_agent:
            ua = user_agent(event)
            if ua:
                if settings.web_crawlers and is_web_crawler(ua):
                    return WEB_CRAWLER
                if settings.legacy_browsers and is_legacy_browser(ua):
                    return LEGACY_BROWSER
        if self._messages is not None:
            match = self._messages.match
            if any(match(text) for text in messages(event)):
                return ERROR_MESSAGE
        if self._releases is not None:
            release = event.get("release")
            if isinstance(release, str) and release and self._releases.match(release):
                return RELEASE
        if self._environments:
            environment = event.get("environment")
            if not isinstance(environment, str) or environment.lower() not in self._environments:
                return ENVIRONMENT
        if self._min_level is not None:
            level = LEVELS.get(normalize_level(event.get("level")), LEVELS["error"])
            if level < self._min_level:
                return LEVEL
        return None
