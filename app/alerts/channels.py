"""Rendering a notification and sending it: SMTP, Postmark (postmarker) and webhooks.

Every send returns a :class:`Sent` instead of raising, saying whether a failure
is worth retrying: a refused address or a 4xx will fail the same way again, a
connection error or a 5xx may not.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import orjson

from app.alerts.engine import Notification
from app.settings import check_url
from app.timefmt import iso

TIMEOUT = 10.0


@dataclass(slots=True)
class Message:
    subject: str
    text: str
    payload: dict[str, Any]  # the webhook body


@dataclass(slots=True)
class Sent:
    outcome: str  # sent | partial | failed
    error: str | None = None
    retry: bool = False


@dataclass(slots=True)
class SmtpConfig:
    host: str
    port: int
    user: str | None
    password: str | None
    tls: bool  # smtps:// (TLS from the first byte)
    starttls: bool


def parse_smtp_url(url: str) -> SmtpConfig:
    """``smtp://user:pass@host:port``, ``smtps://...``, ``smtp://...?starttls=1``; a URL
    that is not one is a ValueError (settings refuse it at start-up)."""
    parts = urlsplit(check_url(url, ("smtp", "smtps")))
    flag = parse_qs(parts.query).get("starttls", ["0"])[0].lower()
    tls = parts.scheme == "smtps"
    return SmtpConfig(
        host=parts.hostname or "",
        port=parts.port or (465 if tls else 25),
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
        starttls=flag in ("1", "true", "yes"),
    )


def plural(count: int | None, noun: str) -> str:
    """``1 event``, ``2 events``; an unknown count reads ``? events``."""
    if count is None:
        return f"? {noun}s"
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# Line breaks of any kind (CR, LF, NEL, U+2028/9...) and other control characters:
# in a header they would end it and start another one (header injection).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(text: str) -> str:
    """Event text made safe for a header or a one-line summary: controls become spaces."""
    return " ".join(_CONTROL.sub(" ", text).split())


def slack(text: str) -> str:
    """Event text as Slack mrkdwn shows it literally: ``<!channel>`` or ``<http://x|y>``
    in an exception value must not become a mention or a link (Slack's own escaping)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def issue_url(base_url: str, project_id: int, issue_id: int) -> str:
    """The web UI's issue page, where notifications link to."""
    return f"{base_url}/projects/{project_id}/issues/{issue_id}"


def issue_api_url(base_url: str, project_id: int, issue_id: int) -> str:
    return f"{base_url}/api/v1/projects/{project_id}/issues/{issue_id}"


def render(
    note: Notification, issue: dict[str, Any] | None, project: str, base_url: str
) -> Message:
    """The one text all channels share; ``issue`` is the stored issue when it could be read."""
    s = note.summary
    issue = issue or {}
    title = issue.get("title") or s.get("title") or f"issue {note.issue_id}"
    level = s.get("level") or issue.get("level") or "error"
    link = issue_url(base_url, note.project_id, note.issue_id)
    api_link = issue_api_url(base_url, note.project_id, note.issue_id)
    count = issue.get("count")
    why = {
        "new_issue": "New issue",
        "regression": "Regression",
        "every_event": "New event",
        "frequency": "Frequency threshold exceeded",
    }.get(note.trigger, note.trigger)
    since = iso(note.since) if note.since is not None else None
    if note.kind == "digest":
        why = (
            f"Digest: {plural(note.events, 'more matching event')} "
            f"since {since or 'the last notification'}"
        )
    subject = one_line(f"[{project}] {level.upper()}: {title}")[:250]
    frames = [
        "  "
        + " ".join(
            str(x)
            for x in (
                f.get("module") or f.get("filename") or "?",
                "in",
                f.get("function") or "?",
                f"line {f['lineno']}" if f.get("lineno") is not None else "",
            )
            if x
        )
        for f in s.get("frames") or []
    ]
    lines = [
        f"{why} (rule: {note.rule_name})",
        "",
        f"Title:       {one_line(title)}",
        f"Level:       {level}",
        f"Project:     {project}",
        f"Environment: {s.get('environment') or '-'}",
        f"Release:     {s.get('release') or '-'}",
        f"First seen:  {issue.get('first_seen') or '-'}",
        f"Last seen:   {issue.get('last_seen') or '-'}",
        f"Events:      {count or '-'}",
    ]
    if frames:
        lines += ["", "Top in-app frames:", *frames]
    lines += ["", f"Issue: {link}", f"API:   {api_link}"]
    text = "\n".join(lines)
    env, release = s.get("environment") or "-", s.get("release") or "-"
    payload = {
        "text": f"*{why}* in {slack(project)}: <{link}|{slack(one_line(title))}> "
        f"({slack(level)}, env {slack(env)}, release {slack(release)}, {plural(count, 'event')})",
        "kind": note.kind,
        "trigger": note.trigger,
        "rule": {"id": note.rule_id, "name": note.rule_name},
        "project": {"id": note.project_id, "name": project},
        "issue": {
            "id": note.issue_id,
            "title": title,
            "level": level,
            "status": issue.get("status"),
            "count": count,
            "first_seen": issue.get("first_seen"),
            "last_seen": issue.get("last_seen"),
            "url": link,
            "api_url": api_link,
        },
        "event": {
            "event_id": s.get("event_id"),
            "environment": s.get("environment"),
            "release": s.get("release"),
            "level": s.get("level"),
            "frames": s.get("frames") or [],
        },
        "digest": {"events": note.events, "since": since} if note.kind == "digest" else None,
    }
    return Message(subject, text, payload)


def signature(secret: str, body: bytes) -> str:
    """``X-Stacksift-Signature``: receivers recompute it over the raw body they got."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def target(channel: dict[str, Any]) -> str:
    """Where a channel sends, as shown in the attempts list (never the secret)."""
    if channel.get("type") == "webhook":
        return str(channel.get("url", ""))
    return ", ".join(channel.get("to") or [])


class Channels:
    def __init__(
        self,
        *,
        smtp_url: str | None,
        postmark_token: str | None,
        postmark_api_url: str,
        sender: str,
        base_url: str = "",
        timeout: float = TIMEOUT,
    ) -> None:
        self.smtp = parse_smtp_url(smtp_url) if smtp_url else None
        self.postmark_token = postmark_token
        # postmarker joins endpoints onto the root with urljoin: it must end with "/".
        self.postmark_api_url = postmark_api_url.rstrip("/") + "/"
        self.sender = sender
        # Message-IDs name the sender's domain, else the server's host.
        self.domain = (
            parseaddr(sender)[1].rpartition("@")[2] or urlsplit(base_url).hostname or "localhost"
        )
        self.timeout = timeout
        self._http = httpx.Client(timeout=timeout, follow_redirects=False)
        self._postmark: Any = None

    def close(self) -> None:
        self._http.close()

    def send(self, channel: dict[str, Any], msg: Message) -> Sent:
        kind = channel.get("type")
        try:
            if kind == "email":
                return self._smtp(channel["to"], msg)
            if kind == "postmark":
                return self._postmark_send(channel["to"], msg)
            if kind == "webhook":
                return self._webhook(channel["url"], channel.get("secret"), msg)
        except Exception as exc:  # a bug or an odd server must not kill the delivery thread
            return Sent("failed", f"{type(exc).__name__}: {exc}"[:1000], retry=True)
        return Sent("failed", f"unknown channel type {kind!r}")

    def mail_headers(self) -> dict[str, str]:
        """``Date`` and ``Message-ID`` of one sending: without them spam filters score the
        mail down and some clients show no date or thread it with unrelated mail."""
        return {
            "Date": formatdate(localtime=False, usegmt=True),
            "Message-ID": make_msgid(domain=self.domain),
        }

    # -- SMTP ----------------------------------------------------------------

    def _smtp(self, to: list[str], msg: Message) -> Sent:
        cfg = self.smtp
        if cfg is None:
            return Sent("failed", "e-mail channel, but STACKSIFT_SMTP_URL is not set")
        em = EmailMessage()
        em["Subject"] = msg.subject
        em["From"] = self.sender
        em["To"] = ", ".join(to)
        for name, value in self.mail_headers().items():
            em[name] = value
        em.set_content(msg.text)
        try:
            client: smtplib.SMTP
            if cfg.tls:
                client = smtplib.SMTP_SSL(
                    cfg.host, cfg.port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                client = smtplib.SMTP(cfg.host, cfg.port, timeout=self.timeout)
            with client:
                if cfg.starttls:
                    client.starttls(context=ssl.create_default_context())
                if cfg.user:
                    client.login(cfg.user, cfg.password or "")
                refused = client.send_message(em)
        except smtplib.SMTPRecipientsRefused as exc:
            return Sent("failed", _refused(exc.recipients), retry=_transient(exc.recipients))
        except smtplib.SMTPResponseException as exc:
            err = f"SMTP {exc.smtp_code}: {_text(exc.smtp_error)}"
            return Sent("failed", err, retry=exc.smtp_code < 500)
        except (OSError, smtplib.SMTPException) as exc:
            return Sent("failed", f"SMTP: {type(exc).__name__}: {exc}"[:1000], retry=True)
        if refused:
            return Sent("partial", _refused(refused))
        return Sent("sent")

    # -- Postmark ------------------------------------------------------------

    def _postmark_send(self, to: list[str], msg: Message) -> Sent:
        if not self.postmark_token:
            return Sent(
                "failed", "postmark channel, but STACKSIFT_POSTMARK_SERVER_TOKEN is not set"
            )
        import requests
        from postmarker.core import PostmarkClient
        from postmarker.exceptions import ClientError

        if self._postmark is None:
            self._postmark = PostmarkClient(
                server_token=self.postmark_token,
                root_api_url=self.postmark_api_url,
                timeout=self.timeout,
            )
        try:
            self._postmark.emails.send(
                From=self.sender,
                To=", ".join(to),
                Subject=msg.subject,
                TextBody=msg.text,
                Headers=self.mail_headers(),
                MessageStream="outbound",
            )
        except ClientError as exc:
            # Postmark answers 422 with an ErrorCode for bad addresses, inactive
            # recipients, bad tokens: retrying will not help.  Other statuses raise
            # requests' HTTPError below.
            return Sent("failed", f"Postmark: {exc}"[:1000])
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            return Sent("failed", f"Postmark: HTTP {status}", retry=status >= 500 or status == 429)
        except requests.RequestException as exc:
            return Sent("failed", f"Postmark: {type(exc).__name__}: {exc}"[:1000], retry=True)
        return Sent("sent")

    # -- webhooks ------------------------------------------------------------

    def _webhook(self, url: str, secret: str | None, msg: Message) -> Sent:
        body = orjson.dumps(msg.payload)
        headers = {"Content-Type": "application/json", "User-Agent": "stacksift-alerts/0.1"}
        if secret:
            headers["X-Stacksift-Signature"] = signature(secret, body)
        try:
            resp = self._http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return Sent("failed", f"webhook: {type(exc).__name__}: {exc}"[:1000], retry=True)
        if resp.status_code < 300:
            return Sent("sent")
        err = f"webhook answered HTTP {resp.status_code}: {resp.text[:200]}"
        return Sent("failed", err, retry=resp.status_code >= 500 or resp.status_code in (408, 429))


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _refused(recipients: dict[str, tuple[int, bytes]]) -> str:
    return "refused: " + "; ".join(
        f"{addr} ({code} {_text(reason)})" for addr, (code, reason) in recipients.items()
    )


def _transient(recipients: dict[str, tuple[int, bytes]]) -> bool:
    return all(code < 500 for code, _ in recipients.values())
