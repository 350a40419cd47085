"""The command line and start-up settings, run as a user would run them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from app.settings import load_settings
from tests.conftest import BIN, Server
from tests.test_ingest import auth, envelope, event


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("STACKSIFT_")}
    return subprocess.run([str(BIN), *args], env={**base, **env}, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("STACKSIFT_RETENTION_DAYS", "soon", "STACKSIFT_RETENTION_DAYS"),
        ("STACKSIFT_RATE_LIMIT", "lots", "STACKSIFT_RATE_LIMIT"),
        ("STACKSIFT_TRUSTED_PROXIES", "10.0.0.0/33", "STACKSIFT_TRUSTED_PROXIES"),
        ("STACKSIFT_BASE_URL", "example.com", "STACKSIFT_BASE_URL"),
        ("STACKSIFT_REDIS_URI", "redis://x", "unknown setting STACKSIFT_REDIS_URI"),
        ("STACKSIFT_ELASTICSEARCH_URL", "http://127.0.0.1:9", "STACKSIFT_REDIS_URL"),
        ("STACKSIFT_BASE_URL", "https://", "STACKSIFT_BASE_URL: Value error, names no host"),
        ("STACKSIFT_SMTP_URL", "http://x", "STACKSIFT_SMTP_URL: Value error, must start with"),
        ("STACKSIFT_SMTP_URL", "smtp://", "STACKSIFT_SMTP_URL: Value error, names no host"),
        ("STACKSIFT_SMTP_URL", "smtp://relay:port", "STACKSIFT_SMTP_URL: Value error, the port"),
        ("STACKSIFT_REDIS_URL", "http://127.0.0.1:6379", "STACKSIFT_REDIS_URL: Value error"),
        ("STACKSIFT_REDIS_URL", "unix://", "STACKSIFT_REDIS_URL: Value error, a unix://"),
        ("STACKSIFT_ELASTICSEARCH_URL", "127.0.0.1:9200", "STACKSIFT_ELASTICSEARCH_URL: Value"),
        ("STACKSIFT_POSTMARK_API_URL", "ftp://pm", "STACKSIFT_POSTMARK_API_URL: Value"),
        ("STACKSIFT_ALERT_FROM", "stacksift", "STACKSIFT_ALERT_FROM: Value error"),
    ],
)
def test_bad_setting_stops_start_up_naming_it(tmp_path: Path, name: str, value: str,
                                               expected: str) -> None:
    out = run("serve", "--port", "1", env={"STACKSIFT_DATA_DIR": str(tmp_path), name: value})
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr


def test_project_and_key_commands(tmp_path: Path) -> None:
    env = {"STACKSIFT_DATA_DIR": str(tmp_path), "STACKSIFT_BASE_URL": "https://errors.example"}
    created = json.loads(run("project", "create", "shop", "--json", env=env).stdout)
    assert set(created) == {"id", "name", "dsn", "ingest_key", "read_token"}
    assert created["dsn"] == f"https://{created['ingest_key']}@errors.example/{created['id']}"
    assert "shop" in run("project", "list", env=env).stdout
    keys = run("key", "list", str(created["id"]), env=env).stdout.splitlines()
    assert [line.split("\t")[1] for line in keys] == ["ingest", "read"]
    assert all(created["ingest_key"] not in line for line in keys)  # only hints are shown
    assert run("key", "revoke", str(created["id"]), "999", env=env).returncode == 1
    assert run("key", "list", "42", env=env).returncode == 1


def test_forwarded_for_is_believed_only_from_trusted_proxies(tmp_path: Path) -> None:
    results = {}
    for trusted in ("", "127.0.0.1/32"):
        srv = Server(tmp_path / f"data{len(results)}", extra_env={"STACKSIFT_TRUSTED_PROXIES":
                                                                      trusted})
        srv.data_dir.mkdir()
        srv.start()
        try:
            p = srv.project()
            ev = event("forwarded", user={"ip_address": "{{auto}}"})
            resp = httpx.post(f"{srv.url}/api/{p.id}/envelope/", content=envelope(ev),
                              headers={**auth(p.ingest_key),
                                       "X-Forwarded-For": "203.0.113.9, 10.1.2.3"})
            assert resp.status_code == 200
            stored = srv.wait_events(p, 1)[0]
            results[trusted] = (stored["ingest"]["client_ip"], stored["user"]["ip_address"])
        finally:
            srv.stop()
    assert results[""] == ("127.0.0.1", "127.0.0.1")
    # the trusted proxy's own hop list is walked from the right: 10.1.2.3 is the client
    assert results["127.0.0.1/32"] == ("10.1.2.3", "10.1.2.3")


def test_good_urls_of_every_kind_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks above must not refuse what the services take."""
    good = {
        "STACKSIFT_SMTP_URL": "smtps://user%40x:p%2Fw@mail.example.com:465?starttls=0",
        "STACKSIFT_REDIS_URL": "unix:///run/redis/redis.sock?db=2",
        "STACKSIFT_ELASTICSEARCH_URL": "https://elastic:pw@es.example:9243",
        "STACKSIFT_POSTMARK_API_URL": "http://127.0.0.1:8025/",
        "STACKSIFT_ALERT_FROM": "Stacksift <alerts@example.com>",
    }
    for name in [k for k in os.environ if k.startswith("STACKSIFT_")]:
        monkeypatch.delenv(name)  # this process's own, e.g. STACKSIFT_TEST_BACKEND
    for name, value in good.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.smtp_url == good["STACKSIFT_SMTP_URL"] and settings.distributed
    for url in ("redis://127.0.0.1:6379/0", "rediss://:pw@cache.example:6380"):
        monkeypatch.setenv("STACKSIFT_REDIS_URL", url)
        assert load_settings().redis_url == url
    for name in ("STACKSIFT_SMTP_URL", "STACKSIFT_REDIS_URL", "STACKSIFT_ELASTICSEARCH_URL"):
        monkeypatch.setenv(name, "")  # as `${VAR:-}` in a compose file sets it: unset
    settings = load_settings()
    assert (settings.smtp_url, settings.redis_url, settings.elasticsearch_url) == (None,) * 3
