"""Produce realistic error envelopes with the real ``sentry-sdk``.

A capturing transport keeps ``envelope.serialize()`` instead of sending it, so
the bytes are exactly what a Python application would POST: same envelope
header, item header with ``length``, event layout, contexts and ``modules``.
"""

from __future__ import annotations

import random
from typing import Any

import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from . import shop

ENVIRONMENTS = ["production", "production", "production", "staging"]
RELEASES = ["shop@4.12.0", "shop@4.12.1", "shop@4.13.0"]
ROUTES = ["/checkout", "/cart/items", "/orders/{order_id}/invoice", "/webhooks/payments"]
BROWSERS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
]


# Typical SDK error events are 6-9 KB; the benchmark should push that size.
TARGET_MAX_BYTES = 9 * 1024


class CaptureTransport(Transport):
    """Keeps serialised envelopes in memory instead of sending them."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.envelopes: list[bytes] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        if any(item.type == "event" for item in envelope.items):
            self.envelopes.append(envelope.serialize())

    def flush(self, timeout: float, callback: Any = None) -> None:
        return None

    def kill(self) -> None:
        return None


def _add_breadcrumbs(rng: random.Random, cart: shop.Cart, count: int) -> None:
    for i in range(count):
        kind = rng.random()
        if kind < 0.4:
            sentry_sdk.add_breadcrumb(
                category="query",
                message=(
                    "SELECT id, sku, quantity, unit_price FROM cart_items "
                    f"WHERE cart_id = %s AND deleted_at IS NULL -- {cart.cart_id}"
                ),
                data={"db.system": "postgresql", "duration_ms": round(rng.uniform(0.3, 40), 2)},
            )
        elif kind < 0.7:
            sentry_sdk.add_breadcrumb(
                type="http",
                category="httplib",
                data={
                    "url": f"https://api.payments.example/v1/charges/{rng.randint(1, 10**9)}",
                    "method": rng.choice(["GET", "POST"]),
                    "status_code": rng.choice([200, 200, 201, 402, 504]),
                    "reason": "OK",
                },
            )
        else:
            sentry_sdk.add_breadcrumb(
                category="shop.checkout",
                level=rng.choice(["info", "warning"]),
                message=f"step {i}: validated {len(cart.items)} items for {cart.customer_email}",
            )


def _request_processor(rng: random.Random, cart: shop.Cart) -> Any:
    route = rng.choice(ROUTES)
    environment = rng.choice(ENVIRONMENTS)
    release = rng.choice(RELEASES)
    request = {
        "url": f"https://shop.example.com{route.replace('{order_id}', str(rng.randint(1, 99999)))}",
        "method": "POST",
        "query_string": f"session={rng.getrandbits(64):016x}&step=payment",
        "headers": {
            "Host": "shop.example.com",
            "User-Agent": rng.choice(BROWSERS),
            "Accept": "application/json",
            "Accept-Language": "en-GB,en;q=0.9,de;q=0.7",
            "Content-Type": "application/json",
            "X-Request-Id": f"{rng.getrandbits(128):032x}",
            "X-Forwarded-For": f"203.0.113.{rng.randint(1, 254)}",
        },
        "data": {"cart_id": cart.cart_id, "coupon": cart.coupon, "currency": cart.currency},
        "env": {"REMOTE_ADDR": f"10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}"},
    }

    def processor(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
        event["request"] = request
        event["transaction"] = route
        event["environment"] = environment
        event["release"] = release
        return event

    return processor


def _capture_one(rng: random.Random, failure_index: int, breadcrumbs: int) -> bool:
    """Raise one shop failure and capture it; False when the path did not fail."""
    cart = shop.make_cart(rng)
    with sentry_sdk.isolation_scope() as scope:
        scope.set_user({"id": str(rng.randint(1, 5000)), "email": cart.customer_email})
        scope.set_tag("region", rng.choice(["eu-west-1", "us-east-1"]))
        scope.set_tag("payment_provider", rng.choice(["stripe", "adyen"]))
        scope.set_tag("feature.new_checkout", rng.choice(["on", "off"]))
        scope.set_context("cart", {"id": cart.cart_id, "items": len(cart.items)})
        scope.add_event_processor(_request_processor(rng, cart))
        _add_breadcrumbs(rng, cart, breadcrumbs)
        try:
            shop.handle_request(failure_index, cart)
        except shop.DidNotFail:
            return False
        except Exception as exc:  # noqa: BLE001 - capturing any failure is the point
            sentry_sdk.capture_exception(exc)
    return True


def generate_envelopes(count: int, dsn: str, seed: int = 7) -> list[bytes]:
    """``count`` serialised error envelopes spread over the shop's failure paths."""
    rng = random.Random(seed)
    transport = CaptureTransport({"dsn": dsn})
    sentry_sdk.init(
        dsn=dsn,
        transport=transport,
        sample_rate=1.0,
        release=RELEASES[0],
        server_name="web-7f9c6d8b5-x2kqp",
        include_local_variables=True,
        max_breadcrumbs=100,
    )
    # The SDK's logging integration keeps recording the harness's own log lines as
    # breadcrumbs after an earlier call's client closed; the next target's events then
    # carried up to 100 of them (9.6 KB on average instead of 8.4 KB, up to 11.6 KB).
    for scope in (
        sentry_sdk.get_global_scope(),
        sentry_sdk.get_isolation_scope(),
        sentry_sdk.get_current_scope(),
    ):
        scope.clear_breadcrumbs()
    try:
        attempt = 0
        while len(transport.envelopes) < count:
            attempt += 1
            if attempt > count * 20:
                raise RuntimeError("shop failure paths keep succeeding; cannot build events")
            failure = rng.randrange(len(shop.FAILURES))
            breadcrumbs = rng.randint(3, 10)
            while _capture_one(rng, failure, breadcrumbs):
                # Deep or chained tracebacks are large on their own: trade
                # breadcrumbs for them to stay in the size band of typical events.
                if len(transport.envelopes[-1]) <= TARGET_MAX_BYTES or breadcrumbs == 0:
                    break
                transport.envelopes.pop()
                breadcrumbs = max(0, breadcrumbs - 3)
    finally:
        sentry_sdk.get_client().close()
    return transport.envelopes[:count]
