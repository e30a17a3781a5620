"""The dbt models (analytics/) against figures computed here from the emulator's objects.

`meltano run tap-stripe-connect <loader> dbt-<warehouse>:build` loads an emulated account
(or a platform with connected accounts) into DuckDB or PostgreSQL and builds the models
with their dbt tests. The expected `stripe_mrr_monthly`, `stripe_daily_overview` and
`stripe_subscriptions` rows are computed in Python from the emulator's own objects (never
from the warehouse), following the definitions in analytics/models/schema.yml. Then
charges are refunded, a subscription upgraded (and billed), one cancelled, an invoice
voided and a customer deleted; the incremental run and `dbt build` must move the tables
exactly as the Python figures move, and those figures must have moved as the changes say.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections import defaultdict
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from types import SimpleNamespace

import pytest

from tests import readme
from tests.conftest import ROOT
from tests.emulator import Emulator
from tests.emulator.connect import ConnectPlatform
from tests.emulator.generate import DAY, nth_period_start, period_index
from tests.emulator.versions import ENDIVE

# The pipeline tests' fixtures (one Meltano installation per session, the PostgreSQL server).
from tests.test_pipelines import (  # noqa: F401
    PLUGIN_PYTHON,
    Pipeline,
    dump_tables,
    meltano,
    postgres,
)

# What the models read; the other streams are not needed here.
STREAMS = (
    "balance_transactions",
    "charges",
    "refunds",
    "disputes",
    "customers",
    "invoices",
    "invoice_line_items",
    "subscriptions",
    "subscription_items",
    "prices",
)
OBJECTS = 40
# A month of one interval of a price, as a fraction of the interval.
PER_MONTH = {
    "month": Fraction(1),
    "year": Fraction(1, 12),
    "week": Fraction(52, 12),
    "day": Fraction(365, 12),
}
COUNTED = ("charge", "refund", "dispute")


def utc_day(ts: int) -> date:
    return datetime.fromtimestamp(ts, tz=timezone.utc).date()


def month_of(ts: int) -> date:
    return utc_day(ts).replace(day=1)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def cents(value: Fraction, places: int) -> Decimal:
    """Rounded like the models: to `places` decimals of the smallest currency unit."""
    return Decimal(round(value * 10**places)) / 10**places


# -- the expected figures, from the emulator's objects ---------------------------------------


def data_through(emu: Emulator) -> int:
    """The latest time an account's data covers: its latest invoice or subscription change
    (the instant the latest, incomplete month's MRR is measured at)."""
    times = [i["created"] for i in emu.objects("invoices")]
    for sub in emu.objects("subscriptions"):
        times += [t for t in (sub["created"], sub["canceled_at"], sub["ended_at"]) if t]
    return max(times)


def month_ends(emu: Emulator) -> dict[date, int]:
    """Month -> the instant its MRR is measured at: the last second of the month (UTC), or
    for the latest month the latest time the data covers."""
    through = data_through(emu)
    month = month_of(min(s["created"] for s in emu.store.gen.schedules.values()))
    ends = {}
    while month <= month_of(through):
        following = next_month(month)
        ends[month] = min(
            int(datetime(following.year, following.month, 1, tzinfo=timezone.utc).timestamp())
            - 1,
            through,
        )
        month = following
    return ends


def scheduled_item_mrr(emu: Emulator, at: int, *, contract: bool = False) -> dict[tuple, Fraction]:
    """(currency, customer, subscription, item) -> MRR at the instant `at`, from the emulator's
    own schedule (never from invoice lines): the price and quantity in force when the
    billing period holding `at` began, less the item's coupon if that period started while
    the coupon ran; nothing before the subscription started, during its trial or once it
    ended. `contract`: price x quantity instead, before the coupon."""
    gen = emu.store.gen
    subs = {s["id"]: s for s in emu.objects("subscriptions")}
    mrr: dict[tuple, Fraction] = {}
    for sub_id, schedule in gen.schedules.items():
        sub = subs[sub_id]
        if at < schedule["created"] or (sub["ended_at"] is not None and sub["ended_at"] <= at):
            continue
        if schedule["trial_end"] and at < schedule["trial_end"]:
            continue  # a trial is worth 0
        steps = (schedule["anchor"], schedule["interval"], schedule["count"])
        k = period_index(*steps, at)
        assert k <= schedule["billed"], f"{sub_id}: the period holding {at} was never billed"
        start = nth_period_start(*steps, k)
        for item_id, (price, quantity) in gen.state_at(schedule, start).items():
            amount = price["unit_amount"] * quantity
            if contract:  # price x quantity, before the coupon
                mrr[(price["currency"], sub["customer"], sub_id, item_id)] = (
                    Fraction(amount) * PER_MONTH[schedule["interval"]] / schedule["count"]
                )
                continue
            coupon = schedule["coupons"][item_id]
            if coupon and start < coupon[1]:
                amount -= amount * coupon[0] // 100
            key = (price["currency"], sub["customer"], sub_id, item_id)
            mrr[key] = (
                Fraction(amount) * PER_MONTH[schedule["interval"]] / schedule["count"]
            )
    return mrr


def half_up(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), ROUND_HALF_UP)


