"""Inbound filters: each drops what it should, keeps what it should, and names its reason."""

from __future__ import annotations

from typing import Any

import pytest
import sentry_sdk
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.filters import REASONS, InboundFilter, is_legacy_browser, is_web_crawler
from app.project_settings import FilterSettings, ProjectSettings
from app.scrubbing import InvalidEventError
from tests.capture import KeepEvents

Event = dict[str, Any]

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)


def check(event: Event, **options: Any) -> str | None:
    return InboundFilter(FilterSettings(**options)).check(event)


def with_ua(ua: str, as_pairs: bool = False) -> Event:
    headers: Any = [["User-Agent", ua]] if as_pairs else {"user-agent": ua}
    return {"request": {"url": "https://shop.example.com/", "headers": headers}}


def exception(ty: str, value: str, frames: list[dict[str, Any]] | None = None) -> Event:
    exc: dict[str, Any] = {"type": ty, "value": value}
    if frames is not None:
        exc["stacktrace"] = {"frames": frames}
    return {"exception": {"values": [exc]}}


# ----------------------------------------------------------------- SDK events

def sdk_event(request: dict[str, Any], **options: Any) -> Event:
    transport = KeepEvents()
    sentry_sdk.init(dsn="http://public@127.0.0.1:9/1", transport=transport, **options)
    try:
        with sentry_sdk.isolation_scope() as scope:
            scope.add_event_processor(lambda event, hint: {**event, "request": request})
            try:
                raise ConnectionResetError(104, "Connection reset by peer")
            except ConnectionResetError as exc:
                sentry_sdk.capture_exception(exc)
    finally:
        sentry_sdk.get_client().close()
    assert len(transport.events) == 1
    return transport.events[0]


def test_real_sdk_event_from_a_crawler() -> None:
    bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    event = sdk_event({"url": "https://shop.example.com/", "headers": {"User-Agent": bot}})
    assert check(event, web_crawlers=True) == "web_crawler"
    assert check(event, legacy_browsers=True, localhost=True, browser_extensions=True) is None
    assert check(event, error_messages=["ConnectionResetError: *reset by peer"]) == "error_message"
    assert check(event, error_messages=["*timeout*"]) is None


def test_real_sdk_event_environment_release_and_level() -> None:
    event = sdk_event({}, environment="staging", release="shop@2.0.0-rc.1")
    assert check(event, environments=["production"]) == "environment"
    assert check(event, environments=["production", "Staging"]) is None
    assert check(event, releases=["*-rc.*"]) == "release"
    assert check(event, min_level="fatal") == "level"
    assert check(event, min_level="error") is None


# ----------------------------------------------------------------- defaults
def test_nothing_is_dropped_by_default() -> None:
    events = [
        with_ua("Googlebot/2.1"),
        with_ua("Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 6.0; Trident/4.0)"),
        {"user": {"ip_address": "127.0.0.1"}, "level": "debug"},
        exception("Error", "Extension context invalidated."),
    ]
    flt = InboundFilter(FilterSettings())
    assert not flt.enabled
    assert [flt.check(e) for e in events] == [None] * len(events)


# ----------------------------------------------------------------- localhost
@pytest.mark.parametrize(
    "event",
    [
        {"user": {"ip_address": "127.0.0.1"}},
        {"user": {"ip_address": "::1"}},
        {"user": {"ip_address": "127.0.0.53"}},
        {"request": {"url": "http://localhost:8000/checkout"}},
        {"request": {"url": "http://shop.localhost/"}},
        {"request": {"url": "http://127.0.0.1/x"}},
        {"request": {"url": "http://[::1]:3000/"}},
        {"request": {"url": "file:///Users/ada/app/index.html"}},
        {"request": {"headers": {"Host": "localhost:3000"}}},
        {"request": {"headers": [["X-Forwarded-Host", "127.0.0.1:8080"]]}},
        {"request": {"url": "https://a.example/", "headers": {"X-Forwarded-For": "127.0.0.1"}}},
    ],
)
def test_localhost_is_dropped(event: Event) -> None:
    assert check(event, localhost=True) == "localhost"


@pytest.mark.parametrize(
    "event",
    [
        {"user": {"ip_address": "203.0.113.9"}},
        {"request": {"url": "http://localhost.com/"}},
        {"request": {"url": "http://mylocalhost/"}},
        {"request": {"url": "https://shop.example.com/", "headers": {"Host": "localhost"}}},
        {"request": {"headers": {"Host": "localhost.example.com:3000"}}},
        # The connection's IP is what a same-host reverse proxy gives every event.
        {"ingest": {"client_ip": "127.0.0.1"}, "request": {"url": "https://shop.example.com/"}},
        {"request": {"url": "http://[not-an-ip/"}},
    ],
)
def test_non_local_events_are_kept(event: Event) -> None:
    assert check(event, localhost=True) is None


