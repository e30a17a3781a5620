"""The resources beyond the core four, for the store and the server (API version 2024-06-20).

`KINDS` says, per stream, what the HTTP side needs (paths, list filters, the permission a
restricted key needs) and which events Stripe sends for it; `Builder` makes Stripe-shaped
objects from the `Generator`'s seeded RNG (field names and types checked against the
2024-06-20 OpenAPI description, as in `generate.py`); `BillingStore`, a base class of
`Store`, generates the initial objects and applies creates, updates and deletes with the
events Stripe sends for them.

Events, as Stripe sends them:
- creation: `<prefix>.created`; `payment_method.attached` for a payment method; none for
  checkout sessions, balance transactions and connected accounts;
- a plain update (`Store.update`): `<prefix>.updated` where Stripe has that event. Payment
  intents, setup intents, checkout sessions and invoice items have none: their changes come
  with events named for what happened (`payment_intent.succeeded`,
  `checkout.session.completed`), which `Store.update(..., event_type=...)` sends;
- deletes (`Store.delete`): products, prices, plans, coupons and invoice items send
  `<prefix>.deleted`; a payment method is detached (`payment_method.detached`, `customer`
  becomes null: it leaves the customer's list); a connected account goes without an event.

Data: products, prices and plans are the `Generator`'s catalogue (the prices subscription
items embed) plus two tiered prices. Prices' and plans' `tiers` are kept aside: Stripe sends
them only when asked (`expand[]=tiers`), never in events. Derived from the core objects: a
balance transaction per charge that has one (and per refund, dispute, payout, transfer and
application fee), a refund per charge created refunded, a payment method per customer's
default payment method, disputes on a few charges, credit notes on a few finalized
invoices. The rest (invoice items, intents, payouts, ...) are `count` objects each, spread
over the two years before the clock like the core objects.
"""

from __future__ import annotations

import copy
import random
import typing as t
from bisect import bisect_right
from dataclasses import dataclass, field

from tests.emulator.generate import (
    CARD_BRANDS,
    DAY,
    HOUR,
    Generator,
    embedded_list,
    nth_period_start,
)

if t.TYPE_CHECKING:
    from tests.emulator.store import Collection

#: Query parameters every list takes (also in `server.COMMON`).
_COMMON = {"limit": "int", "starting_after": "str", "ending_before": "str", "expand": "array",
           "created": "range"}


@dataclass(frozen=True)
class Kind:
    """One stream beyond the core four."""

    name: str
    object: str
    #: List path; `{id}` is a parent's id (`/v1/customers/{id}/payment_methods`).
    path: str
    #: The restricted-key permission Stripe names in a 403.
    permission: str
    #: Event type prefix (`checkout.session`), None when the object has no events.
    event_prefix: str | None
    #: Event of a creation, of a plain update, of a delete (None: Stripe sends none).
    created: str | None = None
    updated: str | None = None
    deleted: str | None = None
    #: Whether `Store.delete` may delete one (Stripe can).
    deletable: bool = False
    #: List filters beyond `limit`, paging and `expand` (`created` unless `no_created`).
    params: dict[str, str] = field(default_factory=dict)
    no_created: bool = False
    #: `GET <retrieve>/<id>` when not `GET <path>/<id>`.
    retrieve: str | None = None
    #: Fields Stripe returns only when expanded (price `tiers`).
    includable: tuple[str, ...] = ()
    #: For child lists: the parent stream (its objects embed the first 10).
    parent: str | None = None
    #: Written once, never changed (balance transactions).
    immutable: bool = False
    #: The time field lists are sorted and filtered by (`invoiceitem` has `date`).
    time_field: str = "created"

    @property
    def list_params(self) -> dict[str, str]:
        common = {k: v for k, v in _COMMON.items() if not (self.no_created and k == "created")}
        return {**common, **self.params}

    @property
    def retrieve_path(self) -> str:
        return self.retrieve or self.path


def _kind(name: str, obj: str, path: str, permission: str, prefix: str | None, *,
          created: bool = True, updated: bool = True, **extra: t.Any) -> Kind:
    return Kind(
        name, obj, path, f"rak_{permission}_read", prefix,
        created=f"{prefix}.created" if prefix and created else None,
        updated=f"{prefix}.updated" if prefix and updated else None,
        **extra,
    )


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        _kind("invoice_items", "invoiceitem", "/v1/invoiceitems", "invoice", "invoiceitem",
              updated=False, deleted="invoiceitem.deleted", deletable=True,
              params={"customer": "str", "invoice": "str"}, time_field="date"),
        _kind("payment_intents", "payment_intent", "/v1/payment_intents", "payment_intent",
              "payment_intent", updated=False, params={"customer": "str"}),
        _kind("setup_intents", "setup_intent", "/v1/setup_intents", "setup_intent",
              "setup_intent", updated=False,
              params={"customer": "str", "payment_method": "str"}),
        Kind("payment_methods", "payment_method", "/v1/customers/{id}/payment_methods",
             "rak_payment_method_read", "payment_method", created="payment_method.attached",
             updated="payment_method.updated", deleted="payment_method.detached",
             deletable=True, params={"customer": "str", "type": "str"}, no_created=True,
             retrieve="/v1/payment_methods"),
        _kind("refunds", "refund", "/v1/refunds", "refund", "refund",
              params={"charge": "str", "payment_intent": "str"}),
        _kind("disputes", "dispute", "/v1/disputes", "dispute", "charge.dispute",
              params={"charge": "str", "payment_intent": "str"}),
        _kind("balance_transactions", "balance_transaction", "/v1/balance_transactions",
              "balance", None, immutable=True,
              params={"currency": "str", "source": "str", "type": "str"}),
        _kind("payouts", "payout", "/v1/payouts", "payout", "payout",
              params={"arrival_date": "range", "destination": "str", "status": "str"}),
        _kind("transfers", "transfer", "/v1/transfers", "transfer", "transfer",
              params={"destination": "str", "transfer_group": "str"}),
        _kind("application_fees", "application_fee", "/v1/application_fees",
              "application_fee", "application_fee", updated=False,
              params={"charge": "str"}),
        _kind("products", "product", "/v1/products", "product", "product",
              deleted="product.deleted", deletable=True, params={"active": "str"}),
        _kind("prices", "price", "/v1/prices", "plan", "price", deleted="price.deleted",
              deletable=True, includable=("tiers",),
              params={"active": "str", "currency": "str", "product": "str", "type": "str"}),
        _kind("plans", "plan", "/v1/plans", "plan", "plan", deleted="plan.deleted",
              deletable=True, includable=("tiers",),
              params={"active": "str", "product": "str"}),
        _kind("coupons", "coupon", "/v1/coupons", "coupon", "coupon",
              deleted="coupon.deleted", deletable=True),
        _kind("promotion_codes", "promotion_code", "/v1/promotion_codes", "promotion_code",
              "promotion_code",
              params={"active": "str", "code": "str", "coupon": "str", "customer": "str"}),
        _kind("credit_notes", "credit_note", "/v1/credit_notes", "credit_note", "credit_note",
              params={"customer": "str", "invoice": "str"}),
        Kind("credit_note_line_items", "credit_note_line_item",
             "/v1/credit_notes/{id}/lines", "rak_credit_note_read", None, parent="credit_notes",
             no_created=True),
        _kind("tax_rates", "tax_rate", "/v1/tax_rates", "tax_rate", "tax_rate",
              params={"active": "str", "inclusive": "str"}),
        _kind("checkout_sessions", "checkout.session", "/v1/checkout/sessions",
              "checkout_session", "checkout.session", created=False, updated=False,
              params={"customer": "str", "payment_intent": "str", "status": "str",
                      "subscription": "str"}),
        _kind("subscription_schedules", "subscription_schedule", "/v1/subscription_schedules",
              "subscription", "subscription_schedule", params={"customer": "str"}),
        _kind("accounts", "account", "/v1/accounts", "connected_account", "account",
              created=False, deletable=True),
    )
}
#: Streams held in their own collection (not children).
TOP_LEVEL = tuple(name for name, kind in KINDS.items() if kind.parent is None)
#: Streams whose initial number of objects is a count (the others are derived).
COUNTED = ("invoice_items", "payment_intents", "setup_intents", "payouts", "transfers",
           "application_fees", "coupons", "promotion_codes", "tax_rates", "checkout_sessions",
           "subscription_schedules", "accounts", "disputes", "credit_notes")


