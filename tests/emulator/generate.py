"""Deterministic, Stripe-shaped test data (API version 2024-06-20).

Field names and types were checked by hand against Stripe's OpenAPI description
(`components.schemas.charge`, `customer`, `invoice`, `subscription`, `line_item`,
`subscription_item`, `price`, `event`); the spec is not read at runtime. Fields that
Stripe only returns when asked for (`charge.refunds`, `customer.sources`, ...) are left out,
as the real API leaves them out.

Everything comes from one `random.Random(seed)`, so the same seed, clock and counts give
byte-identical data. Objects are plain dicts, treated as immutable once handed to the
store: changes build new dicts (copy-on-write), so events can keep references to the
object as it was.
"""

from __future__ import annotations

import calendar
import random
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

API_VERSION = "2024-06-20"
#: 2026-01-01T00:00:00Z: the default emulator clock, so that data is deterministic.
DEFAULT_CLOCK = 1767225600
DAY = 86_400
HOUR = 3_600
#: Objects are spread over the two years before the clock.
SPAN = 730 * DAY
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # ASCII order
# Random bytes -> base62 characters in one C call (`rng.choices` is ten times slower).
_TO_BASE62 = bytes(ord(BASE62[b % 62]) for b in range(256))

CORE_STREAMS = ("customers", "subscriptions", "invoices", "charges")

FIRST_NAMES = (
    "Jenny", "Liam", "Olivia", "Noah", "Emma", "Ava", "Lucas", "Mia", "Ethan", "Sofia",
    "Amelia", "Mateo", "Harper", "Leo", "Chloe", "Hugo", "Aria", "Felix", "Nora", "Omar",
    "Priya", "Kenji", "Lena", "Tomas", "Ines", "Yusuf", "Maya", "Arjun", "Elena", "Jonas",
)
LAST_NAMES = (
    "Rosen", "Smith", "Garcia", "Müller", "Dubois", "Nguyen", "Patel", "Kim", "Rossi",
    "Novak", "Silva", "Jensen", "Cohen", "Okafor", "Tanaka", "Schmidt", "Martin", "Lopez",
    "Brown", "Wilson", "Moreau", "Fischer", "Kowalski", "Haddad", "Singh", "Larsen",
)
DOMAINS = ("example.com", "example.org", "mail.example", "acme.test", "corp.example")
STREETS = (
    "Market Street", "Main Street", "High Street", "Oak Avenue", "Elm Road", "King's Road",
    "Hauptstraße", "Rue de Rivoli", "Queen Street West", "Mission Street", "Bahnhofstraße",
)
#: (country, currency, weight, [(city, state, postal_code)], phone prefix)
LOCALES = (
    ("US", "usd", 60, (("San Francisco", "CA", "94107"), ("New York", "NY", "10001"),
                       ("Austin", "TX", "78701"), ("Seattle", "WA", "98101"),
                       ("Chicago", "IL", "60601")), "+1415555"),
    ("GB", "gbp", 12, (("London", None, "EC1A 1BB"), ("Manchester", None, "M1 1AE")),
     "+4420794"),
    ("DE", "eur", 10, (("Berlin", None, "10115"), ("Munich", None, "80331")), "+4930123"),
    ("FR", "eur", 8, (("Paris", None, "75001"), ("Lyon", None, "69001")), "+3314567"),
    ("CA", "cad", 10, (("Toronto", "ON", "M5H 2N2"), ("Vancouver", "BC", "V6B 1A1")),
     "+1416555"),
)
CURRENCIES = ("usd", "gbp", "eur", "cad")
FX = {"usd": 1.0, "gbp": 0.8, "eur": 0.92, "cad": 1.35}
#: (product name, monthly amount in USD cents, also sold yearly)
PLANS = (
    ("Starter", 900, True), ("Basic", 1900, True), ("Pro", 4900, True),
    ("Business", 9900, True), ("Enterprise", 49900, True), ("Extra seat", 1200, False),
    ("Storage add-on", 500, False), ("Priority support", 2900, False),
    ("API calls (10k)", 1500, False), ("Analytics", 3900, False), ("SSO", 7900, False),
    ("Audit log", 2500, False), ("Sandbox", 1000, False), ("Custom domain", 800, False),
    ("Backups", 600, False),
)
ONE_OFF = (
    ("Onboarding", 25000), ("Setup fee", 9900), ("Consulting hour", 15000),
    ("Hardware token", 4500), ("Training session", 30000), ("Data migration", 75000),
)
CHARGE_DESCRIPTIONS = (
    None, None, "Order #{n}", "Payment for invoice", "Subscription creation",
    "Subscription update", "Top-up", "Gift card",
)
CARD_BRANDS = (("visa", "4242"), ("visa", "1881"), ("mastercard", "4444"),
               ("mastercard", "5100"), ("amex", "8431"), ("discover", "1117"))
DECLINES = (
    ("card_declined", "Your card was declined.", "generic_decline"),
    ("card_declined", "Your card has insufficient funds.", "insufficient_funds"),
    ("expired_card", "Your card has expired.", "expired_card"),
    ("incorrect_cvc", "Your card's security code is incorrect.", "incorrect_cvc"),
)
SUBSCRIPTION_STATUSES = (
    ("active", 60), ("canceled", 17), ("trialing", 8), ("past_due", 6), ("unpaid", 3),
    ("incomplete", 2), ("incomplete_expired", 2), ("paused", 2),
)
INVOICE_STATUSES = (("paid", 72), ("open", 12), ("draft", 6), ("void", 5), ("uncollectible", 5))
#: Stripe writes quantities in line descriptions with a multiplication sign.
TIMES = "\u00d7"
CANCEL_FEEDBACK = (None, "too_expensive", "missing_features", "switched_service", "unused")


def _weighted(pairs: tuple[tuple[str, int], ...]) -> tuple[list[str], list[int]]:
    return [p[0] for p in pairs], [p[1] for p in pairs]


def add_months(ts: int, months: int) -> int:
    """`ts` moved by whole calendar months, clamping the day like Stripe's billing anchor."""
    d = datetime.fromtimestamp(ts, tz=timezone.utc)
    m = d.month - 1 + months
    year, month = d.year + m // 12, m % 12 + 1
    day = min(d.day, calendar.monthrange(year, month)[1])
    return int(d.replace(year=year, month=month, day=day).timestamp())


