"""Runs every example of the user guide (docs/guide/*.md) against a real server.

The convention, which the guide's authors follow and this test enforces:

* Each page runs against a fresh ``stacksift serve`` (the ``Server`` helper) in a working
  directory of its own, like a reader who follows that page in a new terminal after the
  quick start.  Its blocks run in the order they appear, in that directory.
* A fenced block's info string is ``LANG [ATTR ...]``.  By LANG:

  - ``sh``: run with ``bash -euo pipefail``; it must exit 0.  Shell variables a block
    assigns (UPPER_CASE names) are there for the page's later blocks, as in one terminal.
  - ``python``: run with the test venv's python; it must exit 0.
  - ``js``: run with ``node`` (``@sentry/node`` from tests/sdk/node); it must exit 0.
  - ``json file=NAME``: written to NAME in the working directory, for later blocks.

  Every block of the environment below sees the variables the guide introduces
  (:data:`GUIDE_VARIABLES`) with real values, the server's ``STACKSIFT_*`` settings (so
  the CLI talks to the same data directory) and ``stacksift``/``python3`` on ``PATH``.
  Before each block, the test waits until the server has processed what it accepted
  (``/readyz`` reports ``queue_depth`` 0), as a reader would pause.
* ATTRs:

  - ``no-run``: deliberately not run (a server's start command, a systemd unit, nginx or
    Docker configuration, sample output); counted and listed, never silently.
  - ``env``: the ``export NAME=value`` lines a reader adapts; not run: the test supplies
    those names itself and fails when the block names one it does not supply.
  - ``background``: started (sh or python) and left running; stopped when the page ends.
  - ``id=NAME``: after the block, ``CHECKS[NAME]`` verifies its effect (an e-mail
    arrived, a webhook was verified, the output says what the text says).  A check that
    fails is reported with the others when the page ends; a block that fails stops it.

  Any other fenced block fails the test: an example is run or explicitly marked.
* ``<!-- query-table -->`` before a Markdown table of ``| `query` | finds |`` rows makes
  the test run each query against ``GET /events?q=`` of the page's project and compare
  the ``sample`` tags of what it finds with the names listed (``nothing``: none).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from tests.conftest import ADMIN_TOKEN, BIN, Server, free_port, stop_group

ROOT = Path(__file__).parents[1]
GUIDE = ROOT / "docs" / "guide"
NODE_DIR = ROOT / "tests" / "sdk" / "node"
BLOCK_TIMEOUT = 120

# Names the guide introduces for the reader to set (its ``env`` blocks); the test sets
# all of them for every block.
GUIDE_VARIABLES = {
    "SERVER_URL",
    "ADMIN_TOKEN",
    "PROJECT_ID",
    "DSN",
    "INGEST_KEY",
    "READ_TOKEN",
    "RECEIVER_PORT",
    "WEBHOOK_URL",
}
RUNNABLE = {"sh", "python", "js"}
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
TABLE_MARK = "<!-- query-table -->"


# -- the guide, parsed --------------------------------------------------------------


@dataclass
class Block:
    page: str
    line: int
    lang: str
    flags: set[str]
    attrs: dict[str, str]
    text: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def kind(self) -> str:
        """run | background | env | file | no-run, or 'unmarked' (a defect)."""
        if "no-run" in self.flags:
            return "no-run"
        if "env" in self.flags and self.lang == "sh":
            return "env"
        if self.lang == "json" and "file" in self.attrs:
            return "file"
        if self.lang in RUNNABLE:
            return "background" if "background" in self.flags else "run"
        return "unmarked"


@dataclass
class QueryTable:
    page: str
    line: int
    rows: list[tuple[str, set[str]]]


def pages() -> list[Path]:
    return sorted(p for p in GUIDE.glob("*.md") if p.name != "README.md")


def parse_page(path: Path) -> list[Block | QueryTable]:
    text = path.read_text()
    items: list[tuple[int, Block | QueryTable]] = []
    for m in FENCE.finditer(text):
        info = m.group(1).split()
        lang = info[0] if info else ""
        flags = {a for a in info[1:] if "=" not in a}
        attrs = dict(a.split("=", 1) for a in info[1:] if "=" in a)
        line = text.count("\n", 0, m.start()) + 1
        items.append((m.start(), Block(path.name, line, lang, flags, attrs, m.group(2))))
    for m in re.finditer(re.escape(TABLE_MARK), text):
        line = text.count("\n", 0, m.start()) + 1
        items.append((m.start(), QueryTable(path.name, line, table_rows(text[m.end() :]))))
    return [item for _, item in sorted(items, key=lambda pair: pair[0])]


def table_rows(text: str) -> list[tuple[str, set[str]]]:
    """Rows of the Markdown table at the start of ``text``: (query, expected names)."""
    rows: list[tuple[str, set[str]]] = []
    for line in text.lstrip("\n").splitlines():
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        query = re.fullmatch(r"`(.+)`", cells[0])
        if query is None:
            continue  # the header and the separator
        names = cells[1].replace("`", "")
        found = set() if names == "nothing" else {n.strip() for n in names.split(",")}
        rows.append((query.group(1), found))
    return rows


# -- a page's world: server, SMTP, working directory ----------------------------------


@dataclass
class SmtpSink:
    messages: list[Message] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted"


@dataclass
class Page:
    server: Server
    smtp: SmtpSink
    work: Path
    variables: dict[str, str]
    background: dict[str, tuple[subprocess.Popen[bytes], Path]] = field(default_factory=dict)
    check_failures: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = dict(self.server.env)
        env.update(self.variables)
        env["PATH"] = f"{BIN.parent}{os.pathsep}{env.get('PATH', '')}"
        env["NODE_PATH"] = str(NODE_DIR / "node_modules")
        return env

    def read(self, path: str, **params: Any) -> Any:
        resp = self.server.get(path, self.variables["READ_TOKEN"], **params)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def events(self, q: str = "") -> list[dict[str, Any]]:
        pid = self.variables["PROJECT_ID"]
        return self.read(f"/api/v1/projects/{pid}/events", q=q, limit=500)["data"]

    def wait_processed(self) -> None:
        def drained() -> bool:
            resp = httpx.get(self.server.url + "/readyz", timeout=10)
            return resp.status_code == 200 and resp.json()["queue_depth"] == 0

        self.server.wait_for(drained, timeout=60)

    def output_of(self, name: str) -> str:
        return self.background[name][1].read_text()


@pytest.fixture
def page_world(tmp_path: Path) -> Iterator[Page]:
    smtp = SmtpSink()
    controller = Controller(smtp, hostname="127.0.0.1", port=free_port())
    controller.start()
    server = Server(
        tmp_path / "data",
        extra_env={
            "STACKSIFT_SMTP_URL": f"smtp://127.0.0.1:{controller.port}",
            "STACKSIFT_ALERT_FROM": "stacksift@example.com",
        },
    )
    server.data_dir.mkdir()
    server.start()
    work = tmp_path / "work"
    work.mkdir()
    try:
        log = (server.data_dir / "server.log").read_text()
        dsn = re.search(r"DSN \(point any Sentry SDK here\): (\S+)", log)
        token = re.search(r"read token \(Authorization: Bearer \.\.\.\): (\S+)", log)
        assert dsn and token, f"serve did not print a DSN and a read token:\n{log}"
        parts = urllib.parse.urlsplit(dsn.group(1))
        receiver_port = free_port()
        variables = {
            "SERVER_URL": server.url,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "DSN": dsn.group(1),
            "INGEST_KEY": parts.username or "",
            "PROJECT_ID": parts.path.strip("/"),
            "READ_TOKEN": token.group(1),
            "RECEIVER_PORT": str(receiver_port),
            "WEBHOOK_URL": f"http://127.0.0.1:{receiver_port}/stacksift",
        }
        assert set(variables) == GUIDE_VARIABLES
        page = Page(server, smtp, work, variables)
        yield page
    finally:
        for proc, _ in page.background.values() if "page" in locals() else ():
            stop_group(proc, timeout=30)
        server.stop()
        controller.stop()


# -- running blocks -----------------------------------------------------------------

STATE = ".guide-shell-state"
# Keeps the UPPER_CASE, single-line, plain variables a block assigned for the next one.
SAVE_STATE = r"""
for __v in $(compgen -v); do
  case "$__v" in [A-Z]*) ;; *) continue ;; esac
  [[ "$(declare -p "$__v" 2>/dev/null)" =~ ^declare\ -[-x]+\  ]] || continue
  [[ "${!__v}" == *$'\n'* ]] && continue
  declare -p "$__v"
