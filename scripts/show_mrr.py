"""MRR by month and its movements, from the dbt models in a DuckDB file (analytics/).

    .venv-analytics/bin/python scripts/show_mrr.py warehouse.duckdb [--image mrr.png]

Prints, for the account and currency with the most MRR, the last months of
`stripe_mrr_monthly` as a table (in currency units) and the latest MRR of the others,
then draws MRR and its movements into a PNG and prints its path. MRR is as defined in
docs/analytics.md: measured at each month's last second (UTC), the latest month at the
latest time the data covers (`stripe_mrr_months`), which the table says. scripts/quickstart.sh runs
it after `meltano run dbt-duckdb:build`; scripts/show_mrr.sh sets up its virtualenv.
"""

from __future__ import annotations

import argparse
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import duckdb

MOVEMENTS = ("new_mrr", "expansion_mrr", "reactivation_mrr", "contraction_mrr", "churned_mrr")
COLUMNS = ("month", "mrr", *MOVEMENTS, "paying_customers")
CENT = Decimal("0.01")
HEADERS = ("month", "MRR", "new", "expansion", "reactivation", "contraction", "churned", "paying")


def load(path: Path, schema: str) -> dict[tuple[str, str], list[dict]]:
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            f"SELECT account_id, currency, {', '.join(COLUMNS)} "  # noqa: S608 (names are ours)
            f'FROM "{schema}".stripe_mrr_monthly ORDER BY account_id, currency, month'
        ).fetchall()
    series: dict[tuple[str, str], list[dict]] = {}
    for account, currency, *values in rows:
        row = dict(zip(COLUMNS, values, strict=True))
        for name in ("mrr", *MOVEMENTS):
            # cents -> currency units, rounded half up as accountants do
            row[name] = (Decimal(row[name]) / 100).quantize(CENT, ROUND_HALF_UP)
        series.setdefault((account, currency), []).append(row)
    return series


def measured_at(path: Path, schema: str, account: str, month) -> str | None:
    """When the MRR of `account`'s `month` was measured, if before the month's end."""
    with duckdb.connect(str(path), read_only=True) as con:
        found = con.execute(
            f'SELECT measured_at, complete FROM "{schema}".stripe_mrr_months '  # noqa: S608
            "WHERE account_id = ? AND month = ?",
            [account, month],
        ).fetchone()
    if found is None or found[1]:
        return None
    return f"{found[0]:%Y-%m-%d %H:%M:%S}"


def table(rows: list[dict]) -> str:
    cells = [HEADERS] + [
        (
            row["month"].strftime("%Y-%m"),
            *(f"{row[c]:,.2f}" for c in ("mrr", *MOVEMENTS)),
            str(row["paying_customers"]),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADERS))]
    lines = [
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join("  " + line for line in lines)


def chart(rows: list[dict], title: str, currency: str, image: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    months = [row["month"] for row in rows]
    x = range(len(months))
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    mrr = [float(row["mrr"]) for row in rows]
    top.plot(x, mrr, marker="o", color="#635bff", linewidth=2)
    top.fill_between(x, mrr, color="#635bff", alpha=0.12)
    top.set_ylabel(f"MRR ({currency.upper()})")
    top.set_title(title)
    top.grid(axis="y", alpha=0.3)
    colours = {
        "new_mrr": "#2e7d32",
        "expansion_mrr": "#66bb6a",
        "reactivation_mrr": "#26a69a",
        "contraction_mrr": "#ffa726",
        "churned_mrr": "#e53935",
    }
    up = [0.0] * len(rows)
    down = [0.0] * len(rows)
    for name in MOVEMENTS:
        sign = -1 if name in ("contraction_mrr", "churned_mrr") else 1
        values = [sign * float(row[name]) for row in rows]
        base = down if sign < 0 else up
        bottom.bar(
            x, values, bottom=base, color=colours[name], label=name.removesuffix("_mrr"), width=0.8
        )
        for i, value in enumerate(values):
            base[i] += value
    bottom.axhline(0, color="black", linewidth=0.8)
    bottom.set_ylabel(f"movements ({currency.upper()})")
    bottom.legend(ncol=5, fontsize=8, loc="lower left")
    bottom.grid(axis="y", alpha=0.3)
    step = max(1, len(months) // 12)
    bottom.set_xticks(list(x)[::step])
    bottom.set_xticklabels([m.strftime("%Y-%m") for m in months][::step], rotation=45, ha="right")
    for axis in (top, bottom):
        axis.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    fig.tight_layout()
    fig.savefig(image, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("duckdb", type=Path, help="DuckDB file the models were built in")
    parser.add_argument("--schema", default="analytics", help="schema of the models")
    parser.add_argument("--image", type=Path, help="PNG to write (default: beside the file)")
    parser.add_argument("--months", type=int, default=12, help="months in the table")
    args = parser.parse_args(argv)

    series = load(args.duckdb, args.schema)
    if not series:
        print("stripe_mrr_monthly is empty: no subscription invoices yet.")
        return 0
    (account, currency), rows = max(
        series.items(), key=lambda item: sum(row["mrr"] for row in item[1])
    )
    print(
        f"MRR by month, {account} in {currency.upper()} "
        f"(amounts in {currency.upper()}; last {min(args.months, len(rows))} of "
        f"{len(rows)} months):"
    )
    print(table(rows[-args.months :]))
    partial = measured_at(args.duckdb, args.schema, account, rows[-1]["month"])
    if partial:
        print(
            f"  ({rows[-1]['month']:%Y-%m} is measured at {partial} UTC, the latest time the "
            "data covers, not at the month's end.)"
        )
    others = [(key, rows_[-1]) for key, rows_ in series.items() if key != (account, currency)]
    if others:
        print("Latest MRR of the other accounts and currencies:")
        for (other, other_currency), last in sorted(others):
            print(
                f"  {other} {other_currency.upper()}: {last['mrr']:,.2f} in "
                f"{last['month']:%Y-%m} ({last['paying_customers']} paying)"
            )
    image = args.image or args.duckdb.with_name(args.duckdb.stem + "-mrr.png")
    chart(rows, f"MRR and its movements, {account} ({currency.upper()})", currency, image)
    print(f"Chart: {image.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
