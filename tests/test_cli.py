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


def test_commands_that_start_a_deployment_create_a_private_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    env = {"STACKSIFT_DATA_DIR": str(data)}
    for args in (["project", "list"], ["key", "list", "1"], ["dead-letter", "list"],
                 ["backup", str(tmp_path / "bk")]):
        out = run(*args, env=env)
        assert out.returncode == 1, (args, out.stderr)
        assert f"no data directory at {data}" in out.stderr  # the resolved path, one line
        assert not data.exists()
    created = run("project", "create", "shop", env=env)
    assert created.returncode == 0, created.stderr
    assert str(data) in created.stderr
    assert data.stat().st_mode & 0o777 == 0o700
    files = [p for p in data.iterdir() if p.is_file()]
    assert files and all(p.stat().st_mode & 0o777 == 0o600 for p in files), files
    assert run("dead-letter", "list", env=env).stdout == "no events in the dead-letter store\n"


def test_relative_data_dir_is_resolved_against_the_working_directory(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("STACKSIFT_")}
    out = subprocess.run([str(BIN), "setup"], env=base, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert str(tmp_path / "stacksift-data" / "stacksift.db") in out.stdout


def test_cli_takes_a_project_by_id_or_name(tmp_path: Path) -> None:
    env = {"STACKSIFT_DATA_DIR": str(tmp_path), "STACKSIFT_BASE_URL": "https://errors.example"}
    run("project", "create", "shop", env=env)
    shop = json.loads(run("project", "create", "blog", "--json", env=env).stdout)
    by_name = run("key", "create", "blog", "--label", "ci", env=env)
    assert by_name.returncode == 0, by_name.stderr
    assert f"@errors.example/{shop['id']}" in by_name.stdout
    listed = run("key", "list", str(shop["id"]), env=env).stdout
    assert "\tci" in listed
    key_id = listed.splitlines()[-1].split("\t")[0]
    assert run("key", "revoke", "blog", key_id, env=env).returncode == 0
    missing = run("key", "list", "nosuch", env=env)
    assert missing.returncode == 1 and "no project 'nosuch'" in missing.stderr
    run("project", "create", "shop", env=env)
    twice = run("key", "list", "shop", env=env)
    assert twice.returncode == 1 and "2 projects are named 'shop'" in twice.stderr


def test_serve_needs_base_url_on_a_wildcard_address(tmp_path: Path) -> None:
    out = run("serve", "--host", "0.0.0.0", "--port", "1",
              env={"STACKSIFT_DATA_DIR": str(tmp_path / "d")})
    assert out.returncode == 1
    assert "STACKSIFT_BASE_URL is required when listening on 0.0.0.0" in out.stderr
    assert len(out.stderr.splitlines()) == 1


def test_services_script_variables_are_not_settings(tmp_path: Path) -> None:
    env = {"STACKSIFT_DATA_DIR": str(tmp_path), "STACKSIFT_ES_PORT": "9201",
           "STACKSIFT_REDIS_PORT": "6380", "STACKSIFT_ES_HEAP": "2g",
           "STACKSIFT_ES_START_TIMEOUT": "5", "STACKSIFT_ES_USER": "es"}
    out = run("setup", env=env)
    assert out.returncode == 0, out.stderr


def test_dsns_name_the_address_serve_records(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data")
    env = {k: v for k, v in srv.env.items() if k != "STACKSIFT_BASE_URL"}
    srv.data_dir.mkdir()
    before = json.loads(run("project", "create", "early", "--json", env=env).stdout)
    assert before["dsn"].endswith("@127.0.0.1:8000/1")  # serve's defaults, before any serve
    proc = subprocess.Popen([str(BIN), "serve", "--port", str(srv.port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        srv.proc = proc
        srv.wait_for(lambda: (srv.data_dir / "base_url").exists(), 30)
        created = json.loads(run("project", "create", "shop", "--json", env=env).stdout)
        assert created["dsn"] == f"http://{created['ingest_key']}@127.0.0.1:{srv.port}/2"
        rotated = run("key", "create", "shop", env=env).stdout
        assert f"@127.0.0.1:{srv.port}/2" in rotated
    finally:
        srv.stop()


def test_backup_while_serving_restores_every_event(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data")
    srv.data_dir.mkdir()
    srv.start()
    try:
        p = srv.project()
        sent = [
            httpx.post(f"{srv.url}/api/{p.id}/envelope/", content=envelope(event(f"e{i}")),
                       headers=auth(p.ingest_key)).json()["id"]
            for i in range(20)
        ]
        srv.wait_events(p, 20)
        backup = tmp_path / "backup"
        out = srv.cli("backup", str(backup))
        assert "backup of" in out.stdout
        assert backup.stat().st_mode & 0o777 == 0o700
        refused = srv.cli("backup", str(backup), check=False)
        assert refused.returncode == 1 and "not an empty directory" in refused.stderr
    finally:
        srv.stop()
    restored = Server(backup)
    restored.start()
    try:
        stored = {e["event_id"] for e in restored.all_events(p)}
        assert stored == set(sent)
    finally:
        restored.stop()


def test_an_open_data_dir_is_made_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    assert run("setup", env={"STACKSIFT_DATA_DIR": str(data)}).returncode == 0
    assert data.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_distributed_mode_needs_base_url(tmp_path: Path, command: str) -> None:
    out = run(command, env={"STACKSIFT_DATA_DIR": str(tmp_path),
                            "STACKSIFT_REDIS_URL": "redis://127.0.0.1:9/0",
                            "STACKSIFT_ELASTICSEARCH_URL": "http://127.0.0.1:9"})
    assert out.returncode == 1
    assert "STACKSIFT_BASE_URL is required in distributed mode" in out.stderr


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