def default_counts(objects: int) -> dict[str, int]:
    """Objects per counted stream for `Store(objects=n)`: a few, whatever n."""
    return dict.fromkeys(COUNTED, max(1, min(objects, 12)))


CHECKOUT_STATUSES = (("complete", 70), ("expired", 22), ("open", 8))
INTENT_STATUSES = (("succeeded", 60), ("canceled", 15), ("requires_payment_method", 15),
                   ("requires_action", 6), ("processing", 4))
SETUP_STATUSES = (("succeeded", 70), ("requires_payment_method", 15), ("canceled", 10),
                  ("requires_action", 5))
DISPUTE_REASONS = ("fraudulent", "product_not_received", "duplicate", "general",
                   "subscription_canceled", "product_unacceptable")
DISPUTE_STATUSES = ("needs_response", "under_review", "won", "lost")
TAX_RATES = (("VAT", "DE", None, 19.0, "vat", False), ("VAT", "FR", None, 20.0, "vat", True),
             ("Sales Tax", "US", "CA", 7.25, "sales_tax", False),
             ("Sales Tax", "US", "NY", 8.875, "sales_tax", False),
             ("GST", "CA", None, 5.0, "gst", False), ("VAT", "GB", None, 20.0, "vat", True))
COUPON_NAMES = ("Launch", "Black Friday", "Partner", "Loyalty", "Spring", "Student")
EVIDENCE_FIELDS = (
    "access_activity_log", "billing_address", "cancellation_policy",
    "cancellation_policy_disclosure", "cancellation_rebuttal", "customer_communication",
    "customer_email_address", "customer_name", "customer_purchase_ip", "customer_signature",
    "duplicate_charge_documentation", "duplicate_charge_explanation", "duplicate_charge_id",
    "product_description", "receipt", "refund_policy", "refund_policy_disclosure",
    "refund_refusal_explanation", "service_date", "service_documentation", "shipping_address",
    "shipping_carrier", "shipping_date", "shipping_documentation", "shipping_tracking_number",
    "uncategorized_file", "uncategorized_text",
)
REQUIREMENTS_NONE = {"alternatives": [], "current_deadline": None, "currently_due": [],
                     "disabled_reason": None, "errors": [], "eventually_due": [],
                     "past_due": [], "pending_verification": []}


