"""Send secrets through the official Python ``sentry-sdk``, past the SDK's own scrubber.

The server must not rely on SDKs to scrub: old SDKs, other languages and
``send_default_pii=True`` all deliver secrets. So this sender turns on PII and
local variables and gives the SDK an empty denylist; an event processor adds
request data the way a web framework integration would. ``before_send`` checks
that every secret is still in the event as it leaves the SDK, so a test that
finds no secret on the server cannot pass because the SDK removed them.

Usage: python python_secrets.py <dsn> --password P --card C --token T --db-password D

Prints one JSON line: {"event_ids": [...], "status_codes": {"200": n},
"sdk_kept_secrets": true}. Exit code 0 when both events got a 2xx, else 4.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import sentry_sdk
from python_send import CountingTransport
from sentry_sdk.scrubber import EventScrubber


class PaymentError(Exception):
    """Application-defined exception carrying the card number in its message."""


def spaced(card: str) -> str:
    return " ".join(card[i : i + 4] for i in range(0, len(card), 4))


def charge(card: str, db_password: str, secret: str) -> None:
    password = secret  # noqa: F841 - a local variable named ``password`` is the point
    connection = f"postgres://user:{db_password}@db/x"
    sentry_sdk.add_breadcrumb(category="db", message=f"connecting to {connection}")
    raise PaymentError(f"card {spaced(card)} declined while using {connection}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dsn")
    for name in ("--password", "--card", "--token", "--db-password"):
        parser.add_argument(name, required=True)
    args = parser.parse_args(argv)
    if not (args.card.isdigit() and 13 <= len(args.card) <= 19):
        parser.error(f"--card must be 13-19 digits, got {args.card!r}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    secrets = [args.password, args.card, spaced(args.card), args.token, args.db_password]
    missing: list[str] = []

    def add_request(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
        event["request"] = {
            "method": "POST",
            "url": "https://shop.example/checkout",
            "headers": {
                "Authorization": f"Bearer {args.token}",
                "User-Agent": "checkout-service/1.0",
                "X-Request-Id": "req-42",
            },
            "data": {"note": f"retry with postgres://user:{args.db_password}@db/x"},
        }
        return event

    def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
        text = json.dumps(event, default=str)
        if "exception" in event:
            missing.extend(s for s in secrets if s not in text)
        return event

    sentry_sdk.init(
        dsn=args.dsn,
        transport=CountingTransport,
        send_default_pii=True,
        include_local_variables=True,
        event_scrubber=EventScrubber(denylist=[], pii_denylist=[], send_default_pii=True),
        before_send=before_send,
        default_integrations=True,
    )
    sentry_sdk.get_isolation_scope().add_event_processor(add_request)
    event_ids = []
    try:
        charge(args.card, args.db_password, args.password)
    except PaymentError as exc:
        event_ids.append(sentry_sdk.capture_exception(exc))
    event_ids.append(
        sentry_sdk.capture_message(f"refund to card {args.card} failed", level="error")
    )
    sentry_sdk.flush(10)
    statuses = dict(CountingTransport.status_codes)
    accepted = sum(n for code, n in statuses.items() if code.isdigit() and 200 <= int(code) < 300)
    result = {
        "event_ids": event_ids,
        "status_codes": statuses,
        "sdk_kept_secrets": not missing,
        "missing_in_sdk": missing,
    }
    print(json.dumps(result), flush=True)
    return 0 if accepted == len(event_ids) and None not in event_ids else 4


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
