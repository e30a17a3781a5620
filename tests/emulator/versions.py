"""Objects in the shape of the API version a request asks for (`Stripe-Version`).

The store keeps every object in the 2024-06-20 shape; a request for 2026-10-28.endive gets
a rendered copy with the changes Stripe made between the two versions to the fields of the
tap's streams (the Acacia/Basil/Clover/Dahlia/Endive changelogs, checked against the
object shapes of stripe-python 16.1.0 vendored in `vendor/stripe-python/`):

- subscriptions: `current_period_start`/`_end` move to each subscription item; the
  single `discount` is gone (`discounts` stays);
- invoices: `subscription`, `subscription_details` and `subscription_proration_date` move
  under `parent.subscription_details`; `quote` under `parent.quote_details`; `charge`,
  `payment_intent`, `paid`, `paid_out_of_band`, `application_fee_amount`,
  `transfer_data` and `discount` are gone (payments are `invoice.payments`);
  `total_tax_amounts`/`tax` become `total_taxes`;
- invoice line items: `price` moves to `pricing.price_details`; `invoice_item`,
  `subscription_item`, `proration`, `proration_details` move under `parent`; `type`,
  `tax_rates`, `amount_excluding_tax`, `unit_amount_excluding_tax` are gone;
  `tax_amounts` become `taxes`;
- invoice items: `price`, `unit_amount(_decimal)` move to `pricing`; `subscription` and
  `subscription_item` under `parent.subscription_details`;
- credit notes and their lines: `tax_amounts` become `taxes`/`total_taxes`; `refund`
  becomes the list `refunds`; lines lose the `*_excluding_tax` amounts;
- charges and payment intents lose `invoice`; promotion codes' `coupon` moves to
  `promotion.coupon`; checkout sessions' `shipping_details` moves to
  `collected_information.shipping_details`; plans and prices lose `aggregate_usage`;
  subscription schedules' phases lose `coupon` (`discounts` stays).
"""

from __future__ import annotations

import json
import typing as t

from tests.emulator.generate import API_VERSION

ENDIVE = "2026-10-28.endive"
SHAPED_VERSIONS = (API_VERSION, ENDIVE)


def copy(obj: dict) -> dict:
    return t.cast("dict", json.loads(json.dumps(obj)))


def _drop(obj: dict, *names: str) -> None:
    for name in names:
        obj.pop(name, None)


def _taxes(amounts: list[dict] | None) -> list[dict]:
    """`tax_amounts` (2024) -> `taxes` (2026)."""
    return [
        {
            "amount": a.get("amount", 0),
            "tax_behavior": "inclusive" if a.get("inclusive") else "exclusive",
            "tax_rate_details": {"tax_rate": a.get("tax_rate")},
            "taxability_reason": a.get("taxability_reason") or "standard_rated",
            "taxable_amount": a.get("taxable_amount"),
            "type": "tax_rate_details",
        }
        for a in amounts or []
    ]


def _price_id(value: t.Any) -> str | None:
    return value.get("id") if isinstance(value, dict) else value


def _product_of(value: t.Any) -> str | None:
    return value.get("product") if isinstance(value, dict) else None


def _pricing(price: t.Any, unit_amount_decimal: str | None) -> dict | None:
    """A line's or item's `price` (2024) -> `pricing` (2026)."""
    if not price:
        return None
    return {
        "price_details": {"price": _price_id(price), "product": _product_of(price)},
        "type": "price_details",
        "unit_amount_decimal": unit_amount_decimal,
    }


def _price(price: t.Any) -> t.Any:
    if isinstance(price, dict):
        price = dict(price)
        if isinstance(price.get("recurring"), dict):
            price["recurring"] = {
                k: v for k, v in price["recurring"].items() if k != "aggregate_usage"
            }
    return price


def _subscription_item(item: dict, subscription: dict | None) -> dict:
    if "price" in item:
        item["price"] = _price(item["price"])
    if isinstance(item.get("plan"), dict):
        _drop(item["plan"], "aggregate_usage")
    if subscription is not None:
        item["current_period_start"] = subscription.get("current_period_start")
        item["current_period_end"] = subscription.get("current_period_end")
    return item


def _subscription(sub: dict) -> dict:
    items = sub.get("items")
    if isinstance(items, dict):
        items["data"] = [_subscription_item(i, sub) for i in items.get("data") or []]
    plan = sub.get("plan")
    if isinstance(plan, dict):
        _drop(plan, "aggregate_usage")
    _drop(sub, "current_period_start", "current_period_end", "discount")
    return sub


def _invoice_line(line: dict) -> dict:
    price = line.pop("price", None)
    decimal = price.get("unit_amount_decimal") if isinstance(price, dict) else None
    line["pricing"] = _pricing(price, decimal)
    details = {
        "invoice_item": line.get("invoice_item"),
        "proration": bool(line.get("proration")),
        "proration_details": line.get("proration_details"),
        "subscription": line.get("subscription"),
    }
    if line.get("subscription_item"):
        parent = {"type": "subscription_item_details", "invoice_item_details": None,
                  "subscription_item_details": {
                      **details, "subscription_item": line["subscription_item"]}}
    elif line.get("invoice_item"):
        parent = {"type": "invoice_item_details", "subscription_item_details": None,
                  "invoice_item_details": details}
    else:
        parent = None
    line["parent"] = parent
    line["taxes"] = _taxes(line.get("tax_amounts"))
    line["pretax_credit_amounts"] = []
    line["subtotal"] = line.get("amount")
    _drop(line, "amount_excluding_tax", "invoice_item", "proration", "proration_details",
          "subscription_item", "tax_amounts", "tax_rates", "type",
          "unit_amount_excluding_tax", "plan", "discount")
    return line