# ----------------------------------------------------------- browser extensions
@pytest.mark.parametrize(
    "event",
    [
        exception(
            "TypeError",
            "x is undefined",
            [
                {"abs_path": "https://shop.example.com/app.js", "function": "main"},
                {"abs_path": "chrome-extension://abcdef/content.js", "function": "inject"},
                {"abs_path": "<anonymous>"},
            ],
        ),
        exception("Error", "y", [{"filename": "moz-extension://1234/script.js"}]),
        exception("Error", "z", [{"abs_path": "safari-web-extension://77/x.js"}]),
        exception("Error", "Extension context invalidated."),
        exception("TypeError", "can't access dead object"),
        exception("TypeError", "Cannot redefine property: ethereum"),
    ],
)
def test_browser_extension_errors_are_dropped(event: Event) -> None:
    assert check(event, browser_extensions=True) == "browser_extension"


def test_extension_frame_below_app_code_is_kept() -> None:
    event = exception(
        "TypeError",
        "x is undefined",
        [
            {"abs_path": "chrome-extension://abcdef/content.js"},
            {"abs_path": "https://shop.example.com/app.js"},
        ],
    )
    assert check(event, browser_extensions=True) is None
    assert check(exception("TypeError", "x is undefined"), browser_extensions=True) is None


# ----------------------------------------------------------------- crawlers
BOTS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)",
    "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)",
    "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Twitterbot/1.0",
    "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
    "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
    "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Mozilla/5.0 (compatible; HubSpot Crawler; web-crawlers@hubspot.com)",
]
HUMANS = [
    CHROME,
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/124.0.0.0 Safari/537.36",
    "Slackbot 1.0 (+https://api.slack.com/robots)",
    "Mozilla/5.0 (Linux; Android 9; CUBOT P30) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36",
    "sentry.python/2.75.0",
]


@pytest.mark.parametrize("ua", BOTS)
def test_crawlers_are_dropped(ua: str) -> None:
    assert is_web_crawler(ua)
    assert check(with_ua(ua), web_crawlers=True) == "web_crawler"
    assert check(with_ua(ua, as_pairs=True), web_crawlers=True) == "web_crawler"


@pytest.mark.parametrize("ua", HUMANS)
def test_people_and_test_browsers_are_kept(ua: str) -> None:
    assert not is_web_crawler(ua)
    assert check(with_ua(ua), web_crawlers=True) is None


def test_user_agent_falls_back_to_ingest_metadata() -> None:
    event = {"ingest": {"client_ip": "198.51.100.1", "user_agent": "Googlebot/2.1"}}
    assert check(event, web_crawlers=True) == "web_crawler"
    event["request"] = {"headers": {"User-Agent": CHROME}}
    assert check(event, web_crawlers=True) is None  # the browser's own header wins


# ----------------------------------------------------------------- legacy browsers
LEGACY = [
    "Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 6.0; Trident/4.0)",
    "Mozilla/5.0 (compatible; MSIE 9.0; Windows Phone OS 7.5; Trident/5.0; IEMobile/9.0)",
    "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.1; Trident/6.0)",
    "Mozilla/5.0 (Windows NT 6.3; Trident/7.0; rv:11.0) like Gecko",
    "Opera/9.80 (X11; Linux i686; Ubuntu/14.10) Presto/2.12.388 Version/12.16",
    "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/27.0.1453.12 Safari/537.36 OPR/14.0.1116.4",
    "Opera/9.80 (J2ME/MIDP; Opera Mini/7.0.32796/59.323; U; fr) Presto/2.12.423 Version/12.16",
    "Mozilla/5.0 (Linux; U; Android 2.3.5; en-us; HTC Vision Build/GRI40) AppleWebKit/533.1 "
    "(KHTML, like Gecko) Version/4.0 Mobile Safari/533.1",
    "Mozilla/5.0 (Windows; U; Windows NT 6.1; zh-HK) AppleWebKit/533.18.1 (KHTML, like Gecko) "
    "Version/5.0.2 Safari/533.18.5",
]
MODERN = [
    CHROME,
    "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/42.0 "
    "Safari/537.36 Edge/12.10136",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Windows NT 6.1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/28.0.1500.45 "
    "Safari/537.36 OPR/15.0.1147.61",
    "Opera/9.80 (J2ME/MIDP; Opera Mini/8.0.35158/36.2534; U; en) Presto/2.12.423 Version/12.16",
    "Mozilla/5.0 (Linux; U; Android 4.1.1; en-gb; Build/KLP) AppleWebKit/534.30 "
    "(KHTML, like Gecko) Version/4.0 Safari/534.30",
    "Mozilla/5.0 (Linux; Android 4.0.4; Galaxy Nexus Build/IMM76B) AppleWebKit/535.19 "
    "(KHTML, like Gecko) Chrome/18.0.1025.133 Mobile Safari/535.19",
    "Mozilla/5.0 (Macintosh; U; Intel Mac OS X 10.17.4; en-GB) AppleWebKit/605.1.5 "
    "(KHTML, like Gecko) Version/6.0 Safari/605.1.5",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
]


