"""Stripe's balance reports as streams, and the warehouse reconciled with them (issue 23).

Through the CLI against the emulator's Reports API: the report streams load what the
emulator's own balance transactions say, in minor units (zero-decimal currencies too), and
an incremental run asks only for the new days; runs that stay pending, fail or are refused
end with one clear line. Through the pipeline (`meltano run tap-stripe-connect target-duckdb
dbt-duckdb:build`): a complete load reconciles every month; rows lost from the warehouse,
or a balance transaction Stripe's report has and the API never listed, make exactly those
months `differs` and the build fail, naming them.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from tests.catalogs import catalog_selecting
from tests.conftest import emulator_config, run_tap
from tests.emulator import Emulator

DAY = 86_400
REPORTS = ("report_balance_activity", "report_balance_summary")


def day(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def emu():
    with Emulator(objects=12, seed=23) as started:
        yield started


def reports_only(emu: Emulator, tmp_path) -> dict:
    return catalog_selecting(emu, tmp_path, {name: () for name in REPORTS})


def test_report_streams_load_stripes_report_in_minor_units_then_only_new_days(emu, tmp_path):
    catalog = reports_only(emu, tmp_path)
    first = run_tap(config=emulator_config(emu), catalog=catalog, tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    # Ground truth: the emulator's balance transactions, automatic payouts aside (the
    # summary has those), each with its net in minor units as the API lists it.
    truth = {t["id"]: t for t in emu.objects("balance_transactions")}
    activity = {r["id"]: r for r in first.records("report_balance_activity")}
    assert activity.keys() == {i for i, t in truth.items() if t["reporting_category"] != "payout"}
    for txn_id, row in activity.items():
        txn = truth[txn_id]
        assert (row["gross"], row["fee"], row["net"]) == (txn["amount"], txn["fee"], txn["net"])
        assert row["created"] == iso(txn["created"]) and row["currency"] == txn["currency"]
        assert row["account_id"] == emu.account_id
    payouts = sum(t["net"] for t in truth.values() if t["reporting_category"] == "payout")
    summary = first.records("report_balance_summary")
    assert sum(r["net_amount"] for r in summary if r["category"] == "payouts") == payouts
    bookmark = first.last_state["bookmarks"]["report_balance_activity"]["replication_key_value"]
    assert bookmark == iso(emu.clock // DAY * DAY)  # the end of the last whole day reported

    # Days pass; a charge in yen (no minor units) and one in dollars.
    emu.advance(4 * DAY)
    yen = emu.create("charges", currency="jpy", amount=4800)
    dollars = emu.create("charges", currency="usd", amount=2599)
    emu.advance(DAY)
    emu.reports.created_runs.clear()
    second = run_tap(config=emulator_config(emu), catalog=catalog, state=first.last_state,
                     tmp_path=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    new = {t["id"]: t for t in emu.objects("balance_transactions") if t["id"] not in truth}
    assert {t["source"] for t in new.values()} == {yen["id"], dollars["id"]}
    rows = {r["id"]: r for r in second.records("report_balance_activity")}
    assert rows.keys() == new.keys()
    for txn_id, row in rows.items():
        assert (row["gross"], row["fee"], row["net"]) == (
            new[txn_id]["amount"], new[txn_id]["fee"], new[txn_id]["net"])
    # Only the new days were asked for, one run each per stream.
    intervals = {(p["interval_start"], p["interval_end"]) for _, p in emu.reports.created_runs}
    start = int(datetime.fromisoformat(bookmark.replace("Z", "+00:00")).timestamp())
    assert intervals == {(start + n * DAY, start + (n + 1) * DAY) for n in range(5)}
    assert len(emu.reports.created_runs) == 10


@pytest.mark.parametrize("case", ["pending", "failed", "refused"])
def test_a_report_run_that_stays_pending_fails_or_is_refused_ends_with_one_line(
        emu, case, tmp_path):
    catalog = catalog_selecting(emu, tmp_path, {"report_balance_activity": ()})
    if case == "pending":
        emu.reports.pending_polls = None
    elif case == "failed":
        emu.reports.fail_runs = True
    else:
        emu.reports.refuse = (400, "This report type is only available in live mode", None)
    run = run_tap(config=emulator_config(emu, report_timeout_seconds=1), catalog=catalog,
                  tmp_path=tmp_path)
    assert run.returncode != 0
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("tap-stripe-connect: error:")]
    assert len(errors) == 1, run.stderr[-3000:]
    line = errors[0]
    assert "stream 'report_balance_activity'" in line, line
    assert "Traceback" not in run.stderr
    if case == "pending":
        assert "was still pending after 1s (setting 'report_timeout_seconds')" in line, line
        assert "run the tap again later" in line
    elif case == "failed":
        assert "failed for stream 'report_balance_activity': The report could not be computed" \
            in line, line
    else:
        assert "(400): This report type is only available in live mode" in line, line
    assert not run.records("report_balance_activity")
