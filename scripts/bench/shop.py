"""A small fake web shop whose failures feed the ingest benchmark.

The benchmark must push what production SDKs push: real tracebacks several
frames deep with local variables, chained exceptions, and a spread of error
kinds and messages. Raising from real code and letting the real ``sentry-sdk``
serialise it gives exactly that, at the real size (6-9 KB per event).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from decimal import Decimal


class CheckoutError(Exception):
    """Raised when an order cannot be completed; usually wraps a lower-level cause."""


class PaymentDeclined(Exception):
    def __init__(self, code: str, amount: Decimal) -> None:
        super().__init__(f"payment declined with code {code} for amount {amount}")
        self.code = code
        self.amount = amount


class InventoryError(LookupError):
    pass


class UpstreamTimeout(TimeoutError):
    pass


@dataclass
class LineItem:
    sku: str
    quantity: int
    unit_price: Decimal


@dataclass
class Cart:
    cart_id: str
    customer_email: str
    currency: str
    items: list[LineItem] = field(default_factory=list)
    coupon: str | None = None

    def total(self) -> Decimal:
        return sum((item.unit_price * item.quantity for item in self.items), Decimal(0))


STOCK = {"sku-100": 4, "sku-200": 0, "sku-300": 12, "sku-400": 1}
COUPONS = {"WELCOME10": Decimal("0.10"), "SPRING25": Decimal("0.25")}


def make_cart(rng: random.Random) -> Cart:
    items = [
        LineItem(
            sku=rng.choice(list(STOCK) + ["sku-999"]),
            quantity=rng.randint(1, 5),
            unit_price=Decimal(rng.randint(199, 25999)) / 100,
        )
        for _ in range(rng.randint(1, 4))
    ]
    return Cart(
        cart_id=f"c-{rng.randint(10_000, 99_999)}",
        customer_email=f"user{rng.randint(1, 5000)}@example.com",
        currency=rng.choice(["EUR", "USD", "GBP"]),
        items=items,
        coupon=rng.choice([None, "BOGUS", "SUMMER19"]),
    )


# --- failure paths -----------------------------------------------------------


def reserve_stock(cart: Cart) -> None:
    for item in cart.items:
        available = STOCK[item.sku]  # KeyError for unknown SKUs
        if available < item.quantity:
            raise InventoryError(
                f"only {available} left of {item.sku}, cart {cart.cart_id} wants {item.quantity}"
            )


def apply_coupon(cart: Cart) -> Decimal:
    rate = COUPONS[cart.coupon or ""]
    return cart.total() * (1 - rate)


def average_item_price(cart: Cart) -> Decimal:
    paid_items = [item for item in cart.items if item.unit_price > 1000]
    return cart.total() / len(paid_items)  # ZeroDivision when nothing qualifies


def charge_card(cart: Cart, attempt: int) -> None:
    amount = cart.total()
    gateway_response = {"status": "declined", "code": "51", "attempt": attempt, "amount": amount}
    raise PaymentDeclined(gateway_response["code"], amount)


def place_order(cart: Cart) -> None:
    try:
        charge_card(cart, attempt=1)
    except PaymentDeclined as exc:
        raise CheckoutError(f"checkout of cart {cart.cart_id} failed") from exc


def call_shipping_api(cart: Cart, timeout_s: float) -> None:
    endpoint = "https://shipping.internal.example/v2/quotes"
    payload = {"cart": cart.cart_id, "weight_g": 250 * len(cart.items)}
    try:
        raise OSError(110, "Connection timed out")
    except OSError as exc:
        raise UpstreamTimeout(f"{endpoint} did not answer within {timeout_s}s ({payload})") from exc


def parse_webhook(raw: str) -> dict[str, object]:
    return json.loads(raw)


def render_invoice(cart: Cart) -> str:
    template = "Invoice {number} for {customer}: {total}"
    return template.format(customer=cart.customer_email, total=cart.total())


def convert_currency(cart: Cart, rates: dict[str, float]) -> float:
    return float(cart.total()) * rates[cart.currency] + None  # type: ignore[operator]


def _bad_webhook(_: Cart) -> None:
    parse_webhook('{"event": "charge.succeeded", "data": {"id": "ch_1", amount: 10}}')


FAILURES = [
    reserve_stock,
    apply_coupon,
    average_item_price,
    place_order,
    lambda cart: call_shipping_api(cart, 2.5),
    _bad_webhook,
    render_invoice,
    lambda cart: convert_currency(cart, {"EUR": 1.0, "USD": 0.92, "GBP": 1.17}),
]


class DidNotFail(Exception):
    """The chosen failure path happened to succeed for this cart; pick another cart."""


def handle_request(failure_index: int, cart: Cart) -> None:
    """The 'view' that fails: one more frame with request-scoped locals."""
    request_id = f"req-{cart.cart_id}"
    handler = FAILURES[failure_index % len(FAILURES)]
    handler(cart)
    raise DidNotFail(f"{request_id}: failure path {failure_index} did not raise")