@pytest.mark.parametrize("ua", LEGACY)
def test_legacy_browsers_are_dropped(ua: str) -> None:
    assert is_legacy_browser(ua)
    assert check(with_ua(ua), legacy_browsers=True) == "legacy_browser"


@pytest.mark.parametrize("ua", MODERN)
def test_current_browsers_are_kept(ua: str) -> None:
    assert not is_legacy_browser(ua)
    assert check(with_ua(ua), legacy_browsers=True) is None


# ----------------------------------------------------------------- globs and lists
def test_error_message_globs() -> None:
    patterns = ["*ConnectionResetError*", "ChunkLoadError: Loading chunk *", "timeout"]
    drop = [
        exception("ConnectionResetError", "[Errno 104] Connection reset by peer"),
        {"logentry": {"formatted": "chunkloaderror: loading chunk 175 failed."}},
        exception("Timeout", ""),
        {"message": "TIMEOUT"},
        exception("ValueError", "timeout"),
    ]
    keep = [
        exception("ValueError", "Timeout waiting for lock"),
        {"logentry": {"formatted": "ChunkLoadError happened"}},
        {"message": "all good"},
        {},
    ]
    assert [check(e, error_messages=patterns) for e in drop] == ["error_message"] * len(drop)
    assert [check(e, error_messages=patterns) for e in keep] == [None] * len(keep)


def test_error_message_glob_brackets_are_character_classes() -> None:
    event = exception("Error", "code 7 failed")
    assert check(event, error_messages=["code [0-9] failed"]) == "error_message"


def test_release_globs() -> None:
    patterns = ["*-dev", "1.0.*"]
    assert check({"release": "app@2.0-dev"}, releases=patterns) == "release"
    assert check({"release": "1.0.3"}, releases=patterns) == "release"
    assert check({"release": "1.1.0"}, releases=patterns) is None
    assert check({}, releases=patterns) is None


def test_environment_allow_list() -> None:
    options = {"environments": ["production", "canary"]}
    assert check({"environment": "Production"}, **options) is None
    assert check({"environment": "canary"}, **options) is None
    assert check({"environment": "staging"}, **options) == "environment"
    assert check({}, **options) == "environment"
    assert check({"environment": "staging"}) is None


@pytest.mark.parametrize(
    ("level", "reason"),
    [
        ("debug", "level"),
        ("info", "level"),
        ("log", "level"),
        ("warning", None),
        ("warn", None),
        ("error", None),
        (None, None),
        ("fatal", None),
        ("critical", None),
    ],
)
def test_minimum_level(level: str | None, reason: str | None) -> None:
    event = {} if level is None else {"level": level}
    assert check(event, min_level="warning") == reason


def test_first_matching_filter_names_the_reason() -> None:
    event = {
        "user": {"ip_address": "127.0.0.1"},
        "release": "1.0-dev",
        "environment": "dev",
        "level": "debug",
    }
    options: dict[str, Any] = {
        "localhost": True,
        "releases": ["*-dev"],
        "environments": ["production"],
        "min_level": "error",
    }
    assert check(event, **options) == "localhost"
    options["localhost"] = False
    assert check(event, **options) == "release"
    assert set(REASONS) == {
        "localhost",
        "browser_extension",
        "web_crawler",
        "legacy_browser",
        "error_message",
        "release",
        "environment",
        "level",
    }


# ----------------------------------------------------------------- settings
def test_settings_are_validated() -> None:
    with pytest.raises(ValidationError, match="min_level"):
        FilterSettings(min_level="verbose")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="crawlers"):
        ProjectSettings.model_validate({"filters": {"crawlers": True}})
    with pytest.raises(ValidationError):
        FilterSettings(error_messages=[""])


def test_project_settings_build_the_filter_once() -> None:
    settings = ProjectSettings.model_validate({"filters": {"localhost": True}})
    assert settings.inbound_filter() is settings.inbound_filter()
    assert settings.inbound_filter().check({"user": {"ip_address": "::1"}}) == "localhost"


# ----------------------------------------------------------------- robustness
def test_non_object_event_is_refused() -> None:
    with pytest.raises(InvalidEventError):
        InboundFilter(FilterSettings(localhost=True)).check("event")  # type: ignore[arg-type]


ALL_ON = FilterSettings(
    localhost=True,
    browser_extensions=True,
    web_crawlers=True,
    legacy_browsers=True,
    error_messages=["*boom*"],
    releases=["*-dev"],
    environments=["production"],
    min_level="info",
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=20,
)
event_keys = st.sampled_from(
    ["request", "user", "exception", "logentry", "message", "release", "environment", "level"]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(event_keys, json_values))
def test_any_json_object_is_checked_without_error(event: Event) -> None:
    assert InboundFilter(ALL_ON).check(event) in (*REASONS, None)