def _pick(rng: random.Random, pairs: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([p[0] for p in pairs], [p[1] for p in pairs])[0]


class Builder:
    """Stripe objects of the streams in `KINDS`, from the `Generator`'s RNG and ids."""

    def __init__(self, gen: Generator) -> None:
        self.gen = gen

    @property
    def rng(self) -> random.Random:
        return self.gen.rng

    def _amount(self) -> int:
        rng = self.rng
        return rng.choice((500, 1000, 1999, 2500, 4900, 9900)) if rng.random() < 0.5 \
            else rng.randint(50, 50_000) * 10

    # -- catalogue --------------------------------------------------------------------------

    def product(self, product_id: str, name: str, created: int, **overrides: t.Any) -> dict:
        obj = {
            "id": product_id,
            "object": "product",
            "active": True,
            "created": created,
            "default_price": None,
            "description": None,
            "images": [],
            "livemode": False,
            "marketing_features": [],
            "metadata": {},
            "name": name,
            "package_dimensions": None,
            "shippable": None,
            "statement_descriptor": None,
            "tax_code": None,
            "unit_label": None,
            "updated": created,
            "url": None,
        }
        obj.update(overrides)
        return obj

    def tiered_price(self, product: str, currency: str, created: int, mode: str) -> tuple[
            dict, list[dict]]:
        price = self.gen._price(product, currency, 0, "month", created)
        price.update({"billing_scheme": "tiered", "tiers_mode": mode, "unit_amount": None,
                      "unit_amount_decimal": None})
        tiers = [
            {"flat_amount": None, "flat_amount_decimal": None, "unit_amount": 50,
             "unit_amount_decimal": "50", "up_to": 1000},
            {"flat_amount": 2000, "flat_amount_decimal": "2000", "unit_amount": 25,
             "unit_amount_decimal": "25", "up_to": 10000},
            {"flat_amount": None, "flat_amount_decimal": None, "unit_amount": 10,
             "unit_amount_decimal": "10", "up_to": None},
        ]
        return price, tiers

    @staticmethod
    def plan(price: dict) -> dict:
        """The plan Stripe shows for a recurring price (same id)."""
        recurring = price["recurring"]
        return {
            "id": price["id"],
            "object": "plan",
            "active": price["active"],
            "aggregate_usage": None,
            "amount": price["unit_amount"],
            "amount_decimal": price["unit_amount_decimal"],
            "billing_scheme": price["billing_scheme"],
            "created": price["created"],
            "currency": price["currency"],
            "interval": recurring["interval"],
            "interval_count": recurring["interval_count"],
            "livemode": False,
            "metadata": {},
            "meter": None,
            "nickname": price["nickname"],
            "product": price["product"],
            "tiers_mode": price["tiers_mode"],
            "transform_usage": None,
            "trial_period_days": None,
            "usage_type": recurring["usage_type"],
        }

    def coupon(self, created: int, **overrides: t.Any) -> dict:
        rng = self.rng
        duration = rng.choice(("once", "forever", "repeating"))
        percent = rng.random() < 0.7
        percent_off = rng.choice((10.0, 15.0, 20.0, 25.0, 50.0, 12.5)) if percent else None
        obj = {
            "id": self.gen.rand(8).upper(),
            "object": "coupon",
            "amount_off": None if percent else rng.choice((500, 1000, 2500)),
            "created": created,
            "currency": None if percent else "usd",
            "duration": duration,
            "duration_in_months": rng.choice((3, 6, 12)) if duration == "repeating" else None,
            "livemode": False,
            "max_redemptions": rng.choice((None, None, 100, 500)),
            "metadata": {},
            "name": rng.choice(COUPON_NAMES),
            "percent_off": percent_off,
            "redeem_by": None,
            "times_redeemed": rng.randint(0, 40),
            "valid": True,
        }
        obj.update(overrides)
        return obj

    def promotion_code(self, created: int, coupon: dict, **overrides: t.Any) -> dict:
        rng = self.rng
        obj = {
            "id": self.gen.long_id("promo"),
            "object": "promotion_code",
            "active": rng.random() < 0.85,
            "code": f"{coupon['name'].split()[0].upper()}{rng.randint(10, 99)}",
            "coupon": copy.deepcopy(coupon),
            "created": created,
            "customer": None,
            "expires_at": None if rng.random() < 0.7 else created + 90 * DAY,
            "livemode": False,
            "max_redemptions": None,
            "metadata": {},
            "restrictions": {
                "first_time_transaction": rng.random() < 0.3,
                "minimum_amount": None,
                "minimum_amount_currency": None,
            },
            "times_redeemed": rng.randint(0, 20),
        }
        obj.update(overrides)
        return obj

    def tax_rate(self, created: int, index: int, **overrides: t.Any) -> dict:
        name, country, state, percentage, kind, inclusive = TAX_RATES[index % len(TAX_RATES)]
        obj = {
            "id": self.gen.long_id("txr"),
            "object": "tax_rate",
            "active": self.rng.random() < 0.9,
            "country": country,
            "created": created,
            "description": f"{name} {state or country}",
            "display_name": name,
            "effective_percentage": percentage,
            "inclusive": inclusive,
            "jurisdiction": state or country,
            "jurisdiction_level": "state" if state else "country",
            "livemode": False,
            "metadata": {},
            "percentage": percentage,
            "state": state,
            "tax_type": kind,
        }
        obj.update(overrides)
        return obj

    # -- money movement -----------------------------------------------------------------------

    def balance_transaction(self, created: int, source: str | None, amount: int, currency: str,
                            kind: str, *, category: str, fee: int = 0,
                            txn_id: str | None = None, description: str | None = None) -> dict:
        available_on = created + 2 * DAY - created % DAY
        return {
            "id": txn_id or self.gen.long_id("txn", "3"),
            "object": "balance_transaction",
            "amount": amount,
            "available_on": available_on,
            "created": created,
            "currency": currency,
            "description": description,
            "exchange_rate": None,
            "fee": fee,
            "fee_details": [
                {"amount": fee, "application": None, "currency": currency,
                 "description": "Stripe processing fees", "type": "stripe_fee"}
            ] if fee else [],
            "net": amount - fee,
            "reporting_category": category,
            "source": source,
            "status": "available" if available_on <= self.gen.clock else "pending",
            "type": kind,
        }

    def charge_transaction(self, charge: dict) -> dict:
        amount = charge["amount"]
        return self.balance_transaction(
            charge["created"], charge["id"], amount, charge["currency"], "charge",
            category="charge",
            fee=round(amount * 0.029) + 30, txn_id=charge["balance_transaction"],
            description=charge["description"],
        )

    def refund(self, created: int, charge: dict, amount: int, **overrides: t.Any) -> tuple[
            dict, dict]:
        """A refund of a charge, and its balance transaction."""
        refund_id = self.gen.long_id("re", "3")
        txn = self.balance_transaction(created, refund_id, -amount, charge["currency"],
                                       "refund", category="refund")
        obj = {
            "id": refund_id,
            "object": "refund",
            "amount": amount,
            "balance_transaction": txn["id"],
            "charge": charge["id"],
            "created": created,
            "currency": charge["currency"],
            "destination_details": {
                "card": {"reference": self.gen.rand(24), "reference_status": "available",
                         "reference_type": "acquirer_reference_number", "type": "refund"},
                "type": "card",
            },
            "metadata": {},
            "payment_intent": charge["payment_intent"],
            "reason": self.rng.choice((None, "requested_by_customer", "duplicate")),
            "receipt_number": None,
            "source_transfer_reversal": None,
            "status": "succeeded",
            "transfer_reversal": None,
        }
        obj.update(overrides)
        return obj, txn

    def dispute(self, created: int, charge: dict, **overrides: t.Any) -> tuple[dict, dict]:
        """A dispute of a charge, and the balance transaction that withdrew its amount."""
        rng = self.rng
        dispute_id = self.gen.long_id("dp")
        txn = self.balance_transaction(created, dispute_id, -charge["amount"],
                                       charge["currency"], "adjustment", category="dispute",
                                       fee=1500,
                                       description=f"Chargeback withdrawal for {charge['id']}")
        card = charge["payment_method_details"]["card"]
        obj = {
            "id": dispute_id,
            "object": "dispute",
            "amount": charge["amount"],
            "balance_transactions": [txn],
            "charge": charge["id"],
            "created": created,
            "currency": charge["currency"],
            "evidence": dict.fromkeys(EVIDENCE_FIELDS),
            "evidence_details": {"due_by": created + 21 * DAY, "has_evidence": False,
                                 "past_due": False, "submission_count": 0},
            "is_charge_refundable": False,
            "livemode": False,
            "metadata": {},
            "payment_intent": charge["payment_intent"],
            "payment_method_details": {
                "card": {"brand": card["brand"], "case_type": "chargeback",
                         "network_reason_code": rng.choice(("10.4", "13.1", "4837", "4853"))},
                "type": "card",
            },
            "reason": rng.choice(DISPUTE_REASONS),
            "status": rng.choice(DISPUTE_STATUSES),
        }
        obj.update(overrides)
        return obj, txn

    def payout(self, created: int, **overrides: t.Any) -> tuple[dict, dict]:
        amount = self.rng.randint(100, 500_000) * 10
        payout_id = self.gen.long_id("po")
        txn = self.balance_transaction(created, payout_id, -amount, "usd", "payout",
                                       category="payout",
                                       description="STRIPE PAYOUT")
        arrival = created + 2 * DAY - created % DAY
        paid = arrival <= self.gen.clock
        obj = {
            "id": payout_id,
            "object": "payout",
            "amount": amount,
            "application_fee": None,
            "application_fee_amount": None,
            "arrival_date": arrival,
            "automatic": True,
            "balance_transaction": txn["id"],
            "created": created,
            "currency": "usd",
            "description": "STRIPE PAYOUT",
            "destination": f"ba_1{self.gen.rand(5)}{self.gen.tag}{self.gen.rand(8)}",
            "failure_balance_transaction": None,
            "failure_code": None,
            "failure_message": None,
            "livemode": False,
            "metadata": {},
            "method": "standard",
            "original_payout": None,
            "reconciliation_status": "completed" if paid else "in_progress",
            "reversed_by": None,
            "source_type": "card",
            "statement_descriptor": None,
            "status": "paid" if paid else "in_transit",
            "type": "bank_account",
        }
        obj.update(overrides)
        return obj, txn

    def transfer(self, created: int, destination: str, **overrides: t.Any) -> tuple[dict, dict]:
        amount = self.rng.randint(10, 20_000) * 10
        transfer_id = self.gen.long_id("tr")
        txn = self.balance_transaction(created, transfer_id, -amount, "usd", "transfer",
                                       category="transfer")
        obj = {
            "id": transfer_id,
            "object": "transfer",
            "amount": amount,
            "amount_reversed": 0,
            "balance_transaction": txn["id"],
            "created": created,
            "currency": "usd",
            "description": None,
            "destination": destination,
            "destination_payment": f"py_1{self.gen.rand(5)}{self.gen.tag}{self.gen.rand(8)}",
            "livemode": False,
            "metadata": {},
            "reversals": embedded_list([], f"/v1/transfers/{transfer_id}/reversals"),
            "reversed": False,
            "source_transaction": None,
            "source_type": "card",
            "transfer_group": None,
        }
        obj.update(overrides)
        return obj, txn

    def application_fee(self, created: int, account: str, application: str,
                        **overrides: t.Any) -> tuple[dict, dict]:
        amount = self.rng.randint(5, 2_000) * 10
        fee_id = self.gen.long_id("fee")
        txn = self.balance_transaction(created, fee_id, amount, "usd", "application_fee",
                                       category="platform_earning")
        charge = f"py_1{self.gen.rand(5)}{self.gen.tag}{self.gen.rand(8)}"
        obj = {
            "id": fee_id,
            "object": "application_fee",
            "account": account,
            "amount": amount,
            "amount_refunded": 0,
            "application": application,
            "balance_transaction": txn["id"],
            "charge": charge,
            "created": created,
            "currency": "usd",
            "fee_source": {"charge": charge, "type": "charge"},
            "livemode": False,
            "originating_transaction": None,
            "refunded": False,
            "refunds": embedded_list([], f"/v1/application_fees/{fee_id}/refunds"),
        }
        obj.update(overrides)
        return obj, txn

    # -- customers' things ----------------------------------------------------------------------

    def payment_method(self, created: int, customer: dict, pm_id: str | None = None,
                       **overrides: t.Any) -> dict:
        rng = self.rng
        brand, last4 = rng.choice(CARD_BRANDS)
        address = customer.get("address")
        obj = {
            "id": pm_id or self.gen.long_id("pm"),
            "object": "payment_method",
            "allow_redisplay": "unspecified",
            "billing_details": {
                "address": dict(address) if address else self.gen._empty_address(),
                "email": customer.get("email"),
                "name": customer.get("name"),
                "phone": None,
            },
            "card": {
                "brand": brand,
                "checks": {"address_line1_check": None,
                           "address_postal_code_check": "pass" if address else None,
                           "cvc_check": "pass"},
                "country": address["country"] if address else "US",
                "display_brand": brand,
                "exp_month": rng.randint(1, 12),
                "exp_year": rng.randint(2026, 2031),
                "fingerprint": self.gen.rand(16),
                "funding": rng.choice(("credit", "credit", "debit")),
                "generated_from": None,
                "last4": last4,
                "networks": {"available": [brand], "preferred": None},
                "three_d_secure_usage": {"supported": True},
                "wallet": None,
            },
            "created": created,
            "customer": customer["id"],
            "livemode": False,
            "metadata": {},
            "type": "card",
        }
        obj.update(overrides)
        return obj

    def invoice_item(self, created: int, customer: dict, **overrides: t.Any) -> dict:
        rng = self.rng
        price = rng.choice(self.gen.one_off[customer["currency"]])
        quantity = 1 if rng.random() < 0.8 else rng.randint(2, 5)
        name = self.gen.product_names[price["product"]]
        obj = {
            "id": self.gen.long_id("ii"),
            "object": "invoiceitem",
            "amount": price["unit_amount"] * quantity,
            "currency": customer["currency"],
            "customer": customer["id"],
            "date": created,
            "description": name,
            "discountable": True,
            "discounts": [],
            "invoice": None,
            "livemode": False,
            "metadata": self.gen._metadata(),
            "period": {"end": created, "start": created},
            "price": price,
            "proration": False,
            "quantity": quantity,
            "subscription": None,
            "tax_rates": [],
            "test_clock": None,
            "unit_amount": price["unit_amount"],
            "unit_amount_decimal": str(price["unit_amount"]),
        }
        obj.update(overrides)
        return obj

    def payment_intent(self, created: int, customer: dict | None, status: str | None = None,
                       **overrides: t.Any) -> dict:
        rng = self.rng
        status = status or _pick(rng, INTENT_STATUSES)
        pi_id = self.gen.long_id("pi", "3")
        amount = self._amount()
        attempted = status in ("succeeded", "processing", "requires_action")
        obj = {
            "id": pi_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_details": {"tip": {}},
            "amount_received": amount if status == "succeeded" else 0,
            "application": None,
            "application_fee_amount": None,
            "automatic_payment_methods": {"allow_redirects": "always", "enabled": True},
            "canceled_at": min(created + HOUR, self.gen.clock - 1)
            if status == "canceled" else None,
            "cancellation_reason": "abandoned" if status == "canceled" else None,
            "capture_method": "automatic_async",
            "client_secret": f"{pi_id}_secret_{self.gen.rand(25)}",
            "confirmation_method": "automatic",
            "created": created,
            "currency": customer["currency"] if customer else "usd",
            "customer": customer["id"] if customer else None,
            "description": None,
            "invoice": None,
            "last_payment_error": None,
            "latest_charge": self.gen.long_id("ch", "3") if status == "succeeded" else None,
            "livemode": False,
            "metadata": self.gen._metadata(),
            "next_action": None,
            "on_behalf_of": None,
            "payment_method": self.gen.long_id("pm") if attempted else None,
            "payment_method_configuration_details": None,
            "payment_method_options": {},
            "payment_method_types": ["card"],
            "processing": None,
            "receipt_email": None,
            "review": None,
            "setup_future_usage": None,
            "shipping": None,
            "statement_descriptor": None,
            "statement_descriptor_suffix": None,
            "status": status,
            "transfer_data": None,
            "transfer_group": None,
        }
        obj.update(overrides)
        return obj

    def setup_intent(self, created: int, customer: dict | None, status: str | None = None,
                     **overrides: t.Any) -> dict:
        status = status or _pick(self.rng, SETUP_STATUSES)
        seti_id = self.gen.long_id("seti")
        obj = {
            "id": seti_id,
            "object": "setup_intent",
            "application": None,
            "automatic_payment_methods": {"allow_redirects": "always", "enabled": True},
            "cancellation_reason": "abandoned" if status == "canceled" else None,
            "client_secret": f"{seti_id}_secret_{self.gen.rand(32)}",
            "created": created,
            "customer": customer["id"] if customer else None,
            "description": None,
            "flow_directions": None,
            "last_setup_error": None,
            "latest_attempt": f"setatt_1{self.gen.rand(23)}" if status == "succeeded" else None,
            "livemode": False,
            "mandate": None,
            "metadata": {},
            "next_action": None,
            "on_behalf_of": None,
            "payment_method": self.gen.long_id("pm") if status == "succeeded" else None,
            "payment_method_configuration_details": None,
            "payment_method_options": {},
            "payment_method_types": ["card"],
            "single_use_mandate": None,
            "status": status,
            "usage": "off_session",
        }
        obj.update(overrides)
        return obj

    def checkout_session(self, created: int, customer: dict | None, status: str | None = None,
                         **overrides: t.Any) -> dict:
        rng = self.rng
        clock = self.gen.clock
        status = status or _pick(rng, CHECKOUT_STATUSES)
        if status == "open" and created + DAY <= clock:
            status = "expired"
        session_id = f"cs_test_a1{self.gen.rand(58)}"
        subscription = rng.random() < 0.4
        amount = self._amount()
        complete = status == "complete"
        currency = customer["currency"] if customer else "usd"
        details = None
        if complete:
            address = customer.get("address") if customer else None
            details = {
                "address": dict(address) if address else self.gen._empty_address(),
                "email": customer["email"] if customer else "guest@example.com",
                "name": customer["name"] if customer else None,
                "phone": None,
                "tax_exempt": "none",
                "tax_ids": [],
            }
        obj = {
            "id": session_id,
            "object": "checkout.session",
            "after_expiration": None,
            "allow_promotion_codes": None,
            "amount_subtotal": amount,
            "amount_total": amount,
            "automatic_tax": {"enabled": False, "liability": None, "status": None},
            "billing_address_collection": None,
            "cancel_url": "https://example.com/cancel",
            "client_reference_id": None,
            "client_secret": None,
            "consent": None,
            "consent_collection": None,
            "created": created,
            "currency": currency,
            "currency_conversion": None,
            "custom_fields": [],
            "custom_text": {"after_submit": None, "shipping_address": None, "submit": None,
                            "terms_of_service_acceptance": None},
            "customer": customer["id"] if customer and (complete or subscription) else None,
            "customer_creation": None if subscription else "if_required",
            "customer_details": details,
            "customer_email": None,
            "expires_at": created + DAY,
            "invoice": None,
            "invoice_creation": None if subscription else {
                "enabled": False,
                "invoice_data": {"account_tax_ids": None, "custom_fields": None,
                                 "description": None, "footer": None, "issuer": None,
                                 "metadata": {}, "rendering_options": None},
            },
            "livemode": False,
            "locale": None,
            "metadata": {},
            "mode": "subscription" if subscription else "payment",
            "payment_intent": None if subscription or not complete
            else self.gen.long_id("pi", "3"),
            "payment_link": None,
            "payment_method_collection": "always",
            "payment_method_configuration_details": None,
            "payment_method_options": {},
            "payment_method_types": ["card"],
            "payment_status": "paid" if complete else "unpaid",
            "phone_number_collection": {"enabled": False},
            "recovered_from": None,
            "saved_payment_method_options": None,
            "setup_intent": None,
            "shipping_address_collection": None,
            "shipping_cost": None,
            "shipping_details": None,
            "shipping_options": [],
            "status": status,
            "submit_type": None,
            "subscription": self.gen.long_id("sub") if subscription and complete else None,
            "success_url": "https://example.com/success?session_id={CHECKOUT_SESSION_ID}",
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted",
            "url": f"https://checkout.stripe.com/c/pay/{session_id}" if status == "open"
            else None,
        }
        obj.update(overrides)
        return obj

    def subscription_schedule(self, created: int, customer: dict, **overrides: t.Any) -> dict:
        rng = self.rng
        clock = self.gen.clock
        price = rng.choice(self.gen.recurring[(customer["currency"], "month")])
        start = created + rng.choice((0, 7 * DAY, 30 * DAY))
        end = start + rng.choice((3, 6, 12)) * 30 * DAY
        if start > clock:
            status = "not_started"
        elif end > clock:
            status = "active"
        else:
            status = rng.choice(("completed", "released"))
        done_at = min(end, clock - 1)
        obj = {
            "id": f"sub_sched_1{self.gen.rand(5)}{self.gen.tag}{self.gen.rand(8)}",
            "object": "subscription_schedule",
            "application": None,
            "canceled_at": None,
            "completed_at": done_at if status == "completed" else None,
            "created": created,
            "current_phase": {"end_date": end, "start_date": start}
            if status == "active" else None,
            "customer": customer["id"],
            "default_settings": {
                "application_fee_percent": None,
                "automatic_tax": {"enabled": False, "liability": None},
                "billing_cycle_anchor": "automatic",
                "billing_thresholds": None,
                "collection_method": "charge_automatically",
                "default_payment_method": None,
                "description": None,
                "invoice_settings": {"account_tax_ids": None, "days_until_due": None,
                                     "issuer": {"type": "self"}},
                "on_behalf_of": None,
                "transfer_data": None,
            },
            "end_behavior": "release",
            "livemode": False,
            "metadata": {},
            "phases": [{
                "add_invoice_items": [],
                "application_fee_percent": None,
                "billing_cycle_anchor": None,
                "billing_thresholds": None,
                "collection_method": None,
                "coupon": None,
                "currency": customer["currency"],
                "default_payment_method": None,
                "default_tax_rates": [],
                "description": None,
                "discounts": [],
                "end_date": end,
                "invoice_settings": None,
                "items": [{"billing_thresholds": None, "discounts": [], "metadata": {},
                           "price": price["id"], "quantity": rng.randint(1, 5),
                           "tax_rates": []}],
                "metadata": {},
                "on_behalf_of": None,
                "proration_behavior": "create_prorations",
                "start_date": start,
                "transfer_data": None,
                "trial_end": None,
            }],
            "released_at": done_at if status == "released" else None,
            "released_subscription": self.gen.long_id("sub") if status == "released" else None,
            "status": status,
            "subscription": self.gen.long_id("sub") if status != "not_started" else None,
            "test_clock": None,
        }
        obj.update(overrides)
        return obj

    def credit_note(self, created: int, invoice: dict, invoice_lines: list[dict],
                    n_lines: int, **overrides: t.Any) -> tuple[dict, list[dict]]:
        """A credit note for some of an invoice's lines, and all its lines."""
        rng = self.rng
        cn_id = self.gen.long_id("cn")
        lines = []
        for line in invoice_lines[:n_lines]:
            amount = line["amount"] if rng.random() < 0.7 else line["amount"] // 2
            lines.append({
                "id": self.gen.long_id("cnli"),
                "object": "credit_note_line_item",
                "amount": amount,
                "amount_excluding_tax": amount,
                "description": line["description"],
                "discount_amount": 0,
                "discount_amounts": [],
                "invoice_line_item": line["id"],
                "livemode": False,
                "quantity": line["quantity"],
                "tax_amounts": [],
                "tax_rates": [],
                "type": "invoice_line_item",
                "unit_amount": None,
                "unit_amount_decimal": None,
                "unit_amount_excluding_tax": str(amount // max(1, line["quantity"] or 1)),
            })
        total = sum(line["amount"] for line in lines)
        paid = invoice["status"] == "paid"
        obj = {
            "id": cn_id,
            "object": "credit_note",
            "amount": total,
            "amount_shipping": 0,
            "created": created,
            "currency": invoice["currency"],
            "customer": invoice["customer"],
            "customer_balance_transaction": None,
            "discount_amount": 0,
            "discount_amounts": [],
            "effective_at": created,
            "invoice": invoice["id"],
            "lines": embedded_list(lines, f"/v1/credit_notes/{cn_id}/lines"),
            "livemode": False,
            "memo": None,
            "metadata": {},
            "number": f"{invoice['number'] or self.gen.rand(8).upper()}-CN-01",
            "out_of_band_amount": None,
            "pdf": f"https://pay.stripe.com/credit_notes/{self.gen.account_id}/test_"
                   f"{self.gen.rand(32)}/pdf",
            "reason": rng.choice((None, "duplicate", "order_change", "product_unsatisfactory")),
            "refund": self.gen.long_id("re", "3") if paid else None,
            "shipping_cost": None,
            "status": "issued",
            "subtotal": total,
            "subtotal_excluding_tax": total,
            "tax_amounts": [],
            "total": total,
            "total_excluding_tax": total,
            "type": "post_payment" if paid else "pre_payment",
            "voided_at": None,
        }
        obj.update(overrides)
        return obj, lines

    def account(self, created: int, **overrides: t.Any) -> dict:
        """A connected account of the platform."""
        rng = self.rng
        account_id = f"acct_1{self.gen.rand(15)}"
        name = f"{rng.choice(COUPON_NAMES)} {rng.choice(('Studio', 'Labs', 'Shop', 'Works'))}"
        kind = rng.choice(("express", "express", "standard", "custom"))
        return {
            "id": account_id,
            "object": "account",
            "business_profile": {
                "annual_revenue": None, "estimated_worker_count": None, "mcc": "5734",
                "name": name, "product_description": None, "support_address": None,
                "support_email": None, "support_phone": None, "support_url": None,
                "url": f"https://{name.lower().replace(' ', '-')}.example.com",
            },
            "business_type": rng.choice(("individual", "company")),
            "capabilities": {"card_payments": "active", "transfers": "active"},
            "charges_enabled": True,
            "controller": {"is_controller": True, "type": "application"},
            "country": "US",
            "created": created,
            "default_currency": "usd",
            "details_submitted": True,
            "email": f"owner@{name.lower().replace(' ', '')}.example.com",
            "external_accounts": embedded_list([], f"/v1/accounts/{account_id}/external_accounts"),
            "future_requirements": copy.deepcopy(REQUIREMENTS_NONE),
            "metadata": {},
            "payouts_enabled": True,
            "requirements": copy.deepcopy(REQUIREMENTS_NONE),
            "settings": {
                "bacs_debit_payments": {"display_name": None, "service_user_number": None},
                "branding": {"icon": None, "logo": None, "primary_color": None,
                             "secondary_color": None},
                "card_issuing": {"tos_acceptance": {"date": None, "ip": None}},
                "card_payments": {"decline_on": {"avs_failure": False, "cvc_failure": True},
                                  "statement_descriptor_prefix": None,
                                  "statement_descriptor_prefix_kana": None,
                                  "statement_descriptor_prefix_kanji": None},
                "dashboard": {"display_name": name, "timezone": "Etc/UTC"},
                "invoices": {"default_account_tax_ids": None},
                "payments": {"statement_descriptor": name.upper()[:22],
                             "statement_descriptor_kana": None,
                             "statement_descriptor_kanji": None,
                             "statement_descriptor_prefix_kana": None,
                             "statement_descriptor_prefix_kanji": None},
                "payouts": {"debit_negative_balances": True,
                            "schedule": {"delay_days": 2, "interval": "daily"},
                            "statement_descriptor": None},
                "sepa_debit_payments": {},
            },
            "tos_acceptance": {"date": created, "ip": f"203.0.113.{rng.randint(1, 254)}",
                               "user_agent": None},
            "type": kind,
            **overrides,
        }


def settle(payouts: list[tuple[dict, dict]], txns: list[dict]) -> dict[str, str]:
    """Automatic payouts settle the balance: each, in order, pays out the net of every
    transaction of its currency available by its creation and not settled before; its amount
    is that sum and its own balance transaction the negative, in the currency with the most
    to pay out. Where the sum is not positive,
    Stripe pays nothing out: the payout is a manual one instead (its amount as generated),
    settling nothing. Returns {balance transaction id: automatic payout id}, the emulator's
    ground truth for Stripe's payout reconciliation report."""
    settled_by: dict[str, str] = {}
    waiting = sorted((x for x in txns if x["reporting_category"] != "payout"),
                     key=lambda x: (x["available_on"], x["id"]))
    for payout, own in sorted(payouts, key=lambda p: (p[0]["created"], p[0]["id"])):
        available = [x for x in waiting
                     if x["available_on"] <= payout["created"] and x["created"] < payout["created"]]
        # The currency of the largest balance to pay out (ties: by name).
        sums: dict[str, int] = {}
        for x in available:
            sums[x["currency"]] = sums.get(x["currency"], 0) + x["net"]
        currency = max(sorted(sums), key=lambda c: sums[c], default=payout["currency"])
        amount = sums.get(currency, 0)
        if amount <= 0 or not payout["automatic"]:
            payout["automatic"] = False
            continue
        due = [x for x in available if x["currency"] == currency]
        payout["currency"] = own["currency"] = currency
        for x in due:
            settled_by[x["id"]] = payout["id"]
        waiting = [x for x in waiting if x["id"] not in settled_by]
        payout["amount"] = amount
        own.update(amount=-amount, net=-amount)
    return settled_by


class BillingStore:
    """The part of `Store` that holds the streams of `KINDS` (a base class of `Store`).

    Relies on the `Store`'s `collections`, `lines`, `deleted`, `gen`, `_event`, `_tick` and
    `_previous`; adds `includes` (fields returned only when expanded) and `cn_lines` (all
    lines of each credit note).
    """

    collections: dict[str, Collection]
    lines: dict[str, list[dict]]
    deleted: dict[str, tuple[str, dict]]
    gen: Generator
    seed: int
    _event: t.Callable[..., dict]
    _tick: t.Callable[[], int]
    _previous: t.Callable[[dict, dict], dict]

    def _generate_billing(self, counts: dict[str, int], collection: t.Callable[..., Collection],
                          ) -> None:
        """The initial objects of every stream in `KINDS` (a separate RNG: the core data
        stays exactly what it was before these streams existed)."""
        self.includes: dict[str, dict[str, dict]] = {"prices": {}, "plans": {}}
        self.cn_lines: dict[str, list[dict]] = {}
        self._indexes: dict[tuple[str, str], tuple[int, dict[t.Any, list]]] = {}
        for name in TOP_LEVEL:
            self.collections[name] = collection(time_field=KINDS[name].time_field)
        gen = self.gen
        saved = gen.rng
        gen.rng = random.Random(f"billing-{self.seed}")
        try:
            self._generate_catalogue()
            self._generate_derived(counts)
            self._generate_counted(counts)
        finally:
            gen.rng = saved
        # Stripe's `invoiceitem` lines each name an invoice item, listed with the others.
        self._add("invoice_items", [
            item_of_line(line, invoice)
            for invoice in self.collections["invoices"].by_id.values()
            for line in self.lines[invoice["id"]]
            if line["type"] == "invoiceitem"
        ])

    # -- the billing schedule (varied_pricing="schedule") -----------------------------------

    def _put_invoice(self, inv: dict, lines: list[dict], at: int) -> None:
        if inv["status"] != "draft":
            inv["number"] = self._next_number(  # type: ignore[attr-defined]
                self.collections["customers"].by_id.get(inv["customer"])
                or self.deleted[inv["customer"]][1])
        self.lines[inv["id"]] = lines
        self.collections["invoices"].put(inv)
        self._event("invoice.created", inv, at)
        if inv["status"] == "paid":
            self._event("invoice.paid", inv, at)

    def change_scheduled_quantity(self, sub_id: str, quantity: int) -> dict:
        """The subscription's first item goes to `quantity` now, mid-period (an upgrade or a
        downgrade): recorded in the schedule and invoiced at once as two proration lines; the
        next period (`renew`) bills it whole. Emits `customer.subscription.updated` and the
        invoice's events. Returns the proration invoice."""
        with self.lock:  # type: ignore[attr-defined]
            gen = self.gen
            schedule = gen.schedules[sub_id]
            old = self.collections["subscriptions"].by_id[sub_id]
            at = self._tick()
            items = self.items[sub_id]  # type: ignore[attr-defined]
            customer = self.collections["customers"].by_id[old["customer"]]
            inv, lines = gen.proration_invoice(schedule, old, customer, item=items[0],
                                               quantity=quantity, at=at)
            items = [{**items[0], "quantity": int(quantity)}, *items[1:]]
            self.items[sub_id] = items  # type: ignore[attr-defined]
            new = {**old, "items": embedded_list(items, old["items"]["url"]),
                   "latest_invoice": inv["id"]}
            self.collections["subscriptions"].put(new)
            self._event("customer.subscription.updated", new, at, {"items": old["items"]})
            self._put_invoice(inv, lines, at)
            return copy.deepcopy(inv)

    def renew(self) -> list[dict]:
        """Stripe's billing run: every live scheduled subscription is invoiced now for each
        period that has started since its last invoice, at the schedule's price and quantity
        of the period's start. Returns the new invoices."""
        made = []
        with self.lock:  # type: ignore[attr-defined]
            gen = self.gen
            for sub_id, schedule in gen.schedules.items():
                sub = self.collections["subscriptions"].by_id[sub_id]
                if sub["ended_at"] is not None or sub["customer"] not in \
                        self.collections["customers"].by_id:
                    continue
                steps = (schedule["anchor"], schedule["interval"], schedule["count"])
                customer = self.collections["customers"].by_id[sub["customer"]]
                while nth_period_start(*steps, schedule["billed"] + 1) <= self.now():  # type: ignore[attr-defined]
                    k = schedule["billed"] + 1
                    at = self._tick()
                    inv, lines = gen.schedule_invoice(
                        schedule, sub, customer,
                        items=self.items[sub_id],  # type: ignore[attr-defined]
                        k=k, at=at, status="paid")
                    schedule["billed"] = k
                    sub = {**sub, "latest_invoice": inv["id"],
                           "current_period_start": nth_period_start(*steps, k),
                           "current_period_end": nth_period_start(*steps, k + 1)}
                    self.collections["subscriptions"].put(sub)
                    self._event("customer.subscription.updated", sub, at)
                    self._put_invoice(inv, lines, at)
                    made.append(copy.deepcopy(inv))
        return made

    def _add(self, stream: str, objects: t.Iterable[dict]) -> None:
        coll = self.collections[stream]
        for obj in objects:
            coll.by_id[obj["id"]] = obj
        coll.load(())

    def _generate_catalogue(self) -> None:
        gen, build = self.gen, Builder(self.gen)
        prices = [p for group in gen.recurring.values() for p in group]
        prices += [p for group in gen.one_off.values() for p in group]
        created = min(p["created"] for p in prices) if prices else gen.clock - DAY
        products = [build.product(pid, name, created - 301 * DAY)
                    for pid, name in gen.product_names.items()]
        # Two archived prices: `GET /v1/prices` lists them only with `active=false`.
        for currency in ("usd", "eur"):
            legacy = gen._price(next(iter(gen.product_names)), currency, 700, "month",
                                created - 300 * DAY)
            prices.append({**legacy, "active": False, "nickname": "Legacy"})
        api = next((pid for pid, name in gen.product_names.items() if "API" in name), None)
        tiers: dict[str, list[dict]] = {}
        if api is not None:
            for mode in ("volume", "graduated"):
                price, price_tiers = build.tiered_price(api, "usd", created, mode)
                prices.append(price)
                tiers[price["id"]] = price_tiers
        self._add("products", products)
        self._add("prices", prices)
        self._add("plans", [build.plan(p) for p in prices if p["recurring"]])
        # Tiered prices only: the 2024-06-20 spec has no null `tiers`.
        for stream in ("prices", "plans"):
            for price_id, price_tiers in tiers.items():
                self.includes[stream][price_id] = {"tiers": price_tiers}

    def _generate_derived(self, counts: dict[str, int]) -> None:
        gen, build, rng = self.gen, Builder(self.gen), self.gen.rng
        charges = sorted(self.collections["charges"].by_id.values(),
                         key=lambda c: (c["created"], c["id"]))
        txns = [build.charge_transaction(c) for c in charges if c["balance_transaction"]]
        refunds = []
        for charge in charges:
            if charge["amount_refunded"]:
                at = gen._between(charge["created"] + HOUR, gen.clock - 1)
                refund, txn = build.refund(at, charge, charge["amount_refunded"])
                refunds.append(refund)
                txns.append(txn)
        disputable = [c for c in charges if c["status"] == "succeeded" and not c["refunded"]]
        disputes = []
        for charge in rng.sample(disputable, min(counts.get("disputes", 0), len(disputable))):
            at = gen._between(charge["created"] + DAY, gen.clock - 1)
            dispute, txn = build.dispute(at, charge)
            disputes.append(dispute)
            txns.append(txn)
            self.collections["charges"].put({**charge, "disputed": True})
        methods = []
        for customer in self.collections["customers"].by_id.values():
            pm_id = customer["invoice_settings"]["default_payment_method"]
            if pm_id:
                methods.append(build.payment_method(customer["created"], customer, pm_id))
        notes, invoices = [], self.collections["invoices"].by_id
        finalized = sorted((i for i in invoices.values() if i["status"] in ("paid", "open")),
                           key=lambda i: (i["created"], i["id"]))
        wanted = counts.get("credit_notes", 0)
        # The invoice with the most lines first: a credit note past the 10 Stripe embeds.
        finalized.sort(key=lambda i: -len(self.lines[i["id"]]))
        for index, invoice in enumerate(finalized[:wanted]):
            lines = self.lines[invoice["id"]]
            n_lines = 12 if index == 0 and len(lines) >= 12 else rng.randint(1, len(lines))
            at = gen._between(invoice["created"] + HOUR, gen.clock - 1)
            note, note_lines = build.credit_note(at, invoice, lines, n_lines)
            notes.append(note)
            self.cn_lines[note["id"]] = note_lines
        self._add("refunds", refunds)
        self._add("disputes", disputes)
        self._add("payment_methods", methods)
        self._add("credit_notes", notes)
        self._pending_txns = txns

    def _generate_counted(self, counts: dict[str, int]) -> None:
        gen, build, rng = self.gen, Builder(self.gen), self.gen.rng
        customers = sorted(self.collections["customers"].by_id.values(),
                           key=lambda c: (c["created"], c["id"]))
        txns = self._pending_txns

        def times(stream: str) -> list[int]:
            previous = None
            out = []
            for _ in range(counts.get(stream, 0)):
                previous = gen.created_time(previous)
                out.append(previous)
            return out

        joined = [c["created"] for c in customers]

        def customer_at(at: int) -> dict | None:
            """A customer that existed at `at` (else the first one)."""
            alive = bisect_right(joined, at)
            return customers[rng.randrange(alive)] if alive else (
                customers[0] if customers else None)

        accounts = [build.account(at) for at in times("accounts")]
        self._add("accounts", accounts)
        destinations = [a["id"] for a in accounts] or [f"acct_1{gen.rand(15)}"]
        application = f"ca_{gen.rand(32)}"
        coupons = [build.coupon(at) for at in times("coupons")]
        self._add("coupons", coupons)
        if coupons:
            self._add("promotion_codes", [
                build.promotion_code(max(at, coupon["created"]), coupon)
                for at in times("promotion_codes")
                for coupon in [rng.choice(coupons)]
            ])
        self._add("tax_rates", [build.tax_rate(at, i)
                                for i, at in enumerate(times("tax_rates"))])
        if customers:
            def per_customer(stream: str, make: t.Callable[[int, dict], dict]) -> None:
                objects = []
                for at in times(stream):
                    customer = customer_at(at)
                    assert customer is not None
                    objects.append(make(max(at, customer["created"]), customer))
                self._add(stream, objects)

            per_customer("invoice_items", build.invoice_item)
            per_customer("payment_intents", build.payment_intent)
            per_customer("setup_intents", build.setup_intent)
            per_customer("checkout_sessions", build.checkout_session)
            per_customer("subscription_schedules", build.subscription_schedule)
        moves = []
        for at in times("payouts"):
            moves.append(("payouts", *build.payout(at)))
        for at in times("transfers"):
            moves.append(("transfers", *build.transfer(at, rng.choice(destinations))))
        for at in times("application_fees"):
            moves.append(("application_fees",
                          *build.application_fee(at, rng.choice(destinations), application)))
        self.settled_by = settle([(obj, txn) for name, obj, txn in moves if name == "payouts"],
                                 txns + [txn for name, _obj, txn in moves if name != "payouts"])
        for stream in ("payouts", "transfers", "application_fees"):
            self._add(stream, [obj for name, obj, _txn in moves if name == stream])
        txns += [txn for _name, _obj, txn in moves]
        self._add("balance_transactions", txns)
        del self._pending_txns

    # -- reading ------------------------------------------------------------------------------

    def settled(self) -> dict[str, dict]:
        """{balance transaction id: the automatic payout that settled it (as it is now)}."""
        payouts = self.collections["payouts"].by_id
        return {txn_id: payouts[payout_id]
                for txn_id, payout_id in getattr(self, "settled_by", {}).items()
                if payout_id in payouts}

    def within(self, stream: str, field_name: str, value: t.Any) -> list[tuple[int, str]]:
        """The sort keys of a stream's objects whose field equals `value` (indexed)."""
        coll = self.collections[stream]
        cached = self._indexes.get((stream, field_name))
        if cached is None or cached[0] != coll.version:
            index: dict[t.Any, list] = {}
            for key in coll.keys:
                index.setdefault(coll.by_id[key[1]].get(field_name), []).append(key)
            cached = self._indexes[(stream, field_name)] = (coll.version, index)
        return cached[1].get(value, [])

    def with_includes(self, stream: str, obj: dict, fields: t.Iterable[str]) -> dict:
        """`obj` with the named fields Stripe returns only when expanded."""
        extra = self.includes.get(stream, {}).get(obj["id"])
        wanted = {f: extra[f] for f in fields if extra and f in extra}
        return {**obj, **wanted} if wanted else obj

    # -- mutations ----------------------------------------------------------------------------

    def _live(self, stream: str, obj_id: str | None) -> dict | None:
        if obj_id is None:
            return None
        obj = self.collections[stream].by_id.get(obj_id)
        if obj is None:
            raise KeyError(f"No such {KINDS.get(stream, Kind(stream, stream, '', '', None)).object}"
                           f": '{obj_id}'")
        return obj

    def _any(self, stream: str) -> dict:
        coll = self.collections[stream]
        if not coll.keys:
            raise ValueError(f"there are no {stream} to attach the new object to")
        return coll.by_id[coll.keys[self.gen.rng.randrange(len(coll.keys))][1]]

    def _billing_create(self, stream: str, at: int, fields: dict) -> dict:
        """Create an object of a `KINDS` stream now, with the events Stripe sends."""
        kind = KINDS[stream]
        build = Builder(self.gen)
        txn = None
        customer = None
        if stream in ("invoice_items", "payment_intents", "setup_intents", "payment_methods",
                      "checkout_sessions", "subscription_schedules"):
            customer = (self._live("customers", fields.pop("customer"))
                        if "customer" in fields else self._any("customers"))
        if stream == "invoice_items":
            obj = build.invoice_item(at, customer, **fields)
        elif stream == "payment_intents":
            obj = build.payment_intent(at, customer, fields.pop("status", None), **fields)
        elif stream == "setup_intents":
            obj = build.setup_intent(at, customer, fields.pop("status", None), **fields)
        elif stream == "checkout_sessions":
            obj = build.checkout_session(at, customer, fields.pop("status", "open"), **fields)
        elif stream == "subscription_schedules":
            obj = build.subscription_schedule(at, customer, **fields)
        elif stream == "payment_methods":
            obj = build.payment_method(at, customer, **fields)
        elif stream == "products":
            obj = build.product(self.gen.short_id("prod"), fields.pop("name", "New product"),
                                at, **fields)
        elif stream in ("prices", "plans"):
            return self._create_price(stream, at, fields)
        elif stream == "coupons":
            obj = build.coupon(at, **fields)
        elif stream == "promotion_codes":
            coupon = (self._live("coupons", fields.pop("coupon")) if "coupon" in fields
                      else self._any("coupons"))
            obj = build.promotion_code(at, coupon, **fields)
        elif stream == "tax_rates":
            obj = build.tax_rate(at, self.gen.rng.randrange(len(TAX_RATES)), **fields)
        elif stream == "refunds":
            return self._create_refund(at, fields)
        elif stream == "disputes":
            charge = (self._live("charges", fields.pop("charge")) if "charge" in fields
                      else self._any("charges"))
            obj, txn = build.dispute(at, charge, **fields)
            self.collections["charges"].put({**charge, "disputed": True})
        elif stream == "payouts":
            # A payout made through the API is a manual one: it settles nothing.
            obj, txn = build.payout(at, **{"automatic": False, **fields})
        elif stream == "transfers":
            destination = fields.pop("destination", None) or self._any("accounts")["id"]
            obj, txn = build.transfer(at, destination, **fields)
        elif stream == "application_fees":
            account = fields.pop("account", None) or self._any("accounts")["id"]
            obj, txn = build.application_fee(at, account, f"ca_{self.gen.rand(32)}", **fields)
        elif stream == "credit_notes":
            return self._create_credit_note(at, fields)
        elif stream == "accounts":
            obj = build.account(at, **fields)
        elif stream == "balance_transactions":
            # Others come with charges, refunds, disputes, payouts, transfers and application
            # fees; a Stripe fee (Billing, Radar, Connect) is charged alone, with no event.
            if fields.get("type", "stripe_fee") != "stripe_fee":
                raise ValueError("balance transactions other than Stripe fees come with charges, "
                                 "refunds, disputes, payouts, transfers and application fees")
            txn = build.balance_transaction(
                at, None, -abs(int(fields.get("amount", 1500))), "usd", "stripe_fee",
                category="fee", description=fields.get("description", "Billing - Usage Fee"))
            self.collections["balance_transactions"].put(txn)
            return txn
        else:
            raise ValueError(f"cannot create {stream}")
        if txn is not None:
            self.collections["balance_transactions"].put(txn)
        self.collections[stream].put(obj)
        if kind.created:
            self._event(kind.created, obj, at)
        return obj

    def _create_price(self, stream: str, at: int, fields: dict) -> dict:
        tiers = fields.pop("tiers", None)
        product = fields.pop("product", None) or self._any("products")["id"]
        currency = fields.pop("currency", "usd")
        interval = fields.pop("interval", "month" if stream == "plans" else None)
        price = self.gen._price(product, currency, int(fields.pop("unit_amount", 1000)),
                                interval, at)
        if tiers:
            price.update({"billing_scheme": "tiered", "tiers_mode": "volume",
                          "unit_amount": None, "unit_amount_decimal": None})
        obj = Builder.plan(price) if stream == "plans" else price
        obj.update(fields)
        if tiers:
            self.includes[stream][obj["id"]] = {"tiers": tiers}
        self.collections[stream].put(obj)
        self._event(KINDS[stream].created, obj, at)  # type: ignore[arg-type]
        return obj

    def _create_refund(self, at: int, fields: dict) -> dict:
        """A refund: the charge's `amount_refunded` grows (`charge.refunded`), then
        `refund.created`."""
        charges = self.collections["charges"]
        if "charge" in fields:
            charge = self._live("charges", fields.pop("charge"))
        else:
            candidates = [c for c in charges.by_id.values()
                          if c["status"] == "succeeded" and c["amount_refunded"] < c["amount"]]
            if not candidates:
                raise ValueError("there is no charge left to refund")
            charge = self.gen.rng.choice(sorted(candidates, key=lambda c: c["id"]))
        assert charge is not None
        left = charge["amount"] - charge["amount_refunded"]
        amount = int(fields.pop("amount", left))
        if charge["status"] != "succeeded" or not 0 < amount <= left:
            raise ValueError(f"Charge {charge['id']} cannot be refunded {amount}.")
        refund, txn = Builder(self.gen).refund(at, charge, amount, **fields)
        refunded = charge["amount_refunded"] + amount
        changes = {"amount_refunded": refunded, "refunded": refunded == charge["amount"]}
        new_charge = {**charge, **changes}
        charges.put(new_charge)
        self._event("charge.refunded", new_charge, at, self._previous(charge, changes))
        self.collections["balance_transactions"].put(txn)
        self.collections["refunds"].put(refund)
        self._event("refund.created", refund, at)
        return refund

    def _create_credit_note(self, at: int, fields: dict) -> dict:
        if "invoice" in fields:
            invoice = self._live("invoices", fields.pop("invoice"))
        else:
            candidates = sorted((i for i in self.collections["invoices"].by_id.values()
                                 if i["status"] in ("paid", "open")), key=lambda i: i["id"])
            if not candidates:
                raise ValueError("there is no finalized invoice to credit")
            invoice = self.gen.rng.choice(candidates)
        assert invoice is not None
        lines = self.lines[invoice["id"]]
        n_lines = min(int(fields.pop("lines", 1)), len(lines))
        note, note_lines = Builder(self.gen).credit_note(at, invoice, lines, n_lines, **fields)
        self.cn_lines[note["id"]] = note_lines
        self.collections["credit_notes"].put(note)
        self._event("credit_note.created", note, at)
        return note

    def _billing_update(self, stream: str, obj_id: str, changes: dict,
                        event_type: str | None) -> dict:
        kind = KINDS[stream]
        if kind.immutable:
            raise ValueError(f"Stripe never changes {stream}")
        coll = self.collections[stream]
        old = coll.by_id.get(obj_id)
        if old is None:
            raise KeyError(f"No such {kind.object}: '{obj_id}'")
        fixed = {"id", "object", kind.time_field, "lines"} & set(changes)
        if fixed:
            raise ValueError(f"update cannot change {sorted(fixed)}")
        include = {k: changes.pop(k) for k in list(changes) if k in kind.includable}
        at = self._tick()
        if include:
            self.includes[stream][obj_id] = {**self.includes[stream].get(obj_id, {}), **include}
        if "updated" in old and "updated" not in changes:
            changes["updated"] = at  # `product.updated`: when it last changed
        previous = self._previous(old, changes)
        new = {**old, **changes}
        if previous or include:
            coll.put(new)
            event_type = event_type or kind.updated
            if event_type:  # Stripe sends none for a plain update of some objects
                self._event(event_type, new, at, previous)
        return new

    def _billing_delete(self, stream: str, obj_id: str) -> dict:
        kind = KINDS[stream]
        if not kind.deletable:
            raise ValueError(f"Stripe cannot delete {stream}")
        coll = self.collections[stream]
        obj = coll.by_id.get(obj_id)
        if obj is None:
            raise KeyError(f"No such {kind.object}: '{obj_id}'")
        at = self._tick()
        coll.remove(obj_id)
        if stream == "payment_methods":
            gone = {**obj, "customer": None}
            self.deleted[obj_id] = (stream, gone)
            self._event("payment_method.detached", gone, at, {"customer": obj["customer"]})
            return gone
        self.deleted[obj_id] = (stream, obj)
        gone = {**obj, "deleted": True}
        if kind.deleted:
            self._event(kind.deleted, gone, at)
        return gone


def item_of_line(line: dict, invoice: dict) -> dict:
    """The invoice item an `invoiceitem` line of an invoice names (no RNG: the generated
    data stays what it was)."""
    price = line["price"]
    return {
        "id": line["invoice_item"],
        "object": "invoiceitem",
        "amount": line["amount"],
        "currency": line["currency"],
        "customer": invoice["customer"],
        "date": line["period"]["start"],
        "description": line["description"],
        "discountable": line["discountable"],
        "discounts": [],
        "invoice": invoice["id"],
        "livemode": False,
        "metadata": {},
        "period": dict(line["period"]),
        "price": price,
        "proration": line["proration"],
        "quantity": line["quantity"],
        "subscription": None,
        "tax_rates": [],
        "test_clock": None,
        "unit_amount": price["unit_amount"],
        "unit_amount_decimal": str(price["unit_amount"]),
    }


__all__ = ["COUNTED", "KINDS", "TOP_LEVEL", "BillingStore", "Builder", "Kind", "default_counts",
           "item_of_line"]
