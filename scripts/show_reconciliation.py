"""One line: whether the warehouse equals Stripe's balance reports (dbt's stripe_reconciliation).

    python scripts/show_reconciliation.py warehouse.duckdb

Prints `Reconciled with Stripe's balance reports: N months, 0 differences`, or the months
that differ (account, month and currencies), and exits 1 then. Run with a Python that has
duckdb 1.2.x (target-duckdb's: .meltano/loaders/target-duckdb/venv/bin/python).
"""

from __future__ import annotations

import sys

import duckdb

SCHEMA = "analytics"


def main(path: str) -> int:
    con = duckdb.connect(path, read_only=True)
    found = con.execute(
        "select count(*) from information_schema.tables "
        "where table_schema = ? and table_name = 'stripe_reconciliation'",
        [SCHEMA],
    ).fetchone()
    if not found or not found[0]:
        print("Reconciled with Stripe's balance reports: not built (run dbt-duckdb:build).")
        return 1
    table = f"{SCHEMA}.stripe_reconciliation"
    query = "select account_id, strftime(month, '%Y-%m') as month, currency, status from "
    query += table + " order by account_id, month, currency"
    rows = con.execute(query).fetchall()
    months = {(account, month) for account, month, _, _ in rows}
    differs: dict[tuple[str, str], list[str]] = {}
    for account, month, currency, status in rows:
        if status != "reconciled":
            differs.setdefault((account, month), []).append(currency)
    accounts = {account for account, _ in months}
    who = f" of {len(accounts)} accounts" if len(accounts) > 1 else ""
    line = f"Reconciled with Stripe's balance reports: {len(months)} months{who}, "
    if not differs:
        print(line + "0 differences")
        return 0
    named = "; ".join(
        f"{month} {'/'.join(currencies)}" + (f" ({account})" if who else "")
        for (account, month), currencies in sorted(differs.items())
    )
    print(line + f"{len(differs)} differ: {named} (see analytics.stripe_reconciliation)")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