def billing_period(anchor: int, interval: str, at: int) -> tuple[int, int]:
    """The billing period `[start, end)` around `at` for a subscription anchored at `anchor`."""
    step = 12 if interval == "year" else 1
    da = datetime.fromtimestamp(anchor, tz=timezone.utc)
    dt = datetime.fromtimestamp(max(at, anchor), tz=timezone.utc)
    k = max(0, ((dt.year - da.year) * 12 + dt.month - da.month) // step)
    start = add_months(anchor, k * step)
    while k > 0 and start > at:
        k -= 1
        start = add_months(anchor, k * step)
    end = add_months(anchor, (k + 1) * step)
    while end <= at:
        k += 1
        start, end = end, add_months(anchor, (k + 1) * step)
    return start, end


def period_end(start: int, interval: str, count: int = 1) -> int:
    """End of a billing period of `count` intervals starting at `start`."""
    if interval == "year":
        return add_months(start, 12 * count)
    if interval == "month":
        return add_months(start, count)
    return start + (7 if interval == "week" else 1) * DAY * count


def nth_period_start(anchor: int, interval: str, count: int, k: int) -> int:
    """Start of the `k`-th billing period of a subscription anchored at `anchor` (Stripe
    counts months from the anchor, clamping the day: Jan 31, Feb 28, Mar 31)."""
    if interval == "year":
        return add_months(anchor, 12 * count * k)
    if interval == "month":
        return add_months(anchor, count * k)
    return anchor + (7 if interval == "week" else 1) * DAY * count * k


def period_index(anchor: int, interval: str, count: int, at: int) -> int:
    """The `k` of the billing period that holds `at` (>= anchor)."""
    if interval in ("week", "day"):
        return (at - anchor) // ((7 if interval == "week" else 1) * DAY * count)
    step = 12 * count if interval == "year" else count
    da = datetime.fromtimestamp(anchor, tz=timezone.utc)
    dt = datetime.fromtimestamp(at, tz=timezone.utc)
    k = max(0, ((dt.year - da.year) * 12 + dt.month - da.month) // step)
    while k > 0 and nth_period_start(anchor, interval, count, k) > at:
        k -= 1
    while nth_period_start(anchor, interval, count, k + 1) <= at:
        k += 1
    return k


def coupon_of(item: dict) -> tuple[int, int] | None:
    """Varied pricing: a third of the items have an introductory coupon, (percent off, until):
    10-50% off the periods starting in their first three months (the item's id decides, so
    every invoice agrees)."""
    code = item["id"][-2:]
    if code[1] not in BASE62[:20]:
        return None
    return (10, 20, 25, 50)[BASE62.index(code[0]) % 4], add_months(item["created"], 3)


def format_amount(amount: int, currency: str) -> str:
    symbol = {"usd": "$", "gbp": "£", "eur": "€", "cad": "CA$"}[currency]
    return f"{symbol}{amount // 100}.{amount % 100:02d}"


def embedded_list(data: list[dict], url: str) -> dict:
    """Stripe's embedded sub-list: the first 10 items, `has_more`, `total_count`, `url`."""
    return {
        "object": "list",
        "data": data[:10],
        "has_more": len(data) > 10,
        "total_count": len(data),
        "url": url,
    }


def default_lines_per_invoice(rng: random.Random, index: int) -> int:
    """Most invoices have 1-3 lines; every 25th (starting with the first) has 40."""
    if index % 25 == 0:
        return 40
    return rng.choices((1, 2, 3), (50, 30, 20))[0]


def default_items_per_subscription(rng: random.Random, index: int) -> int:
    """Most subscriptions have 1-3 items; every 20th (starting with the first) has 12."""
    if index % 20 == 0:
        return 12
    return rng.choices((1, 2, 3), (70, 20, 10))[0]


@dataclass
class Dataset:
    """What `Generator.generate` produces, before it goes into the store."""

    account: dict
    customers: list[dict] = field(default_factory=list)
    subscriptions: list[dict] = field(default_factory=list)
    invoices: list[dict] = field(default_factory=list)
    charges: list[dict] = field(default_factory=list)
    #: All line items of each invoice, in Stripe's order (the invoice embeds the first 10).
    lines: dict[str, list[dict]] = field(default_factory=dict)
    #: All items of each subscription (the subscription embeds the first 10).
    items: dict[str, list[dict]] = field(default_factory=dict)


class Generator:
    """Builds Stripe objects from one seeded RNG. Also used for objects created later."""

    def __init__(self, seed: int = 1, clock: int = DEFAULT_CLOCK, *,
                 varied_pricing: bool = False) -> None:
        self.rng = random.Random(seed)
        self.clock = clock
        #: Off by default (the data other tests count on stays the same). On: weekly and
        #: quarterly prices beside monthly and yearly ones, and discounts on some
        #: subscription lines, so that revenue models have something to normalise.
        self.varied_pricing = bool(varied_pricing)
        #: varied_pricing="schedule": daily prices too, and every subscription of every
        #: interval billed period after period (trials, coupons, mid-period quantity changes
        #: with prorations, cancellations), each recorded in `schedules`: the emulator's own
        #: truth of which price and quantity was in force when, to check revenue models by.
        self.billing_schedule = varied_pricing == "schedule"
        #: subscription id -> {"anchor", "interval", "count", "created", "trial_end",
        #: "changes": [(at, {item id: (price, quantity)})], "coupons": {item id: (percent,
        #: until) or None}, "billed": index of the last period billed}.
        self.schedules: dict[str, dict] = {}
        self._seen: set[str] = set()
        rand = self.rand
        # Real ids carry an account-specific middle part: ch_1PgafuB7WZ01zgkWXYmPNZs8.
        self.tag = rand(10)
        self.account_id = f"acct_1{rand(5)}{self.tag}"
        self.account_name = "Emulated Goods " + rand(4).upper()
        self._locale_choices, self._locale_weights = list(LOCALES), [loc[2] for loc in LOCALES]
        self._build_catalogue()

    # -- ids -----------------------------------------------------------------------------

    def rand(self, n: int) -> str:
        return self.rng.randbytes(n).translate(_TO_BASE62).decode("ascii")

    def long_id(self, prefix: str, lead: str = "1", body: str | None = None) -> str:
        """`ch_3PgafuB7WZ01zgkWXYmPNZs8`-style id (24 characters after the prefix)."""
        while True:
            new = f"{prefix}_{lead}{body or self.rand(5)}{self.tag}{self.rand(8)}"
            if new not in self._seen:
                self._seen.add(new)
                return new

    def short_id(self, prefix: str) -> str:
        """`cus_QXg1o8vcGmoR32`-style id (14 characters after the prefix)."""
        while True:
            new = f"{prefix}_{self.rand(14)}"
            if new not in self._seen:
                self._seen.add(new)
                return new

    # -- catalogue -----------------------------------------------------------------------

    def _build_catalogue(self) -> None:
        created = self.clock - SPAN - 30 * DAY
        self.products: dict[str, str] = {}
        #: (currency, interval) -> recurring prices; currency -> one-off prices.
        self.recurring: dict[tuple[str, str], list[dict]] = {}
        self.one_off: dict[str, list[dict]] = {}
        self.product_names: dict[str, str] = {}
        for name, amount, yearly in PLANS:
            prod = self.short_id("prod")
            self.product_names[prod] = name
            for currency in CURRENCIES:
                unit = round(amount * FX[currency] / 100) * 100 or 100
                self.recurring.setdefault((currency, "month"), []).append(
                    self._price(prod, currency, unit, "month", created)
                )
                if yearly:
                    self.recurring.setdefault((currency, "year"), []).append(
                        self._price(prod, currency, unit * 10, "year", created)
                    )
                if yearly and self.varied_pricing:
                    # Weekly: a quarter of the monthly price; quarterly: 3 months less 5%.
                    self.recurring.setdefault((currency, "week"), []).append(
                        self._price(prod, currency, unit // 4, "week", created)
                    )
                    self.recurring.setdefault((currency, "quarter"), []).append(
                        self._price(prod, currency, unit * 3 * 95 // 100, "month", created,
                                    interval_count=3)
                    )
                if yearly and self.billing_schedule:
                    self.recurring.setdefault((currency, "day"), []).append(
                        self._price(prod, currency, max(unit // 25, 10), "day", created)
                    )
        for name, amount in ONE_OFF:
            prod = self.short_id("prod")
            self.product_names[prod] = name
            for currency in CURRENCIES:
                unit = round(amount * FX[currency] / 100) * 100
                self.one_off.setdefault(currency, []).append(
                    self._price(prod, currency, unit, None, created)
                )

    def _price(self, product: str, currency: str, unit: int, interval: str | None,
               created: int, *, interval_count: int = 1) -> dict:
        return {
            "id": self.long_id("price"),
            "object": "price",
            "active": True,
            "billing_scheme": "per_unit",
            "created": created,
            "currency": currency,
            "custom_unit_amount": None,
            "livemode": False,
            "lookup_key": None,
            "metadata": {},
            "nickname": None,
            "product": product,
            "recurring": None if interval is None else {
                "aggregate_usage": None,
                "interval": interval,
                "interval_count": interval_count,
                "meter": None,
                "usage_type": "licensed",
            },
            "tax_behavior": "unspecified",
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "one_time" if interval is None else "recurring",
            "unit_amount": unit,
            "unit_amount_decimal": str(unit),
        }

    def account(self) -> dict:
        return {
            "id": self.account_id,
            "object": "account",
            "business_profile": {
                "annual_revenue": None,
                "estimated_worker_count": None,
                "mcc": "5734",
                "name": self.account_name,
                "product_description": "Software subscriptions",
                "support_address": None,
                "support_email": "support@example.com",
                "support_phone": None,
                "support_url": None,
                "url": "https://example.com",
            },
            "business_type": "company",
            "capabilities": {"card_payments": "active", "transfers": "active"},
            "charges_enabled": True,
            "country": "US",
            "created": self.clock - SPAN - 60 * DAY,
            "default_currency": "usd",
            "details_submitted": True,
            "email": "billing@example.com",
            "metadata": {},
            "payouts_enabled": True,
            "settings": {
                "branding": {"icon": None, "logo": None, "primary_color": None,
                             "secondary_color": None},
                "card_payments": {"decline_on": {"avs_failure": False, "cvc_failure": False},
                                  "statement_descriptor_prefix": None,
                                  "statement_descriptor_prefix_kana": None,
                                  "statement_descriptor_prefix_kanji": None},
                "dashboard": {"display_name": self.account_name, "timezone": "Etc/UTC"},
                "payments": {"statement_descriptor": "EMULATED GOODS",
                             "statement_descriptor_kana": None,
                             "statement_descriptor_kanji": None},
            },
            "type": "standard",
        }

    # -- helpers -------------------------------------------------------------------------

    def created_time(self, previous: int | None = None) -> int:
        """A time in the two years before the clock, denser towards the clock (growth).

        One in 25 shares the previous object's second, so ties on `created` happen.
        """
        if previous is not None and self.rng.random() < 0.04:
            return previous
        return self.clock - 1 - int(SPAN * self.rng.random() ** 1.5)

    def _between(self, start: int, end: int) -> int:
        """A random time in [start, end]; `end` when the range is empty (never after end)."""
        return end if end <= start else self.rng.randint(start, end)

    def _address(self, locale: tuple) -> dict:
        city, state, postal = self.rng.choice(locale[3])
        return {
            "city": city,
            "country": locale[0],
            "line1": f"{self.rng.randint(1, 2999)} {self.rng.choice(STREETS)}",
            "line2": None if self.rng.random() < 0.8 else f"Suite {self.rng.randint(1, 900)}",
            "postal_code": postal,
            "state": state,
        }

    @staticmethod
    def _empty_address() -> dict:
        return {"city": None, "country": None, "line1": None, "line2": None,
                "postal_code": None, "state": None}

    def _metadata(self) -> dict[str, str]:
        r = self.rng.random()
        if r < 0.55:
            return {}
        if r < 0.85:
            return {"crm_id": f"CRM-{self.rng.randint(10000, 99999)}"}
        return {"crm_id": f"CRM-{self.rng.randint(10000, 99999)}",
                "segment": self.rng.choice(("smb", "mid_market", "enterprise")),
                "source": self.rng.choice(("web", "sales", "partner"))}

    # -- objects -------------------------------------------------------------------------

    def customer(self, created: int, **overrides: object) -> dict:
        rng = self.rng
        locale = rng.choices(self._locale_choices, self._locale_weights)[0]
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        ascii_last = last.replace("ü", "ue").lower()
        has_pm = rng.random() < 0.75
        obj: dict[str, Any] = {
            "id": self.short_id("cus"),
            "object": "customer",
            "address": self._address(locale) if rng.random() < 0.7 else None,
            "balance": 0 if rng.random() < 0.9 else -rng.randint(1, 50) * 100,
            "created": created,
            "currency": locale[1],
            "default_source": None,
            "delinquent": rng.random() < 0.05,
            "description": None if rng.random() < 0.7 else f"{first} from {locale[0]}",
            "discount": None,
            "email": f"{first.lower()}.{ascii_last}{rng.randint(1, 999)}@{rng.choice(DOMAINS)}",
            "invoice_prefix": self.rand(8).upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": self.long_id("pm") if has_pm else None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": self._metadata(),
            "name": f"{first} {last}",
            "next_invoice_sequence": 1,
            "phone": None if rng.random() < 0.5 else f"{locale[4]}{rng.randint(1000, 9999)}",
            "preferred_locales": [] if rng.random() < 0.8 else ["en"],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }
        obj.update(overrides)
        return obj

    def charge(self, created: int, customer: dict | None, *, amount: int | None = None,
               currency: str | None = None, invoice: str | None = None,
               payment_intent: str | None = None, status: str | None = None,
               history: bool = True, **overrides: object) -> dict:
        """A charge; with `history`, some succeeded charges come already (partly) refunded."""
        rng = self.rng
        status = status or rng.choices(("succeeded", "failed", "pending"), (86, 10, 4))[0]
        if currency is None:
            currency = customer["currency"] if customer else rng.choice(CURRENCIES)
        if amount is None:
            amount = rng.choice((500, 1000, 1999, 2500, 4900, 9900)) if rng.random() < 0.5 \
                else rng.randint(50, 50_000) * 10
        body = self.rand(5)
        charge_id = self.long_id("ch", "3", body)
        if payment_intent is None:
            payment_intent = self.long_id("pi", "3", body)
        brand, last4 = rng.choice(CARD_BRANDS)
        failed = status == "failed"
        refunded_amount = 0
        if status == "succeeded" and history:
            r = rng.random()
            if r < 0.03:
                refunded_amount = amount
            elif r < 0.07:
                refunded_amount = amount // 2
        address = customer.get("address") if customer else None
        decline = rng.choice(DECLINES) if failed else None
        description = rng.choice(CHARGE_DESCRIPTIONS)
        if description and "{n}" in description:
            description = description.format(n=rng.randint(1000, 99999))
        if invoice:
            description = "Payment for Invoice"
        obj: dict[str, Any] = {
            "id": charge_id,
            "object": "charge",
            "amount": amount,
            "amount_captured": 0 if failed else amount,
            "amount_refunded": refunded_amount,
            "application": None,
            "application_fee": None,
            "application_fee_amount": None,
            "balance_transaction": None if failed else self.long_id("txn", "3", body),
            "billing_details": {
                "address": dict(address) if address else self._empty_address(),
                "email": customer["email"] if customer else None,
                "name": customer["name"] if customer else None,
                "phone": None,
            },
            "calculated_statement_descriptor": "EMULATED GOODS",
            "captured": not failed,
            "created": created,
            "currency": currency,
            "customer": customer["id"] if customer else None,
            "description": description,
            "disputed": False,
            "failure_balance_transaction": None,
            "failure_code": decline[0] if decline else None,
            "failure_message": decline[1] if decline else None,
            "fraud_details": {},
            "invoice": invoice,
            "livemode": False,
            "metadata": self._metadata(),
            "on_behalf_of": None,
            "outcome": {
                "network_status": "declined_by_network" if failed else "approved_by_network",
                "reason": decline[2] if decline else None,
                "risk_level": "normal",
                "risk_score": rng.randint(0, 64),
                "seller_message": (
                    "The bank did not return any further details with this decline."
                    if failed else "Payment complete."
                ),
                "type": "issuer_declined" if failed else "authorized",
            },
            "paid": not failed,
            "payment_intent": payment_intent,
            "payment_method": self.long_id("pm"),
            "payment_method_details": {
                "card": {
                    "amount_authorized": None if failed else amount,
                    "brand": brand,
                    "checks": {
                        "address_line1_check": None,
                        "address_postal_code_check": "pass" if address else None,
                        "cvc_check": "fail" if decline and decline[0] == "incorrect_cvc"
                        else "pass",
                    },
                    "country": address["country"] if address else "US",
                    "exp_month": rng.randint(1, 12),
                    "exp_year": rng.randint(2026, 2031),
                    "fingerprint": self.rand(16),
                    "funding": rng.choice(("credit", "credit", "debit")),
                    "installments": None,
                    "last4": last4,
                    "mandate": None,
                    "network": brand,
                    "three_d_secure": None,
                    "wallet": None,
                },
                "type": "card",
            },
            "radar_options": {},
            "receipt_email": None,
            "receipt_number": None,
            "receipt_url": None if failed else
            f"https://pay.stripe.com/receipts/payment/{self.rand(32)}",
            "refunded": refunded_amount == amount and amount > 0,
            "review": None,
            "shipping": None,
            "source_transfer": None,
            "statement_descriptor": None,
            "statement_descriptor_suffix": None,
            "status": status,
            "transfer_data": None,
            "transfer_group": None,
        }
        obj.update(overrides)
        return obj

    def subscription(self, created: int, customer: dict, n_items: int = 1, *,
                     status: str | None = None, history: bool = True,
                     **overrides: object) -> tuple[dict, list[dict]]:
        """A subscription and all its items (the subscription embeds the first 10).

        With `history`, some active subscriptions had a trial or are set to cancel at the
        end of the period.
        """
        rng, clock = self.rng, self.clock
        currency = customer["currency"]
        monthly = self.recurring[(currency, "month")]
        yearly = self.recurring[(currency, "year")]
        interval = "year" if n_items <= len(yearly) and rng.random() < 0.15 else "month"
        pool = yearly if interval == "year" else monthly
        if self.billing_schedule and n_items <= len(yearly):
            interval = rng.choices(("month", "year", "week", "quarter", "day"),
                                   (40, 15, 15, 15, 15))[0]
            if interval == "day" and created < clock - 100 * DAY:
                interval = "week"  # a daily plan bills ~365 invoices a year: recent ones only
            pool = self.recurring[(currency, interval)]
        elif self.varied_pricing and n_items <= len(yearly) and rng.random() < 0.3:
            interval = rng.choice(("week", "quarter"))
            pool = self.recurring[(currency, interval)]
        prices = rng.sample(pool, min(n_items, len(pool)))
        while len(prices) < n_items:  # more items than distinct prices: reuse some
            prices.append(rng.choice(pool))
        status = status or rng.choices(*_weighted(SUBSCRIPTION_STATUSES))[0]
        trial_start: int | None = None
        trial_end: int | None = None
        canceled_at: int | None = None
        ended_at: int | None = None
        cancel_at: int | None = None
        if status == "trialing" or (status == "active" and history and rng.random() < 0.2):
            trial_start, trial_end = created, created + 14 * DAY
            if trial_end <= clock and status == "trialing":
                status = "active"
        if status == "incomplete" and created < clock - 23 * HOUR:
            status = "incomplete_expired"
        if status == "canceled":
            canceled_at = ended_at = self._between(created + HOUR, clock - 1)
        elif status == "incomplete_expired":
            ended_at = min(created + 23 * HOUR, clock - 1)
        anchor = trial_end if trial_end else created
        at = ended_at or clock
        if trial_end and at < trial_end:
            period = (created, trial_end)
        elif self.billing_schedule:
            recurring = prices[0]["recurring"]
            steps = (recurring["interval"], recurring["interval_count"])
            k = period_index(anchor, *steps, max(at, anchor))
            period = (nth_period_start(anchor, *steps, k), nth_period_start(anchor, *steps, k + 1))
        elif interval in ("week", "quarter"):
            recurring = prices[0]["recurring"]
            period = (anchor, period_end(anchor, recurring["interval"],
                                         recurring["interval_count"]))
            while period[1] <= at:
                period = (period[1], period_end(period[1], recurring["interval"],
                                                recurring["interval_count"]))
        else:
            period = billing_period(anchor, interval, at)
        cancel_at_period_end = status == "active" and history and rng.random() < 0.05
        if cancel_at_period_end:
            cancel_at = period[1]
            canceled_at = self._between(period[0], clock - 1)
        collection = "send_invoice" if rng.random() < 0.1 else "charge_automatically"
        sub_id = self.long_id("sub")
        items: list[dict[str, Any]] = [
            {
                "id": self.short_id("si"),
                "object": "subscription_item",
                "billing_thresholds": None,
                "created": created,
                "discounts": [],
                "metadata": {},
                "price": price,
                "quantity": 1 if rng.random() < 0.7 else rng.randint(2, 25),
                "subscription": sub_id,
                "tax_rates": [],
            }
            for price in prices
        ]
        obj: dict[str, Any] = {
            "id": sub_id,
            "object": "subscription",
            "application": None,
            "application_fee_percent": None,
            "automatic_tax": {"enabled": False, "liability": None},
            "billing_cycle_anchor": anchor,
            "billing_cycle_anchor_config": None,
            "billing_thresholds": None,
            "cancel_at": cancel_at,
            "cancel_at_period_end": cancel_at_period_end,
            "canceled_at": canceled_at,
            "cancellation_details": {
                "comment": None,
                "feedback": rng.choice(CANCEL_FEEDBACK) if canceled_at else None,
                "reason": "cancellation_requested" if canceled_at else None,
            },
            "collection_method": collection,
            "created": created,
            "currency": currency,
            "current_period_end": period[1],
            "current_period_start": period[0],
            "customer": customer["id"],
            "days_until_due": 30 if collection == "send_invoice" else None,
            "default_payment_method": (
                customer["invoice_settings"]["default_payment_method"]
                if collection == "charge_automatically" else None
            ),
            "default_source": None,
            "default_tax_rates": [],
            "description": None,
            "discount": None,
            "discounts": [],
            "ended_at": ended_at,
            "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
            "items": embedded_list(items, f"/v1/subscription_items?subscription={sub_id}"),
            "latest_invoice": None,
            "livemode": False,
            "metadata": self._metadata(),
            "next_pending_invoice_item_invoice": None,
            "on_behalf_of": None,
            "pause_collection": None,
            "payment_settings": {
                "payment_method_options": None,
                "payment_method_types": None,
                "save_default_payment_method": "off",
            },
            "pending_invoice_item_interval": None,
            "pending_setup_intent": None,
            "pending_update": None,
            "schedule": None,
            "start_date": created,
            "status": status,
            "test_clock": None,
            "transfer_data": None,
            "trial_end": trial_end,
            "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
            "trial_start": trial_start,
        }
        obj.update(overrides)
        return obj, items

    def invoice_item_line(self, invoice_id: str, currency: str, at: int) -> dict:
        rng = self.rng
        price = rng.choice(self.one_off[currency])
        quantity = 1 if rng.random() < 0.8 else rng.randint(2, 5)
        amount = price["unit_amount"] * quantity
        name = self.product_names[price["product"]]
        return {
            "id": self.long_id("il"),
            "object": "line_item",
            "amount": amount,
            "amount_excluding_tax": amount,
            "currency": currency,
            "description": name if quantity == 1 else f"{name} {TIMES} {quantity}",
            "discount_amounts": [],
            "discountable": True,
            "discounts": [],
            "invoice": invoice_id,
            "invoice_item": self.long_id("ii"),
            "livemode": False,
            "metadata": {},
            "period": {"end": at, "start": at},
            "price": price,
            "proration": False,
            "proration_details": {"credited_items": None},
            "quantity": quantity,
            "subscription": None,
            "tax_amounts": [],
            "tax_rates": [],
            "type": "invoiceitem",
            "unit_amount_excluding_tax": str(price["unit_amount"]),
        }

    def _subscription_line(self, invoice_id: str, item: dict, start: int,
                           end: int | None = None, *, trial: bool = False) -> dict:
        price = item["price"]
        interval = price["recurring"]["interval"]
        count = price["recurring"]["interval_count"]
        quantity = item["quantity"]
        amount = price["unit_amount"] * quantity
        name = self.product_names[price["product"]]
        unit_text = format_amount(price["unit_amount"], price["currency"])
        every = interval if count == 1 else f"every {count} {interval}s"
        discounts: list[str] = []
        discount_amounts: list[dict] = []
        # Varied pricing: a third of the items have an introductory coupon (10-50% off the
        # first three months; the item's id decides, so every invoice agrees). Stripe keeps
        # `amount` before discounts and lists what each discount took.
        coupon = coupon_of(item) if self.varied_pricing else None
        if trial:
            amount = 0  # Stripe bills a trial as a line of 0
        elif coupon and start < coupon[1]:
            discount = f"di_{item['id'][3:]}"
            discounts = [discount]
            off = amount * coupon[0] // 100
            discount_amounts = [{"amount": off, "discount": discount}]
        return {
            "id": self.long_id("il"),
            "object": "line_item",
            "amount": amount,
            "amount_excluding_tax": amount,
            "currency": price["currency"],
            "description": f"{quantity} {TIMES} {name} (at {unit_text} / {every})",
            "discount_amounts": discount_amounts,
            "discountable": True,
            "discounts": discounts,
            "invoice": invoice_id,
            "livemode": False,
            "metadata": {},
            "period": {"end": end or period_end(start, interval, count), "start": start},
            "price": price,
            "proration": False,
            "proration_details": {"credited_items": None},
            "quantity": quantity,
            "subscription": item["subscription"],
            "subscription_item": item["id"],
            "tax_amounts": [],
            "tax_rates": [],
            "type": "subscription",
            "unit_amount_excluding_tax": str(price["unit_amount"]),
        }

    def invoice(self, created: int, customer: dict, n_lines: int = 1, *,
                subscription: dict | None = None, sub_items: list[dict] | None = None,
                status: str | None = None, prebuilt: list[dict] | None = None,
                **overrides: object) -> tuple[dict, list[dict]]:
        """An invoice and all its lines (the invoice embeds the first 10); `prebuilt`: its
        lines, made by the caller."""
        rng, clock = self.rng, self.clock
        inv_id = self.long_id("in")
        currency = subscription["currency"] if subscription else customer["currency"]
        if subscription:
            collection = subscription["collection_method"]
        else:
            collection = "send_invoice" if rng.random() < 0.3 else "charge_automatically"
        lines = ([{**line, "invoice": inv_id} for line in prebuilt] if prebuilt is not None
                 else [self._subscription_line(inv_id, item, created)
                       for item in (sub_items or [])[:n_lines]])
        while len(lines) < n_lines:
            lines.append(self.invoice_item_line(inv_id, currency, created))
        subtotal = sum(line["amount"] for line in lines)
        discounted: dict[str, int] = {}
        for line in lines:
            for part in line["discount_amounts"]:
                discounted[part["discount"]] = discounted.get(part["discount"], 0) + part["amount"]
        total = subtotal - sum(discounted.values())
        status = status or rng.choices(*_weighted(INVOICE_STATUSES))[0]
        draft = status == "draft"
        final = min(created + HOUR, clock - 1)  # when it was finalized, unless a draft
        finalized_at = None if draft else final
        paid_at = voided_at = uncollectible_at = None
        if status == "paid":
            delay = rng.randint(0, 20 * DAY) if collection == "send_invoice" else 0
            paid_at = min(final + delay, clock - 1)
        elif status == "void":
            voided_at = self._between(final, min(final + 10 * DAY, clock - 1))
        elif status == "uncollectible":
            uncollectible_at = self._between(final, min(final + 40 * DAY, clock - 1))
        auto = collection == "charge_automatically"
        if subscription:
            reason = ("subscription_create" if created - subscription["created"] < DAY
                      else "subscription_cycle")
        else:
            reason = "manual"
        attempted = status == "paid" or (status in ("open", "uncollectible") and auto)
        next_attempt = None
        if auto and status == "draft":
            next_attempt = created + HOUR
        elif auto and status == "open":
            next_attempt = final + 3 * DAY
        address = customer.get("address")
        obj: dict[str, Any] = {
            "id": inv_id,
            "object": "invoice",
            "account_country": "US",
            "account_name": self.account_name,
            "account_tax_ids": None,
            "amount_due": total,
            "amount_paid": total if status == "paid" else 0,
            "amount_remaining": 0 if status == "paid" else total,
            "amount_shipping": 0,
            "application": None,
            "application_fee_amount": None,
            "attempt_count": 1 if attempted else 0,
            "attempted": attempted,
            "auto_advance": status in ("draft", "open"),
            "automatic_tax": {"enabled": False, "liability": None, "status": None},
            "billing_reason": reason,
            "charge": None,
            "collection_method": collection,
            "created": created,
            "currency": currency,
            "custom_fields": None,
            "customer": customer["id"],
            "customer_address": dict(address) if address else None,
            "customer_email": customer["email"],
            "customer_name": customer["name"],
            "customer_phone": customer["phone"],
            "customer_shipping": None,
            "customer_tax_exempt": "none",
            "customer_tax_ids": [],
            "default_payment_method": None,
            "default_source": None,
            "default_tax_rates": [],
            "description": None,
            "discount": None,
            "discounts": [],
            "due_date": created + 30 * DAY if collection == "send_invoice" else None,
            "effective_at": finalized_at,
            "ending_balance": None if draft else 0,
            "footer": None,
            "from_invoice": None,
            "hosted_invoice_url": None if draft else
            f"https://invoice.stripe.com/i/{self.account_id}/test_{self.rand(32)}",
            "invoice_pdf": None if draft else
            f"https://pay.stripe.com/invoice/{self.account_id}/test_{self.rand(32)}/pdf",
            "issuer": {"type": "self"},
            "last_finalization_error": None,
            "latest_revision": None,
            "lines": embedded_list(lines, f"/v1/invoices/{inv_id}/lines"),
            "livemode": False,
            "metadata": {},
            "next_payment_attempt": next_attempt,
            "number": None,
            "on_behalf_of": None,
            "paid": status == "paid",
            "paid_out_of_band": False,
            "payment_intent": None if draft or not auto else self.long_id("pi", "3"),
            "payment_settings": {
                "default_mandate": None,
                "payment_method_options": None,
                "payment_method_types": None,
            },
            "period_end": created,
            "period_start": created,
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "quote": None,
            "receipt_number": None,
            "rendering": {"amount_tax_display": None, "pdf": {"page_size": "auto"}},
            "shipping_cost": None,
            "shipping_details": None,
            "starting_balance": 0,
            "statement_descriptor": None,
            "status": status,
            "status_transitions": {
                "finalized_at": finalized_at,
                "marked_uncollectible_at": uncollectible_at,
                "paid_at": paid_at,
                "voided_at": voided_at,
            },
            "subscription": subscription["id"] if subscription else None,
            "subscription_details": {"metadata": {}} if subscription else None,
            "subtotal": subtotal,
            "subtotal_excluding_tax": subtotal,
            "tax": None,
            "test_clock": None,
            "total": total,
            "total_discount_amounts": [
                {"amount": amount, "discount": discount} for discount, amount in discounted.items()
            ],
            "total_excluding_tax": total,
            "total_tax_amounts": [],
            "transfer_data": None,
            "webhooks_delivered_at": None if draft else min(created + 60, clock - 1),
        }
        obj.update(overrides)
        return obj, lines

    # -- the initial data set --------------------------------------------------------------

    def _billing_history(self, data: Dataset, customers: dict[str, dict],
                         latest: dict[str, dict]) -> set[str]:
        """Varied pricing only: an invoice for every period of every monthly subscription,
        as Stripe bills them, so that MRR runs month after month. A quarter of those with
        several items gained their last item partway (an expansion)."""
        rng = self.rng
        billed_monthly: set[str] = set()
        for sub in data.subscriptions:
            items = data.items[sub["id"]]
            recurring = items[0]["price"]["recurring"]
            if (recurring["interval"], recurring["interval_count"]) != ("month", 1):
                continue
            if sub["status"] in ("incomplete", "incomplete_expired"):
                continue
            end = sub["ended_at"] or self.clock - 1
            anchor = sub["billing_cycle_anchor"]
            starts = []
            while (at := add_months(anchor, len(starts))) <= end:
                starts.append(at)
            added = rng.randrange(len(starts)) if len(items) > 1 and starts and \
                rng.random() < 0.25 else 0
            for index, at in enumerate(starts):
                billed = items if index >= added else items[:-1]
                last = index == len(starts) - 1
                status = ("open" if last and sub["status"] in ("past_due", "unpaid")
                          else rng.choices(("paid", "uncollectible", "void"), (94, 3, 3))[0])
                inv, lines = self.invoice(at, customers[sub["customer"]], len(billed),
                                          subscription=sub, sub_items=billed, status=status)
                data.invoices.append(inv)
                data.lines[inv["id"]] = lines
                latest[sub["id"]] = inv
            billed_monthly.add(sub["id"])
        return billed_monthly

    # -- the billing schedule (varied_pricing="schedule") ------------------------------------

    def state_at(self, schedule: dict, at: int) -> dict[str, tuple[dict, int]]:
        """item id -> (price, quantity) in force at `at` by the schedule."""
        state = schedule["changes"][0][1]
        for when, items in schedule["changes"]:
            if when <= at:
                state = items
        return state

    def schedule_invoice(self, schedule: dict, sub: dict, customer: dict, *,
                         items: list[dict], k: int, at: int,
                         status: str) -> tuple[dict, list[dict]]:
        """The invoice of period `k` of a scheduled subscription, created at `at`: each item
        at the price and quantity in force at the period's start."""
        steps = (schedule["anchor"], schedule["interval"], schedule["count"])
        start, end = nth_period_start(*steps, k), nth_period_start(*steps, k + 1)
        state = self.state_at(schedule, start)
        lines = [
            self._subscription_line("", {**item, "price": state[item["id"]][0],
                                         "quantity": state[item["id"]][1]}, start, end)
            for item in items
        ]
        return self.invoice(at, customer, len(lines), subscription=sub, status=status,
                            prebuilt=lines)

    def proration_invoice(self, schedule: dict, sub: dict, customer: dict, *, item: dict,
                          quantity: int, at: int) -> tuple[dict, list[dict]]:
        """`item` goes to `quantity` at `at`, mid-period: the schedule records it, and an
        invoice credits the unused time at the old quantity and bills the remaining time at
        the new one (two proration lines, as Stripe does); the next period bills it whole."""
        steps = (schedule["anchor"], schedule["interval"], schedule["count"])
        k = period_index(*steps, at)
        start, end = nth_period_start(*steps, k), nth_period_start(*steps, k + 1)
        state = dict(self.state_at(schedule, at))
        price, old = state[item["id"]]
        state[item["id"]] = (price, quantity)
        schedule["changes"].append((at, state))
        lines = []
        for sign, qty, what in ((-1, old, "Unused"), (1, quantity, "Remaining")):
            line = self._subscription_line("", {**item, "price": price, "quantity": qty}, at, end)
            amount = sign * round(price["unit_amount"] * qty * (end - at) / (end - start))
            name = self.product_names[price["product"]]
            line.update(amount=amount, amount_excluding_tax=amount, proration=True,
                        discount_amounts=[], discounts=[],
                        description=f"{what} time on {qty} {TIMES} {name}",
                        proration_details={"credited_items": None})
            lines.append(line)
        return self.invoice(at, customer, 2, subscription=sub, status="paid", prebuilt=lines)

    def _scheduled_history(self, data: Dataset, customers: dict[str, dict],
                           latest: dict[str, dict]) -> set[str]:
        """Every period of every subscription billed (a trial as a line of 0 first); a
        quarter of those billed 3+ periods change an item's quantity partway through one."""
        rng = self.rng
        # A customer won back: the first whose only subscription ended more than 70 days
        # ago subscribes again 40 days after (a reactivation in MRR's movements).
        owners: dict[str, int] = {}
        for sub in data.subscriptions:
            owners[sub["customer"]] = owners.get(sub["customer"], 0) + 1
        lapsed = [sub for sub in data.subscriptions
                  if sub["status"] == "canceled" and owners[sub["customer"]] == 1
                  and sub["ended_at"] < self.clock - 70 * DAY]
        if lapsed:
            back, items = self.subscription(lapsed[0]["ended_at"] + 40 * DAY,
                                            customers[lapsed[0]["customer"]], 1,
                                            status="active", history=False)
            data.subscriptions.append(back)
            data.items[back["id"]] = items
        for sub in data.subscriptions:
            items = data.items[sub["id"]]
            if sub["status"] in ("incomplete", "incomplete_expired"):
                continue
            recurring = items[0]["price"]["recurring"]
            schedule = {
                "anchor": sub["billing_cycle_anchor"],
                "interval": recurring["interval"],
                "count": recurring["interval_count"],
                "created": sub["created"],
                "trial_end": sub["trial_end"],
                "changes": [(sub["created"], {i["id"]: (i["price"], i["quantity"])
                                              for i in items})],
                "coupons": {i["id"]: coupon_of(i) for i in items},
                "billed": -1,
            }
            self.schedules[sub["id"]] = schedule
            customer = customers[sub["customer"]]
            steps = (schedule["anchor"], schedule["interval"], schedule["count"])
            end = sub["ended_at"] or self.clock - 1
            invoices = []
            if sub["trial_end"]:
                lines = [self._subscription_line("", item, sub["created"], sub["trial_end"],
                                                 trial=True) for item in items]
                invoices.append(self.invoice(sub["created"], customer, len(lines),
                                             subscription=sub, status="paid", prebuilt=lines))
            n = 0
            while nth_period_start(*steps, n) <= end:
                n += 1
            change = rng.randrange(1, n - 1) if n >= 3 and rng.random() < 0.25 else None
            for k in range(n):
                last = k == n - 1
                status = ("open" if last and sub["status"] in ("past_due", "unpaid")
                          else rng.choices(("paid", "uncollectible"), (97, 3))[0])
                invoices.append(self.schedule_invoice(
                    schedule, sub, customer, items=items, k=k, at=nth_period_start(*steps, k),
                    status=status))
                if k == change:
                    start, stop = nth_period_start(*steps, k), nth_period_start(*steps, k + 1)
                    at = start + (stop - start) * rng.randint(20, 80) // 100
                    item = items[0]
                    old = self.state_at(schedule, at)[item["id"]][1]
                    quantity = old + rng.randint(1, 3) if old == 1 or rng.random() < 0.6 \
                        else old - 1
                    invoices.append(self.proration_invoice(schedule, sub, customer, item=item,
                                                           quantity=quantity, at=at))
            schedule["billed"] = n - 1
            for item in items:  # the items as they are now
                item["quantity"] = self.state_at(schedule, end)[item["id"]][1]
            for inv, lines in invoices:
                data.invoices.append(inv)
                data.lines[inv["id"]] = lines
            if invoices:
                latest[sub["id"]] = max((inv for inv, _ in invoices),
                                        key=lambda inv: (inv["created"], inv["id"]))
        # Every subscription is billed here or never (incomplete ones): none at random.
        return {sub["id"] for sub in data.subscriptions}

    def generate(
        self,
        counts: dict[str, int],
        lines_per_invoice: Callable[[int], int] | None = None,
        items_per_subscription: Callable[[int], int] | None = None,
    ) -> Dataset:
        rng, clock = self.rng, self.clock
        data = Dataset(account=self.account())

        def lines_for(i: int) -> int:
            if lines_per_invoice is None:
                return default_lines_per_invoice(rng, i)
            return int(lines_per_invoice(i))

        def items_for(i: int) -> int:
            if items_per_subscription is None:
                return default_items_per_subscription(rng, i)
            return max(1, int(items_per_subscription(i)))

        # Customers; kept sorted by time so that later objects pick an existing one.
        previous = None
        for _ in range(counts.get("customers", 0)):
            previous = self.created_time(previous)
            data.customers.append(self.customer(previous))
        by_time = sorted(data.customers, key=lambda c: (c["created"], c["id"]))
        times = [c["created"] for c in by_time]

        def pick_customer(at: int) -> tuple[dict, int]:
            n = bisect_right(times, at)
            if n == 0:  # nobody existed yet: use the first customer, a little later
                first = by_time[0]
                return first, min(first["created"] + 60, clock - 1)
            return by_time[rng.randrange(n)], at

        if not by_time and any(counts.get(s, 0) for s in CORE_STREAMS[1:]):
            # Other objects need a customer to belong to.
            data.customers.append(self.customer(self.created_time()))
            by_time, times = data.customers[:], [data.customers[0]["created"]]

        previous = None
        for i in range(counts.get("subscriptions", 0)):
            previous = self.created_time(previous)
            customer, at = pick_customer(previous)
            sub, items = self.subscription(at, customer, items_for(i))
            data.subscriptions.append(sub)
            data.items[sub["id"]] = items
        customers_by_id = {c["id"]: c for c in data.customers}

        previous = None
        latest: dict[str, dict] = {}
        # Varied pricing: monthly subscriptions have their whole billing history already;
        # the counted invoices bill the others at random times.
        if self.billing_schedule:
            billed = self._scheduled_history(data, customers_by_id, latest)
        else:
            billed = (self._billing_history(data, customers_by_id, latest)
                      if self.varied_pricing else set())
        unbilled = [sub for sub in data.subscriptions if sub["id"] not in billed]
        for i in range(counts.get("invoices", 0)):
            n_lines = lines_for(i)
            if unbilled and rng.random() < 0.7:
                sub = rng.choice(unbilled)
                end = sub["ended_at"] or clock - 1
                at = sub["created"] if rng.random() < 0.3 else self._between(sub["created"], end)
                inv, lines = self.invoice(at, customers_by_id[sub["customer"]], n_lines,
                                          subscription=sub, sub_items=data.items[sub["id"]])
                current = latest.get(sub["id"])
                if current is None or (inv["created"], inv["id"]) > (
                    current["created"], current["id"]
                ):
                    latest[sub["id"]] = inv
            else:
                previous = self.created_time(previous)
                customer, at = pick_customer(previous)
                inv, lines = self.invoice(at, customer, n_lines)
            data.invoices.append(inv)
            data.lines[inv["id"]] = lines
        for sub in data.subscriptions:
            if sub["id"] in latest:
                sub["latest_invoice"] = latest[sub["id"]]["id"]

        # Invoice numbers, in time order per customer.
        for inv in sorted(data.invoices, key=lambda x: (x["created"], x["id"])):
            if inv["status"] != "draft":
                customer = customers_by_id[inv["customer"]]
                seq = customer["next_invoice_sequence"]
                inv["number"] = f"{customer['invoice_prefix']}-{seq:04d}"
                customer["next_invoice_sequence"] = seq + 1

        # Charges: up to half pay invoices, the rest stand alone.
        n_charges = counts.get("charges", 0)
        payable = [inv for inv in data.invoices
                   if inv["status"] == "paid" and inv["collection_method"] == "charge_automatically"
                   and inv["payment_intent"]]
        for inv in payable[: n_charges // 2]:
            charge = self.charge(
                inv["status_transitions"]["paid_at"], customers_by_id[inv["customer"]],
                amount=inv["amount_paid"], currency=inv["currency"], invoice=inv["id"],
                payment_intent=inv["payment_intent"], status="succeeded",
            )
            inv["charge"] = charge["id"]
            data.charges.append(charge)
        previous = None
        while len(data.charges) < n_charges:
            previous = self.created_time(previous)
            payer: dict | None = None
            at = previous
            if by_time and rng.random() < 0.85:
                payer, at = pick_customer(previous)
            data.charges.append(self.charge(at, payer))
        return data