def _invoice(inv: dict) -> dict:
    parent = None
    if inv.get("subscription"):
        details = inv.get("subscription_details") or {}
        parent = {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {
                "metadata": details.get("metadata"),
                "subscription": inv["subscription"],
                "subscription_proration_date": inv.get("subscription_proration_date"),
            },
        }
    elif inv.get("quote"):
        parent = {"type": "quote_details", "subscription_details": None,
                  "quote_details": {"quote": inv["quote"]}}
    inv["parent"] = parent
    inv["total_taxes"] = _taxes(inv.get("total_tax_amounts"))
    inv["total_pretax_credit_amounts"] = []
    inv["amount_overpaid"] = 0
    inv["amount_paid_off_stripe"] = 0
    lines = inv.get("lines")
    if isinstance(lines, dict):
        lines["data"] = [_invoice_line(line) for line in lines.get("data") or []]
    _drop(inv, "application_fee_amount", "charge", "discount", "paid", "paid_out_of_band",
          "payment_intent", "quote", "subscription", "subscription_details",
          "subscription_proration_date", "tax", "total_tax_amounts", "transfer_data")
    return inv


def _invoice_item(item: dict) -> dict:
    item["pricing"] = _pricing(item.pop("price", None), item.get("unit_amount_decimal"))
    item["parent"] = {
        "type": "subscription_details",
        "subscription_details": {
            "subscription": item["subscription"],
            "subscription_item": item.get("subscription_item"),
        },
    } if item.get("subscription") else None
    item["proration_details"] = {"discount_amounts": []}
    item["net_amount"] = item.get("amount")
    _drop(item, "plan", "subscription", "subscription_item", "unit_amount",
          "unit_amount_decimal", "discount")
    return item


def _credit_note_line(line: dict) -> dict:
    line["taxes"] = _taxes(line.get("tax_amounts"))
    line["pretax_credit_amounts"] = []
    _drop(line, "amount_excluding_tax", "tax_amounts", "unit_amount_excluding_tax")
    return line


def _credit_note(note: dict) -> dict:
    refund = note.get("refund")
    note["refunds"] = (
        [{"amount_refunded": note.get("amount", 0), "refund": refund, "type": "refund"}]
        if refund else []
    )
    note["total_taxes"] = _taxes(note.get("tax_amounts"))
    note["pretax_credit_amounts"] = []
    note["post_payment_amount"] = note.get("amount", 0)
    note["pre_payment_amount"] = 0
    lines = note.get("lines")
    if isinstance(lines, dict):
        lines["data"] = [_credit_note_line(line) for line in lines.get("data") or []]
    _drop(note, "refund", "tax_amounts", "amount_excluding_tax")
    return note


def _promotion_code(code: dict) -> dict:
    coupon = code.pop("coupon", None)
    code["promotion"] = {"type": "coupon", "coupon": _price_id(coupon)}
    return code


def _checkout_session(session: dict) -> dict:
    shipping = session.pop("shipping_details", None)
    session["collected_information"] = (
        {"business_name": None, "individual_name": None, "shipping_details": shipping}
        if shipping else None
    )
    return session


def _without(*names: str) -> t.Callable[[dict], dict]:
    def render(obj: dict) -> dict:
        _drop(obj, *names)
        return obj
    return render


def _plan(plan: dict) -> dict:
    _drop(plan, "aggregate_usage")
    return plan


def _subscription_schedule(schedule: dict) -> dict:
    for phase in schedule.get("phases") or []:
        _drop(phase, "coupon")
    return schedule


ENDIVE_RENDERERS: dict[str, t.Callable[[dict], dict]] = {
    "subscriptions": _subscription,
    "invoices": _invoice,
    "invoice_line_items": _invoice_line,
    "invoice_items": _invoice_item,
    "credit_notes": _credit_note,
    "credit_note_line_items": _credit_note_line,
    "promotion_codes": _promotion_code,
    "checkout_sessions": _checkout_session,
    "charges": _without("invoice"),
    "payment_intents": _without("invoice"),
    "plans": _plan,
    "subscription_schedules": _subscription_schedule,
    "prices": _price,
}


def render(stream: str, obj: dict, version: str, parent: dict | None = None) -> dict:
    """`obj` (2024-06-20 shape) as `version` renders it: the same object, or a new one.

    `parent`: a subscription item's subscription, whose current period items carry in 2026.
    """
    if version != ENDIVE:
        return obj
    if stream == "subscription_items":
        return _subscription_item(copy(obj), parent)
    renderer = ENDIVE_RENDERERS.get(stream)
    return renderer(copy(obj)) if renderer else obj