done > "$GUIDE_STATE"
"""


def command(page: Page, block: Block) -> list[str]:
    suffix = {"sh": ".sh", "python": ".py", "js": ".js"}[block.lang]
    script = page.work / f".block-{block.line}{suffix}"
    if block.lang == "sh":
        body = f'[ -f "$GUIDE_STATE" ] && source "$GUIDE_STATE"\n{block.text}\n'
        if block.kind == "run":
            body += SAVE_STATE
        script.write_text(f"set -euo pipefail\n{body}")
        return ["bash", str(script)]
    script.write_text(block.text)
    if block.lang == "python":
        return [sys.executable, str(script)]
    return ["node", str(script)]


def run_block(page: Page, block: Block) -> str:
    env = {**page.env, "GUIDE_STATE": str(page.work / STATE)}
    page.wait_processed()
    if block.kind == "background":
        name = block.attrs.get("id", f"line-{block.line}")
        out = page.work / f".background-{block.line}.log"
        proc = subprocess.Popen(
            command(page, block), cwd=page.work, env=env, stdout=out.open("wb"),
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        page.background[name] = (proc, out)
        return ""
    result = subprocess.run(
        command(page, block), cwd=page.work, env=env, capture_output=True, text=True,
        timeout=BLOCK_TIMEOUT,
    )
    background = "".join(
        f"--- background {name} ---\n{log.read_text()}"
        for name, (_, log) in page.background.items()
    )
    assert result.returncode == 0, (
        f"{block.where}: the {block.lang} example exited {result.returncode}\n"
        f"--- example ---\n{block.text}--- stdout ---\n{result.stdout}"
        f"--- stderr ---\n{result.stderr}{background}"
    )
    return result.stdout


def check_env_block(block: Block) -> None:
    names = re.findall(r"^export ([A-Za-z_][A-Za-z0-9_]*)=", block.text, re.M)
    assert names, f"{block.where}: an env block without export lines"
    unknown = set(names) - GUIDE_VARIABLES
    assert not unknown, f"{block.where}: the test does not supply {sorted(unknown)}"


def check_queries(page: Page, table: QueryTable) -> None:
    assert table.rows, f"{table.page}:{table.line}: a query table without rows"
    wrong = []
    for query, expected in table.rows:
        found = {e.get("tags", {}).get("sample") for e in page.events(query)}
        if found != expected:
            wrong.append(f"  {query!r}: the guide says {sorted(expected)}, found {sorted(found)}")
    assert not wrong, f"{table.page}:{table.line}: queries find other events:\n" + "\n".join(wrong)


def run_page(page: Page, path: Path) -> None:
    for item in parse_page(path):
        if isinstance(item, QueryTable):
            page.wait_processed()
            check_queries(page, item)
            continue
        kind = item.kind
        assert kind != "unmarked", f"{item.where}: ```{item.lang} is neither run nor marked"
        if kind == "env":
            check_env_block(item)
        elif kind == "file":
            (page.work / item.attrs["file"]).write_text(item.text)
        out = run_block(page, item) if kind in ("run", "background") else item.text
        if "id" in item.attrs:
            try:
                CHECKS[item.attrs["id"]](page, out)
            except AssertionError as exc:
                page.check_failures.append(f"{item.where} (id={item.attrs['id']}): {exc}")
    for name, (proc, log) in page.background.items():
        assert proc.poll() is None, f"background {name} exited early:\n{log.read_text()}"
    assert not page.check_failures, "\n".join(page.check_failures)


# -- checks of effects (id=NAME) ------------------------------------------------------

Check = Callable[[Page, str], None]
CHECKS: dict[str, Check] = {}


def check(name: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS[name] = fn
        return fn

    return register


def wait_events(page: Page, q: str, count: int = 1) -> list[dict[str, Any]]:
    return page.server.wait_for(lambda: len(evs := page.events(q)) >= count and evs, 30)


@check("first-start")
def _first_start(page: Page, sample: str) -> None:
    """The sample of what the first start prints matches what serve printed."""
    log = (page.server.data_dir / "server.log").read_text()
    for line in sample.strip().splitlines():
        pattern = re.escape(line.strip())
        pattern = re.sub(r"<[a-z ]+>", r"\\S+", pattern.replace(r"\<", "<").replace(r"\>", ">"))
        pattern = pattern.replace("8000", str(page.server.port))
        pattern = pattern.replace(re.escape("/srv/stacksift/data"), ".+")
        assert re.search(pattern, log), f"serve printed no line like {line!r}:\n{log}"


@check("python-sdk")
def _python_sdk(page: Page, out: str) -> None:
    [event] = wait_events(page, "exception.type:ZeroDivisionError")
    assert event["environment"] == "production" and event["release"] == "shop@1.4.2"
    assert event["sdk"]["name"].startswith("sentry.python")


@check("node-sdk")
def _node_sdk(page: Page, out: str) -> None:
    [event] = wait_events(page, "exception.type:SyntaxError")
    assert event["sdk"]["name"].startswith("sentry.javascript.node")


@check("curl-event")
def _curl_event(page: Page, out: str) -> None:
    assert re.fullmatch(r'\{"id":"[0-9a-f]{32}"\}\s*', out), out
    [event] = wait_events(page, '"Hello from curl"')
    assert event["level"] == "warning"


@check("read-issues")
def _read_issues(page: Page, out: str) -> None:
    for title in ("ZeroDivisionError: division by zero", "Hello from curl"):
        assert f'"title":"{title}"' in out, out


@check("project-create")
def _project_create(page: Page, out: str) -> None:
    assert re.search(r'"id": 2, "name": "checkout-api", "dsn": "http://\w+@', out), out


@check("bad-query")
def _bad_query(page: Page, out: str) -> None:
    assert '"code":"invalid_query"' in out and "position 8" in out, out


@check("issue-search")
def _issue_search(page: Page, out: str) -> None:
    assert '"title":"PaymentError: card declined"' in out and '"count":1' in out, out


@check("email-alert")
def _email_alert(page: Page, out: str) -> None:
    mails = page.server.wait_for(lambda: page.smtp.messages, 30)
    [mail] = [m for m in mails if "oncall@example.com" in m["To"]]
    assert mail["Subject"] == "[default] ERROR: TimeoutError: inventory service timed out"
    body = mail.get_payload()
    assert "New issue (rule: New issues in production)" in body, body
    assert f"{page.server.url}/projects/1/issues/" in body, body


@check("receiver")
def _receiver(page: Page, out: str) -> None:
    """The receiver runs, and refuses a request without a valid signature."""
    url = page.variables["WEBHOOK_URL"]

    def answers() -> int:
        try:
            return httpx.post(url, content=b"{}", timeout=5).status_code
        except httpx.TransportError:
            return 0

    assert page.server.wait_for(answers, 30) == 401


def received(page: Page, count: int) -> list[str]:
    def lines() -> list[str]:
        found = re.findall(r"^verified: .*$", page.output_of("receiver"), re.M)
        return found if len(found) >= count else []

    return page.server.wait_for(lines, 30)


@check("webhook-alert")
def _webhook_alert(page: Page, out: str) -> None:
    got = received(page, 2)
    assert len(got) == 2, got  # throttle 0s: both events, nothing else
    base = page.server.url
    for line in got:
        assert "*New event* in default" in line, line
        assert f"<{base}/projects/1/issues/" in line, line


@check("frequency-alert")
def _frequency_alert(page: Page, out: str) -> None:
    got = received(page, 3)
    assert len(got) == 3 and "*Frequency threshold exceeded* in default" in got[2], got


@check("notifications")
def _notifications(page: Page, out: str) -> None:
    assert out.count('"outcome":"sent"') >= 4, out


@check("rules-without-secret")
def _rules_without_secret(page: Page, out: str) -> None:
    assert '"name":"Payment errors to the webhook"' in out, out
    assert "change-me" not in out, "the API returned a webhook secret"


@check("rule-disabled")
def _rule_disabled(page: Page, out: str) -> None:
    assert '"enabled":false' in out, out


@check("signature")
def _signature(page: Page, out: str) -> None:
    body = b'{"text": "hello"}'
    expected = "sha256=" + hmac.new(b"change-me", body, hashlib.sha256).hexdigest()
    assert out.strip() == expected, out


@check("scrubbed")
def _scrubbed(page: Page, out: str) -> None:
    [event] = wait_events(page, '"Refund failed"')
    extra = event["extra"]
    assert extra["card"] == "[Filtered]" and extra["refund_code"] == "[Filtered]", extra
    assert extra["order"] == "A-1001" and extra["session_id"] == "s-77", extra
    assert "[Filtered]" in event["user"]["email"], event["user"]


@check("outcomes")
def _outcomes(page: Page, out: str) -> None:
    assert '"filtered:environment":1' in out, out


@check("rate-limited")
def _rate_limited(page: Page, out: str) -> None:
    assert "HTTP/1.1 429" in out and "retry-after:" in out.lower(), out


@check("key-rotated")
def _key_rotated(page: Page, out: str) -> None:
    assert re.search(r"key 1 keeps working for 3600s, then is refused", out), out


@check("key-revoked")
def _key_revoked(page: Page, out: str) -> None:
    assert re.search(r'"code":"(unauthorized|forbidden)"', out), out


@check("setup")
def _setup(page: Page, out: str) -> None:
    assert out.startswith("SQLite schema ready in "), out


@check("backup")
def _backup(page: Page, out: str) -> None:
    backups = [p for p in page.work.iterdir() if p.name.startswith("stacksift-backup-")]
    assert len(backups) == 1 and (backups[0] / "stacksift.db").is_file(), backups


@check("restored")
def _restored(page: Page, out: str) -> None:
    assert '"title":"Backed up"' in out, out


@check("tls")
def _tls(page: Page, out: str) -> None:
    assert out.strip() == '{"status":"ok"}', out


# -- the tests ----------------------------------------------------------------------


def all_blocks() -> list[Block]:
    return [b for p in pages() for b in parse_page(p) if isinstance(b, Block)]


def test_every_example_is_run_or_marked() -> None:
    """Static: every block is run or marked, every id has a check and every check an id,
    and the index links every page."""
    blocks = all_blocks()
    assert blocks, "docs/guide has no examples"
    unmarked = [f"{b.where} ```{b.lang}" for b in blocks if b.kind == "unmarked"]
    assert not unmarked, "blocks neither run nor marked no-run:\n" + "\n".join(unmarked)
    ids = [b.attrs["id"] for b in blocks if "id" in b.attrs]
    assert sorted(set(ids)) == sorted(ids), "an id is used twice"
    assert set(ids) == set(CHECKS), (
        f"ids without a check: {sorted(set(ids) - set(CHECKS))}; "
        f"checks without an example: {sorted(set(CHECKS) - set(ids))}"
    )
    index = (GUIDE / "README.md").read_text()
    for path in pages():
        assert f"({path.name})" in index, f"docs/guide/README.md does not link {path.name}"
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", path.read_text()):
            assert (path.parent / target).resolve().exists(), f"{path.name} links {target}"
    counts: dict[str, int] = {}
    for b in blocks:
        counts[b.kind] = counts.get(b.kind, 0) + 1
    no_run = [f"  {b.where} ```{b.lang}" for b in blocks if b.kind == "no-run"]
    print(f"guide examples by kind: {counts}\nno-run:\n" + "\n".join(no_run))
    assert counts.get("run", 0) > counts.get("no-run", 0), counts


def ensure_node_sdk() -> None:
    if not (NODE_DIR / "node_modules" / "@sentry" / "node").exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "install_node_sdk.sh")], check=True,
                       timeout=300)


@pytest.mark.parametrize("path", pages(), ids=lambda p: p.stem)
def test_page_examples(path: Path, page_world: Page) -> None:
    if any(b.lang == "js" and b.kind == "run" for b in parse_page(path)
           if isinstance(b, Block)):
        ensure_node_sdk()
    run_page(page_world, path)


def test_convention_runs_shell_state_and_refuses_failures(page_world: Page) -> None:
    """The runner itself: variables carry over, and a failing example fails."""
    first = Block("t.md", 1, "sh", set(), {}, "GREETING=hello\n")
    second = Block("t.md", 2, "sh", set(), {}, 'echo "$GREETING $PROJECT_ID"\n')
    run_block(page_world, first)
    assert run_block(page_world, second).strip() == f"hello {page_world.variables['PROJECT_ID']}"
    failing = Block("t.md", 3, "sh", set(), {}, "false\necho never\n")
    with pytest.raises(AssertionError, match="exited 1"):
        run_block(page_world, failing)
    assert table_rows("| q | finds |\n|---|---|\n| `level:error` | a, b |\n| `x` | nothing |\n") \
        == [("level:error", {"a", "b"}), ("x", set())]