def expected_customer_mrr(accounts: dict[str, Emulator]) -> dict[tuple, dict[date, Decimal]]:
    """(account, currency, customer) -> month -> MRR above 0, from the schedules."""
    sums: dict[tuple, dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for account, emu in accounts.items():
        for month, at in month_ends(emu).items():
            for (currency, customer, _s, _i), mrr in scheduled_item_mrr(emu, at).items():
                sums[(account, currency, customer)][month] += cents(mrr, 6)
    return {
        key: {m: half_up(v) for m, v in months.items() if half_up(v) > 0}
        for key, months in sums.items()
        if any(half_up(v) > 0 for v in months.values())
    }


def latest_months(accounts: dict[str, Emulator]) -> dict[str, date]:
    return {account: month_of(data_through(emu)) for account, emu in accounts.items()}


def expected_mrr_monthly(accounts: dict[str, Emulator]) -> dict[tuple, dict]:
    """(account, currency, month) -> the row of stripe_mrr_monthly."""
    customers = expected_customer_mrr(accounts)
    latest = latest_months(accounts)
    last: dict[tuple, date] = {}
    first: dict[tuple, date] = {}
    for (account, currency, _c), months in customers.items():
        key = (account, currency)
        last[key] = latest[account]
        first[key] = min(first.get(key, date.max), *months)
    zero = Decimal(0)
    rows: dict[tuple, dict] = {}
    for key, start in first.items():
        month = start
        while month <= last[key]:
            rows[(*key, month)] = {
                "mrr": zero,
                "arr": zero,
                "new_mrr": zero,
                "expansion_mrr": zero,
                "contraction_mrr": zero,
                "churned_mrr": zero,
                "reactivation_mrr": zero,
                "paying_customers": 0,
                "new_customers": 0,
                "churned_customers": 0,
            }
            month = next_month(month)
    for (account, currency, _c), months in customers.items():
        month, previous, seen = min(months), zero, False
        while month <= last[(account, currency)]:
            mrr = months.get(month, zero)
            row = rows[(account, currency, month)]
            row["mrr"] += mrr
            row["arr"] += 12 * mrr
            if mrr > 0:
                row["paying_customers"] += 1
            if previous == 0 and mrr > 0:
                if seen:
                    row["reactivation_mrr"] += mrr
                else:
                    row["new_mrr"] += mrr
                    row["new_customers"] += 1
            elif previous > 0 and mrr > previous:
                row["expansion_mrr"] += mrr - previous
            elif previous > 0 and 0 < mrr < previous:
                row["contraction_mrr"] += previous - mrr
            elif previous > 0 and mrr == 0:
                row["churned_mrr"] += previous
                row["churned_customers"] += 1
            seen = seen or mrr > 0
            previous = mrr
            month = next_month(month)
    before: dict[tuple, Decimal] = {}
    for key in sorted(rows):
        account, currency, month = key
        rows[key]["previous_mrr"] = before.get((account, currency), zero)
        before[(account, currency)] = rows[key]["mrr"]
    return rows


def expected_item_mrr(accounts: dict[str, Emulator]) -> dict[tuple, dict]:
    """(account, subscription item, month) -> the item's billed and contract MRR, where
    billed MRR is above 0."""
    rows = {}
    for account, emu in accounts.items():
        for month, at in month_ends(emu).items():
            contract = scheduled_item_mrr(emu, at, contract=True)
            for key, mrr in scheduled_item_mrr(emu, at).items():
                if mrr > 0:
                    rows[(account, key[3], month)] = {
                        "billed_mrr": cents(mrr, 6),
                        "contract_mrr": cents(contract[key], 6),
                    }
    return rows


def expected_invoices(accounts: dict[str, Emulator]) -> dict[tuple, dict]:
    rows = {}
    for account, emu in accounts.items():
        lines: dict[str, int] = defaultdict(int)
        for line in emu.objects("invoice_line_items"):
            lines[line["invoice"]] += 1
        for inv in emu.objects("invoices"):
            rows[(account, inv["id"])] = {
                "status": inv["status"],
                "customer_id": inv["customer"],
                "subscription_id": inv["subscription"],
                "amount_due": inv["amount_due"],
                "amount_paid": inv["amount_paid"],
                "amount_remaining": inv["amount_remaining"],
                "discount_amount": sum(d["amount"] for d in inv["total_discount_amounts"]),
                "line_count": lines[inv["id"]],
            }
    return rows


def expected_daily_overview(accounts: dict[str, Emulator]) -> dict[tuple, dict]:
    """(account, currency, day) -> the row of stripe_daily_overview."""
    rows: dict[tuple, dict] = defaultdict(lambda: dict.fromkeys(DAILY_FIELDS, 0))
    for account, emu in accounts.items():
        refunds = {r["id"] for r in emu.objects("refunds")}
        disputes = {d["id"] for d in emu.objects("disputes")}
        for txn in emu.objects("balance_transactions"):
            if txn["type"] in ("charge", "payment"):
                kind = "charge"
            elif txn["source"] in refunds:
                kind = "refund"
            elif txn["source"] in disputes:
                kind = "dispute"
            else:
                continue
            row = rows[(account, txn["currency"], utc_day(txn["created"]))]
            row["gross_volume" if kind == "charge" else f"{kind}s"] += (
                txn["amount"] if kind == "charge" else -txn["amount"]
            )
            row["fees"] += txn["fee"]
            row["net"] += txn["amount"] - txn["fee"]
        for charge in emu.objects("charges"):
            if charge["status"] == "succeeded":
                rows[(account, charge["currency"], utc_day(charge["created"]))][
                    "successful_charges"
                ] += 1
        for customer in emu.objects("customers"):
            key = (account, customer["currency"] or "xxx", utc_day(customer["created"]))
            rows[key]["new_customers"] += 1
    return dict(rows)


def expected_subscriptions(accounts: dict[str, Emulator]) -> dict[tuple, dict]:
    rows = {}
    for account, emu in accounts.items():
        ends = month_ends(emu)
        now: dict[str, Decimal] = defaultdict(Decimal)
        for (_c, _cu, sub_id, _i), mrr in scheduled_item_mrr(emu, ends[max(ends)]).items():
            now[sub_id] += cents(mrr, 6)
        items = defaultdict(list)
        for item in emu.objects("subscription_items"):
            items[item["subscription"]].append(item)
        for sub in emu.objects("subscriptions"):
            monthly = Decimal(0)
            for item in items[sub["id"]]:
                price = item["price"]
                recurring = price["recurring"]
                monthly += cents(
                    Fraction((price["unit_amount"] or 0) * item["quantity"])
                    * PER_MONTH[recurring["interval"]]
                    / recurring["interval_count"],
                    6,
                )
            active = sub["status"] in ("active", "past_due")
            rows[(account, sub["id"])] = {
                "status": sub["status"],
                "customer_id": sub["customer"],
                "item_count": len(items[sub["id"]]),
                "monthly_amount": round(monthly, 2) if active else Decimal(0),
                "mrr": half_up(now[sub["id"]]),
            }
    return rows


def expected_customers(accounts: dict[str, Emulator]) -> dict[tuple, dict]:
    """(account, customer) -> the row of stripe_customers, for live customers."""
    by_customer = expected_customer_mrr(accounts)
    latest = latest_months(accounts)
    rows = {}
    for account, emu in accounts.items():
        charges = {c["id"]: c for c in emu.objects("charges")}
        refunds = {r["id"]: r["charge"] for r in emu.objects("refunds")}
        disputes = {d["id"]: d["charge"] for d in emu.objects("disputes")}
        paid = defaultdict(list)
        for charge in charges.values():
            if charge["status"] == "succeeded" and charge["customer"]:
                paid[charge["customer"]].append(charge["created"])
        net = defaultdict(int)
        for txn in emu.objects("balance_transactions"):
            charge = (
                txn["source"]
                if txn["type"] in ("charge", "payment")
                else refunds.get(txn["source"]) or disputes.get(txn["source"])
            )
            if charge in charges and charges[charge]["customer"]:
                net[charges[charge]["customer"]] += txn["net"]
        subscriptions = defaultdict(int)
        for sub in emu.objects("subscriptions"):
            subscriptions[sub["customer"]] += 1
        for customer in emu.objects("customers"):
            cid = customer["id"]
            # MRR in the customer's own currency, in the latest month of the account
            mrr = by_customer.get((account, customer["currency"], cid), {}).get(
                latest[account], Decimal(0)
            )
            by_currency = ",".join(
                f"{currency}:{months[latest[account]]:.2f}"
                for (a, currency, c), months in sorted(by_customer.items())
                if (a, c) == (account, cid) and latest[account] in months
            )
            times = paid.get(cid)
            rows[(account, cid)] = {
                "first_payment_at": iso(min(times)) if times else None,
                "last_payment_at": iso(max(times)) if times else None,
                "lifetime_net": net[cid],
                "current_mrr": mrr,
                "current_mrr_by_currency": by_currency or None,
                "subscriptions": subscriptions[cid],
            }
    return rows


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the warehouse ---------------------------------------------------------------------------


def number(value) -> Decimal:
    return Decimal(str(value))


def loaded(tables: dict, model: str, key: tuple[str, ...], fields) -> dict[tuple, dict]:
    rows = {}
    for row in tables[model]:
        k = tuple(row[c] for c in key)
        assert k not in rows, f"{model}: {k} twice"
        rows[k] = {
            f: number(row[f]) if isinstance(row[f], (int, float)) else row[f] for f in fields
        }
    return rows


def as_loaded(expected: dict[tuple, dict]) -> dict[tuple, dict]:
    """Expected rows with the keys and numbers as the dump gives them."""
    return {
        tuple(str(part) for part in key): {
            f: number(v) if isinstance(v, (int, Decimal)) else v for f, v in row.items()
        }
        for key, row in expected.items()
    }


def assert_same(model: str, expected: dict, got: dict) -> None:
    missing = sorted(expected.keys() - got.keys())
    extra = sorted(got.keys() - expected.keys())
    assert not missing and not extra, (  # noqa: PT018
        f"{model}: {len(missing)} rows missing (e.g. {missing[:2]}), {len(extra)} extra "
        f"(e.g. {extra[:2]})"
    )
    wrong = {k: (expected[k], got[k]) for k in expected if expected[k] != got[k]}
    assert not wrong, f"{model}: {len(wrong)} rows differ, e.g. {next(iter(wrong.items()))}"


MRR_FIELDS = (
    "mrr",
    "arr",
    "previous_mrr",
    "new_mrr",
    "expansion_mrr",
    "contraction_mrr",
    "churned_mrr",
    "reactivation_mrr",
    "paying_customers",
    "new_customers",
    "churned_customers",
)
DAILY_FIELDS = (
    "gross_volume",
    "refunds",
    "disputes",
    "fees",
    "net",
    "successful_charges",
    "new_customers",
)
SUBSCRIPTION_FIELDS = ("status", "customer_id", "item_count", "monthly_amount", "mrr")
CUSTOMER_FIELDS = (
    "first_payment_at",
    "last_payment_at",
    "lifetime_net",
    "current_mrr",
    "current_mrr_by_currency",
    "subscriptions",
)


INVOICE_FIELDS = (
    "status",
    "customer_id",
    "subscription_id",
    "amount_due",
    "amount_paid",
    "amount_remaining",
    "discount_amount",
    "line_count",
)


def assert_models_match(tables: dict, accounts: dict[str, Emulator]) -> dict:
    """The models equal the figures of the emulator's schedules and objects; returns them."""
    item_rows = {
        k: v
        for k, v in loaded(
            tables,
            "stripe_subscription_item_mrr",
            ("account_id", "subscription_item_id", "month"),
            ("billed_mrr", "contract_mrr"),
        ).items()
        if v["billed_mrr"] > 0
    }
    assert_same("stripe_subscription_item_mrr", as_loaded(expected_item_mrr(accounts)), item_rows)
    assert_same(
        "stripe_invoices",
        as_loaded(expected_invoices(accounts)),
        loaded(tables, "stripe_invoices", ("account_id", "invoice_id"), INVOICE_FIELDS),
    )
    expected = {
        "stripe_mrr_monthly": expected_mrr_monthly(accounts),
        "stripe_daily_overview": expected_daily_overview(accounts),
        "stripe_subscriptions": expected_subscriptions(accounts),
        "stripe_customers": expected_customers(accounts),
    }
    assert_same(
        "stripe_mrr_monthly",
        as_loaded(expected["stripe_mrr_monthly"]),
        loaded(tables, "stripe_mrr_monthly", ("account_id", "currency", "month"), MRR_FIELDS),
    )
    assert_same(
        "stripe_daily_overview",
        as_loaded(expected["stripe_daily_overview"]),
        loaded(tables, "stripe_daily_overview", ("account_id", "currency", "day"), DAILY_FIELDS),
    )
    assert_same(
        "stripe_subscriptions",
        as_loaded(expected["stripe_subscriptions"]),
        loaded(
            tables, "stripe_subscriptions", ("account_id", "subscription_id"), SUBSCRIPTION_FIELDS
        ),
    )
    assert_same(
        "stripe_customers",
        as_loaded(expected["stripe_customers"]),
        loaded(tables, "stripe_customers", ("account_id", "customer_id"), CUSTOMER_FIELDS),
    )
    assert set(accounts) == {row["account_id"] for row in tables["stripe_mrr_monthly"]}
    return expected


def assert_data_is_varied(expected: dict, accounts: dict[str, Emulator]) -> None:
    """The data exercises what the MRR definition is about (else the test proves little)."""
    schedules = [s for emu in accounts.values() for s in emu.store.gen.schedules.values()]
    intervals = {(s["interval"], s["count"]) for s in schedules}
    assert {("month", 1), ("year", 1), ("week", 1), ("month", 3), ("day", 1)} <= intervals
    assert sum(1 for s in schedules if len(s["changes"]) > 1) >= 2, "no mid-period change"
    assert sum(1 for s in schedules if s["trial_end"]) >= 1, "no trial"
    assert sum(1 for s in schedules for c in s["coupons"].values() if c) >= 3, "few coupons"
    lines = [line for emu in accounts.values() for line in emu.objects("invoice_line_items")]
    assert sum(1 for line in lines if line["proration"]) >= 4
    ended = [s for emu in accounts.values() for s in emu.objects("subscriptions")
             if s["ended_at"] and s["id"] in emu.store.gen.schedules]
    assert len(ended) >= 2, "no cancellations"
    rows = expected["stripe_mrr_monthly"].values()
    assert len({month for (_a, _c, month) in expected["stripe_mrr_monthly"]}) >= 12
    for movement in (
        "new_mrr",
        "expansion_mrr",
        "contraction_mrr",
        "churned_mrr",
        "reactivation_mrr",
    ):
        assert sum(row[movement] for row in rows) > 0, f"no {movement} in the data"


# -- the changes -----------------------------------------------------------------------------


def change(emu: Emulator) -> dict:
    """Three days on: refunds, a mid-period upgrade and downgrade (invoiced as prorations),
    a cancellation, a void and a deletion; then 20 days of Stripe's billing runs (renewals
    bill the new quantities)."""
    emu.advance(3 * DAY)
    charges = [
        c
        for c in emu.objects("charges")
        if c["status"] == "succeeded" and not c["amount_refunded"] and not c["disputed"]
    ]
    full, partial = charges[0], charges[1]
    emu.create("refunds", charge=full["id"])
    emu.create("refunds", charge=partial["id"], amount=partial["amount"] // 3)

    schedules = emu.store.gen.schedules
    now = emu.store.now()

    def renews_soon(sub: dict) -> bool:
        schedule = schedules[sub["id"]]
        steps = (schedule["anchor"], schedule["interval"], schedule["count"])
        return nth_period_start(*steps, schedule["billed"] + 1) < now + 15 * DAY

    live = [
        s
        for s in emu.objects("subscriptions")
        if s["id"] in schedules and s["ended_at"] is None and s["status"] == "active"
        and (not s["trial_end"] or s["trial_end"] < now)
    ]
    upgraded = next(s for s in live if renews_soon(s))
    first_item = {s["id"]: emu.store.items[s["id"]][0] for s in live}
    downgraded = next(
        s for s in live
        if s["customer"] != upgraded["customer"] and first_item[s["id"]]["quantity"] > 1
    )
    cancelled = next(
        s for s in live if s["customer"] not in (upgraded["customer"], downgraded["customer"])
    )
    invoice = emu.store.change_scheduled_quantity(
        upgraded["id"], first_item[upgraded["id"]]["quantity"] + 2
    )
    emu.store.change_scheduled_quantity(
        downgraded["id"], first_item[downgraded["id"]]["quantity"] - 1
    )
    emu.cancel_subscription(cancelled["id"])

    # An open invoice of no subscription voided (a subscription's would end its MRR early,
    # which the schedule does not record).
    voidable = [
        i for i in emu.objects("invoices") if i["status"] == "open" and not i["subscription"]
    ]
    voided = voidable[0] if voidable else None
    if voided:
        emu.update("invoices", voided["id"], {"status": "void"})

    busy = {
        upgraded["customer"],
        downgraded["customer"],
        cancelled["customer"],
        full["customer"],
        partial["customer"],
        voided and voided["customer"],
    }
    deleted = next(c for c in emu.objects("customers") if c["id"] not in busy)
    emu.delete("customers", deleted["id"])
    emu.advance(20 * DAY)
    renewals = emu.store.renew()
    assert renewals
    return {
        "refunded": full["amount"] + partial["amount"] // 3,
        "upgraded": upgraded,
        "downgraded": downgraded,
        "invoice": invoice,
        "cancelled": cancelled["id"],
        "voided": voided,
        "deleted": deleted,
    }


def assert_changes_moved_figures(before: dict, after: dict, changes: dict[str, dict]) -> None:
    """The Python figures moved as the changes say (so matching them means something)."""
    daily_b, daily_a = before["stripe_daily_overview"], after["stripe_daily_overview"]
    refunded = sum(c["refunded"] for c in changes.values())
    assert (
        sum(r["refunds"] for r in daily_a.values()) - sum(r["refunds"] for r in daily_b.values())
        == refunded
    )
    assert sum(r["new_customers"] for r in daily_a.values()) == sum(
        r["new_customers"] for r in daily_b.values()
    ) - len(changes)
    subs_a = after["stripe_subscriptions"]
    mrr_a = after["stripe_mrr_monthly"]
    for account, c in changes.items():
        gone = (account, c["deleted"]["id"])
        assert gone in before["stripe_customers"]
        assert gone not in after["stripe_customers"]
        assert subs_a[(account, c["cancelled"])]["status"] == "canceled"
        assert subs_a[(account, c["cancelled"])]["monthly_amount"] == 0
        assert subs_a[(account, c["cancelled"])]["mrr"] == 0
        up_before = before["stripe_subscriptions"][(account, c["upgraded"]["id"])]
        up_after = subs_a[(account, c["upgraded"]["id"])]
        assert up_after["monthly_amount"] > up_before["monthly_amount"]
        assert up_after["mrr"] > up_before["mrr"]  # renewed at the new quantity
        down_before = before["stripe_subscriptions"][(account, c["downgraded"]["id"])]
        down_after = subs_a[(account, c["downgraded"]["id"])]
        assert down_after["monthly_amount"] < down_before["monthly_amount"]
        # The upgrade's invoice bills this month: the month is in the report, with MRR.
        month = month_of(c["invoice"]["created"])
        assert mrr_a[(account, c["invoice"]["currency"], month)]["mrr"] > 0
    assert before["stripe_mrr_monthly"] != mrr_a


def assert_show_mrr(database: str, expected: dict[tuple, dict], tmp_path) -> None:
    """The quick start's last step: MRR by month as a table, and a PNG chart."""
    image = tmp_path / "mrr.png"
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "show_mrr.sh"), database, "--image", str(image)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    totals: dict[tuple, Decimal] = defaultdict(Decimal)
    for (account, currency, _month), row in expected.items():
        totals[(account, currency)] += row["mrr"]
    account, currency = max(totals, key=totals.get)
    months = sorted(m for (a, c, m) in expected if (a, c) == (account, currency))
    assert f"{account} in {currency.upper()}" in proc.stdout
    shown = [
        line.split()
        for line in proc.stdout.splitlines()
        if line.startswith("  20") and len(line.split()) == 8
    ]
    assert [line[0] for line in shown] == [f"{m:%Y-%m}" for m in months[-12:]]
    for line, month in zip(shown, months[-12:], strict=True):
        row = expected[(account, currency, month)]
        figures = [Decimal(v.replace(",", "")) for v in line[1:7]]
        assert figures == [
            (row[f] / 100).quantize(Decimal("0.01"), ROUND_HALF_UP)
            for f in (
                "mrr",
                "new_mrr",
                "expansion_mrr",
                "reactivation_mrr",
                "contraction_mrr",
                "churned_mrr",
            )
        ], line
        assert int(line[7]) == row["paying_customers"]
    # The latest month is incomplete (the data ends before its last second) and is said so.
    assert f"  ({months[-1]:%Y-%m} is measured at " in proc.stdout
    assert f"Chart: {image}" in proc.stdout
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert image.stat().st_size > 20_000


def assert_customer_account_stands_for_customer(analytics: Analytics, accounts: dict) -> None:
    """Billing objects whose customer is an account (`customer_account`, API 2025-12-15 and
    later, `customer` empty) count for that customer: with half the invoices, charges and
    subscriptions moved to `customer_account`, `dbt build` gives the same models. Then the
    tables are put back."""
    database = analytics.pipeline.env["DBT_DUCKDB_PATH"]
    tables = ("invoices", "charges", "subscriptions")

    def sql(statements: list[str]) -> None:
        script = (
            "import duckdb, sys; con = duckdb.connect(sys.argv[1])\n"
            "for statement in sys.argv[2:]: con.execute(statement)\ncon.close()"
        )
        subprocess.run(
            [str(PLUGIN_PYTHON["target-duckdb"]), "-c", script, database, *statements],
            check=True,
            timeout=120,
        )

    sql([
        statement
        for table in tables
        for statement in (
            f"ALTER TABLE stripe.{table} ADD COLUMN customer_account VARCHAR",
            f"UPDATE stripe.{table} SET customer_account = customer, customer = NULL "  # noqa: S608 (our table names)
            "WHERE hash(id) % 2 = 0",
        )
    ])
    moved = dump_tables(analytics.loader, database, "stripe")
    assert any(row["customer_account"] for row in moved["invoices"])
    proc = analytics.pipeline.meltano_cmd("run", "dbt-duckdb:build", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert_models_match(analytics.tables(), accounts)
    sql([
        statement
        for table in tables
        for statement in (
            f"UPDATE stripe.{table} SET customer = customer_account WHERE customer IS NULL",  # noqa: S608 (our table names)
            f"ALTER TABLE stripe.{table} DROP COLUMN customer_account",
        )
    ])


# -- the pipelines ---------------------------------------------------------------------------


class Analytics:
    """`meltano run tap-stripe-connect <loader> dbt-<warehouse>:build` and the models' rows."""

    def __init__(self, meltano_path, warehouse: str, source, env: dict, tmp_path) -> None:
        self.warehouse = warehouse
        self.loader = f"target-{warehouse}"
        self.pipeline = Pipeline(meltano_path, self.loader, source, env, tmp_path)
        self.pipeline.env["TAP_STRIPE_CONNECT__SELECT"] = json.dumps([f"{s}.*" for s in STREAMS])

    def readme_command(self) -> list[str]:
        """The README's pipeline for this warehouse, as `meltano run` arguments."""
        command = readme.command(f".venv-meltano/bin/meltano run tap-stripe-connect {self.loader} ")
        if self.warehouse == "postgres":
            # The README sets the connection on the line before; the test's env has the same names.
            (settings,) = [c for c in readme.commands() if c.startswith("DBT_POSTGRES_HOST=")]
            names = {word.split("=")[0] for word in settings.split() if "=" in word}
            assert names <= set(self.pipeline.env), names - set(self.pipeline.env)
        return command.split()[1:]

    def run(self) -> str:
        p = self.pipeline
        p.runs += 1
        run, *blocks = self.readme_command()
        assert run == "run"
        assert blocks == ["tap-stripe-connect", self.loader, f"dbt-{self.warehouse}:build"], blocks
        proc = p.meltano_cmd(
            "run",
            "--state-id-suffix",
            p.suffix,
            *blocks,
            timeout=900,
        )
        log = p.logs / f"meltano-run-{p.runs}.log"
        log.write_text(proc.stdout + proc.stderr)
        assert proc.returncode == 0, f"meltano run failed (log {log}):\n{proc.stderr[-6000:]}"
        assert "Completed successfully" in proc.stderr, f"dbt build did not pass (log {log})"
        return proc.stderr

    def tables(self) -> dict:
        env = self.pipeline.env
        if self.warehouse == "duckdb":
            return dump_tables(self.loader, env["DBT_DUCKDB_PATH"], env["DBT_DUCKDB_SCHEMA"])
        return dump_tables(self.loader, env["DBT_POSTGRES_SCHEMA"])

    def close(self) -> None:
        self.pipeline.clear_state()
        if self.warehouse == "postgres":
            for schema in (
                self.pipeline.env["DBT_POSTGRES_SOURCE_SCHEMA"],
                self.pipeline.env["DBT_POSTGRES_SCHEMA"],
            ):
                dump_tables(self.loader, schema, "--drop")


def warehouse_env(warehouse: str, request, tmp_path) -> dict[str, str]:
    if warehouse == "duckdb":
        database = str(tmp_path / "warehouse.duckdb")
        return {
            "TARGET_DUCKDB_PATH": database,
            "DBT_DUCKDB_PATH": database,
            "DBT_DUCKDB_SCHEMA": "analytics",
        }
    pg = request.getfixturevalue("postgres")
    schema = f"stripe_{uuid.uuid4().hex[:10]}"
    return {
        **pg,
        # Sessions far from UTC (libpq's PGTZ): months and days must still be UTC ones.
        "PGTZ": "Pacific/Kiritimati",
        "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": schema,
        "DBT_POSTGRES_HOST": pg["TARGET_POSTGRES_HOST"],
        "DBT_POSTGRES_PORT": pg["TARGET_POSTGRES_PORT"],
        "DBT_POSTGRES_USER": pg["TARGET_POSTGRES_USER"],
        "DBT_POSTGRES_PASSWORD": pg["TARGET_POSTGRES_PASSWORD"],
        "DBT_POSTGRES_DBNAME": pg["TARGET_POSTGRES_DATABASE"],
        "DBT_POSTGRES_SOURCE_SCHEMA": schema,
        "DBT_POSTGRES_SCHEMA": f"{schema}_analytics",
    }


@pytest.mark.parametrize("warehouse", ["duckdb", "postgres"])
@pytest.mark.parametrize(
    ("accounts", "api_version"),
    [("single", None), ("single", ENDIVE), ("platform", ENDIVE)],
    ids=["single", "single-endive", "platform-endive"],
)
def test_models_match_python_figures_then_move_with_changes(
    warehouse, accounts, api_version, request, tmp_path
):
    meltano_path = request.getfixturevalue("meltano")  # installed once per session
    env = warehouse_env(warehouse, request, tmp_path)
    if api_version:
        env["TAP_STRIPE_CONNECT_API_VERSION"] = api_version
    if accounts == "single":
        context = Emulator(objects=OBJECTS, seed=16, varied_pricing="schedule")
    else:
        context = ConnectPlatform(
            accounts=3, objects=OBJECTS // 2, seed=163, varied_pricing="schedule"
        )
    with context as started:
        if accounts == "single":
            emulators = {started.account_id: started}
            source = started
        else:
            emulators = dict(started.accounts)
            source = SimpleNamespace(api_key=started.platform_key, url=started.url)
            env["TAP_STRIPE_CONNECT_ACCOUNT_IDS"] = json.dumps(started.account_ids)
        analytics = Analytics(meltano_path, warehouse, source, env, tmp_path)
        try:
            analytics.run()
            before = assert_models_match(analytics.tables(), emulators)
            assert_data_is_varied(before, emulators)
            if warehouse == "duckdb" and accounts == "single" and not api_version:
                assert_show_mrr(env["DBT_DUCKDB_PATH"], before["stripe_mrr_monthly"], tmp_path)
                assert_customer_account_stands_for_customer(analytics, emulators)

            changes = {account: change(emu) for account, emu in emulators.items()}
            analytics.run()
            after = assert_models_match(analytics.tables(), emulators)
            assert_changes_moved_figures(before, after, changes)
        finally:
            analytics.close()


def test_dbt_duckdb_reads_target_duckdb_files(request):
    """dbt-duckdb's duckdb is target-duckdb's 1.2.x: a newer one writes files 1.2 cannot read."""
    request.getfixturevalue("meltano")  # the plugins, installed once per session
    versions = {}
    for plugin in ("loaders/target-duckdb", "utilities/dbt-duckdb"):
        proc = subprocess.run(
            [
                str(ROOT / ".meltano" / plugin / "venv/bin/python"),
                "-c",
                "import duckdb; print(duckdb.__version__)",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        versions[plugin] = proc.stdout.strip()
    assert versions["utilities/dbt-duckdb"] == versions["loaders/target-duckdb"], versions
    assert versions["utilities/dbt-duckdb"].startswith("1.2."), versions
