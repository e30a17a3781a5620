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
import subprocess
from datetime import datetime, timezone

import pytest

from tests.catalogs import catalog_selecting
from tests.conftest import emulator_config, run_tap
from tests.emulator import Emulator
from tests.emulator.connect import ConnectPlatform

# The pipeline tests' fixtures (one Meltano installation per session, the PostgreSQL server).
from tests.test_pipelines import (  # noqa: F401
    PLUGIN_PYTHON,
    Pipeline,
    dump_tables,
    meltano,
    postgres,
)

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
    return catalog_selecting(emu, tmp_path, dict.fromkeys(REPORTS, ()))


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
        assert row["created"] == iso(txn["created"])
        assert row["currency"] == txn["currency"]
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


def test_the_payout_report_lists_what_each_automatic_payout_settled(emu, tmp_path):
    catalog = catalog_selecting(emu, tmp_path, {"report_payout_reconciliation": ()})
    run = run_tap(config=emulator_config(emu), catalog=catalog, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    # Ground truth: the balance transactions the emulator's automatic payouts settled, for
    # the payouts arrived before Stripe's last reported day.
    until = emu.clock // DAY * DAY
    truth = {txn_id: payout for txn_id, payout in emu.store.settled().items()
             if payout["arrival_date"] < until}
    rows = {r["id"]: r for r in run.records("report_payout_reconciliation")}
    assert {i: r["automatic_payout_id"] for i, r in rows.items()} == {
        i: p["id"] for i, p in truth.items()}
    assert truth  # at least one payout settled something
    txns = {t["id"]: t for t in emu.objects("balance_transactions")}
    for payout in {p["id"]: p for p in truth.values()}.values():
        mine = [r for r in rows.values() if r["automatic_payout_id"] == payout["id"]]
        assert sum(r["net"] for r in mine) == payout["amount"]
        assert all(r["net"] == txns[r["id"]]["net"] for r in mine)
        assert {r["automatic_payout_effective_at"] for r in mine} == {iso(payout["arrival_date"])}


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


# -- the pipeline: load, reconcile, lose rows ------------------------------------------------

# What the models read (the dbt project builds them all), and the report streams.
MODEL_STREAMS = ("balance_transactions", "charges", "refunds", "disputes", "customers",
                 "invoices", "invoice_line_items", "subscriptions", "subscription_items",
                 "prices", "payouts", *REPORTS, "report_payout_reconciliation")


def month(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-01")


def expected_months(accounts: dict[str, Emulator], until: int) -> set[tuple[str, str, str]]:
    """(account, currency, month) from each currency's first balance transaction to the last
    reported month, from the emulators' own balance transactions."""
    keys = set()
    for account, emu in accounts.items():
        first: dict[str, int] = {}
        for txn in emu.objects("balance_transactions"):
            if txn["created"] < until:
                first[txn["currency"]] = min(first.get(txn["currency"], until), txn["created"])
        for currency, start in first.items():
            cursor = datetime.fromtimestamp(start, tz=timezone.utc).replace(day=1, hour=0,
                                                                            minute=0, second=0)
            while cursor.timestamp() < until:
                keys.add((account, currency, cursor.strftime("%Y-%m-01")))
                cursor = cursor.replace(year=cursor.year + cursor.month // 12,
                                        month=cursor.month % 12 + 1)
    return keys


class Reconciled:
    """`meltano run tap-stripe-connect <loader> dbt-<warehouse>:build`, and its
    stripe_reconciliation rows."""

    def __init__(self, meltano_path, warehouse: str, source, env: dict, tmp_path) -> None:
        self.warehouse = warehouse
        self.loader = f"target-{warehouse}"
        self.pipeline = Pipeline(meltano_path, self.loader, source, env, tmp_path)
        self.pipeline.env["TAP_STRIPE_CONNECT__SELECT"] = json.dumps(
            [f"{s}.*" for s in MODEL_STREAMS])
        self.pipeline.env["TAP_STRIPE_CONNECT_MAX_RETRY_SECONDS"] = "10"

    def run(self, *blocks: str) -> tuple[int, str]:
        p = self.pipeline
        p.runs += 1
        blocks = blocks or ("tap-stripe-connect", self.loader, f"dbt-{self.warehouse}:build")
        proc = p.meltano_cmd("run", "--state-id-suffix", p.suffix, *blocks, timeout=900)
        (p.logs / f"meltano-run-{p.runs}.log").write_text(proc.stdout + proc.stderr)
        return proc.returncode, proc.stderr

    def sql(self, statement: str) -> None:
        env = self.pipeline.env
        if self.warehouse == "duckdb":
            script = ("import duckdb, sys; duckdb.connect(sys.argv[1]).execute(sys.argv[2])")
            args = [env["DBT_DUCKDB_PATH"], statement]
        else:
            script = ("import psycopg, sys\nwith psycopg.connect(autocommit=True) as c: "
                      "c.execute(sys.argv[1])")
            args = [statement]
        proc = subprocess.run([str(PLUGIN_PYTHON[self.loader]), "-c", script, *args],
                              capture_output=True, text=True, env=env, timeout=120,
                              check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]

    @property
    def source_schema(self) -> str:
        env = self.pipeline.env
        return "stripe" if self.warehouse == "duckdb" else env["DBT_POSTGRES_SOURCE_SCHEMA"]

    def models(self) -> dict[str, list[dict]]:
        env = self.pipeline.env
        if self.warehouse == "duckdb":
            return dump_tables(self.loader, env["DBT_DUCKDB_PATH"], env["DBT_DUCKDB_SCHEMA"])
        return dump_tables(self.loader, env["DBT_POSTGRES_SCHEMA"])

    def rows(self) -> dict[tuple[str, str, str], dict]:
        return {(r["account_id"], r["currency"], str(r["month"])[:10]): r
                for r in self.models()["stripe_reconciliation"]}

    def payouts(self) -> dict[str, dict]:
        return {r["payout_id"]: r for r in self.models()["stripe_payouts"]}

    def close(self) -> None:
        self.pipeline.clear_state()
        if self.warehouse == "postgres":
            for schema in (self.pipeline.env["DBT_POSTGRES_SOURCE_SCHEMA"],
                           self.pipeline.env["DBT_POSTGRES_SCHEMA"]):
                dump_tables(self.loader, schema, "--drop")


def differing(rows: dict) -> dict:
    return {key: row for key, row in rows.items() if row["status"] != "reconciled"}


def compared_payouts(emu: Emulator, until: int) -> dict[str, dict]:
    """The emulator's paid automatic payouts that arrived before Stripe's last reported day."""
    return {p["id"]: p for p in emu.objects("payouts")
            if p["automatic"] and p["status"] == "paid" and p["arrival_date"] < until}


def test_a_complete_load_reconciles_and_three_lost_rows_fail_the_build_naming_their_months(
        request, tmp_path):
    from tests.test_analytics import warehouse_env

    meltano_path = request.getfixturevalue("meltano")
    env = warehouse_env("duckdb", request, tmp_path)
    with Emulator(objects=30, seed=31) as emu:
        reconciled = Reconciled(meltano_path, "duckdb", emu, env, tmp_path)
        try:
            code, log = reconciled.run()
            assert code == 0, log[-6000:]
            rows = reconciled.rows()
            until = emu.clock // DAY * DAY  # Stripe's data_available_end: today's start
            assert set(rows) == expected_months({emu.account_id: emu}, until)
            assert not differing(rows), differing(rows)
            assert len({key[2] for key in rows}) >= 20  # two years of months
            assert all(r["balance_check"] == "holds" for r in rows.values())
            assert all(r["warehouse_balance_matches"] for r in rows.values())
            # Every paid automatic payout Stripe has reported equals the net of the balance
            # transactions the emulator's ground truth says it settled; the rest are not
            # compared.
            compared = compared_payouts(emu, until)
            settled_by = {i: p["id"] for i, p in emu.store.settled().items()}
            payouts = reconciled.payouts()
            assert payouts.keys() == {p["id"] for p in emu.objects("payouts")}
            assert compared
            for payout_id, row in payouts.items():
                if payout_id not in compared:
                    assert row["status"] == "not_compared", row
                    continue
                assert row["status"] == "reconciled", row
                mine = [i for i, p in settled_by.items() if p == payout_id]
                assert (row["settled_count"], row["difference"]) == (len(mine), 0), row
                assert row["settled_net"] == compared[payout_id]["amount"]

            # A silent loss: three balance transactions of three months leave the warehouse
            # (where a month has one, a transaction a compared payout settled).
            by_month: dict[str, dict] = {}
            for txn in sorted(emu.objects("balance_transactions"),
                              key=lambda t: (settled_by.get(t["id"]) not in compared, t["id"])):
                if txn["reporting_category"] != "payout":
                    by_month.setdefault(month(txn["created"]), txn)
            lost = [by_month[m] for m in sorted(by_month)[1:-1:7]][:3]
            assert len({month(t["created"]) for t in lost}) == 3
            ids = ", ".join(f"'{t['id']}'" for t in lost)
            reconciled.sql(f"delete from stripe.balance_transactions where id in ({ids})")  # noqa: S608
            code, log = reconciled.run("dbt-duckdb:build")
            assert code != 0, "the build must fail while a month differs"
            rows = reconciled.rows()
            wanted = {(emu.account_id, t["currency"], month(t["created"])): t for t in lost}
            assert set(differing(rows)) == set(wanted)
            for key, txn in wanted.items():
                assert rows[key]["missing_in_warehouse"] == txn["id"]
                assert rows[key]["difference"] == -txn["net"]
                named = (f"Differs from Stripe's balance report: account {emu.account_id}, "
                         f"month {key[2]}, {key[1]}: difference {-txn['net']}; missing in the "
                         f"warehouse: {txn['id']};")
                assert named in log, log[-4000:]
            assert log.count("Differs from Stripe's balance report") == 3
            # Exactly the payouts that settled a lost transaction differ, naming them.
            hit: dict[str, list[dict]] = {}
            for txn in lost:
                if settled_by.get(txn["id"]) in compared:
                    hit.setdefault(settled_by[txn["id"]], []).append(txn)
            assert hit
            payouts = reconciled.payouts()
            assert {i for i, r in payouts.items() if r["status"] == "differs"} == set(hit)
            for payout_id, txns in hit.items():
                row = payouts[payout_id]
                missing = ", ".join(sorted(t["id"] for t in txns))
                gone = sum(t["net"] for t in txns)
                assert row["missing_in_warehouse"] == missing, row
                assert row["difference"] == gone, row
                named = (f"Payout differs from what it settled: account {emu.account_id}, "
                         f"payout {payout_id}, {txns[0]['currency']}: amount {row['amount']}, "
                         f"settled {row['settled_net']} (difference {gone}); missing in the "
                         f"warehouse: {missing}")
                assert named in log, log[-4000:]
            assert log.count("Payout differs from what it settled") == len(hit)
        finally:
            reconciled.close()


def test_a_platform_reconciles_in_postgres_until_stripes_report_has_a_transaction_more(
        request, tmp_path):
    from tests.test_analytics import warehouse_env

    meltano_path = request.getfixturevalue("meltano")
    env = warehouse_env("postgres", request, tmp_path)
    with ConnectPlatform(accounts=3, objects=12, seed=37) as platform:
        env["TAP_STRIPE_CONNECT_ACCOUNT_IDS"] = json.dumps(platform.account_ids)
        env["TAP_STRIPE_CONNECT_REPORT_RUNS_PER_ACCOUNT"] = "true"  # the summary of each
        source = type("Source", (), {"api_key": platform.platform_key, "url": platform.url})
        reconciled = Reconciled(meltano_path, "postgres", source, env, tmp_path)
        try:
            code, log = reconciled.run()
            assert code == 0, log[-6000:]
            rows = reconciled.rows()
            clock = int(platform.clock() or 0)
            assert set(rows) == expected_months(platform.accounts, clock // DAY * DAY)
            assert {key[0] for key in rows} == set(platform.account_ids)
            assert not differing(rows), differing(rows)
            # Stripe's payout report for every connected account at once: each reported
            # paid automatic payout equals what it settled.
            until = clock // DAY * DAY
            compared = {i for a in platform.accounts.values() for i in compared_payouts(a, until)}
            payouts = reconciled.payouts()
            assert compared
            assert {i for i, r in payouts.items() if r["status"] == "reconciled"} == compared
            assert all(r["status"] == "not_compared" for i, r in payouts.items()
                       if i not in compared)

            # Days pass; Stripe's report lists a balance transaction of the second account
            # that the API never listed (the warehouse cannot have it).
            platform.advance(3 * DAY)
            second = platform.account_ids[1]
            emu = platform.accounts[second]
            charge = next(t for t in emu.objects("balance_transactions") if t["type"] == "charge")
            ghost = dict(charge, id="txn_3OnlyInStripesReport0", created=emu.clock - DAY)
            platform.reports.add_to_report(second, ghost)
            # A charge of today: loaded, but after Stripe's last reported day (reports trail
            # real time): it must not be flagged.
            third = platform.account_ids[2]
            today = platform.accounts[third].create("charges", currency="usd", amount=1234)
            code, log = reconciled.run()
            assert code != 0, "the build must fail while a month differs"
            rows = reconciled.rows()
            key = (second, ghost["currency"], month(ghost["created"]))
            assert set(differing(rows)) == {key}
            assert rows[key]["missing_in_warehouse"] == ghost["id"]
            assert rows[key]["difference"] == -ghost["net"]
            assert f"account {second}, month {key[2]}, {key[1]}" in log
            assert today["created"] >= clock // DAY * DAY + 3 * DAY  # after the last report
            loaded = dump_tables("target-postgres", reconciled.source_schema)
            assert today["balance_transaction"] in {r["id"] for r in loaded["balance_transactions"]}
            assert (third, "usd", month(today["created"])) not in differing(rows)
        finally:
            reconciled.close()


def test_a_platform_runs_one_summary_per_account_only_when_asked(tmp_path):
    """report_balance_summary takes a report run per connected account and interval on the
    platform's own rate limit: a platform run skips it with one warning naming the setting
    (its bookmark stays), and runs it for every account with `report_runs_per_account`."""
    from tests.catalogs import select_streams

    with ConnectPlatform(accounts=3, objects=6, seed=41) as platform:
        config = {"api_key": platform.platform_key, "api_url": platform.url,
                  "account_ids": ["*"]}
        discovered = run_tap("--discover", config=config, tmp_path=tmp_path)
        assert discovered.returncode == 0, discovered.stderr[-3000:]
        catalog = select_streams(json.loads(discovered.stdout), REPORTS)
        skipped = run_tap(config=config, catalog=catalog, tmp_path=tmp_path)
        assert skipped.returncode == 0, skipped.stderr[-3000:]
        assert "Skipping stream 'report_balance_summary' for 3 connected accounts" in (
            skipped.stderr)
        assert "'report_runs_per_account': true" in skipped.stderr
        assert not skipped.records("report_balance_summary")
        bookmarks = (skipped.last_state or {}).get("bookmarks", {})
        assert "replication_key_value" not in bookmarks.get("report_balance_summary", {})
        types = {kind for kind, _ in platform.reports.created_runs}
        assert types == {"connected_account_balance_change_from_activity.itemized.3"}
        # Every account's activity still came, from one run per interval for all of them.
        assert {r["account_id"] for r in skipped.records("report_balance_activity")} == set(
            platform.account_ids)

        asked = run_tap(config={**config, "report_runs_per_account": True}, catalog=catalog,
                        tmp_path=tmp_path)
        assert asked.returncode == 0, asked.stderr[-3000:]
        assert "Skipping stream" not in asked.stderr
        summary = asked.records("report_balance_summary")
        assert {r["account_id"] for r in summary} == set(platform.account_ids)
        per_account = {p.get("connected_account") for kind, p in platform.reports.created_runs
                       if kind == "connected_account_balance.summary.1"}
        assert per_account == set(platform.account_ids)


def test_the_runs_of_a_report_batch_are_created_and_read_together(tmp_path):
    """With Stripe's answers slow, a batch's report runs are asked for together: the
    creations (and reads) overlap at the emulator, where one after another none would."""
    with Emulator(objects=6, seed=29) as emu:
        catalog = catalog_selecting(emu, tmp_path, {"report_balance_activity": ()})
        emu.set_latency(150)
        run = run_tap(config=emulator_config(emu), catalog=catalog, tmp_path=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        assert run.records("report_balance_activity")

        def most_at_once(method: str, prefix: str) -> int:
            spans = [(r.time, r.time + r.duration) for r in emu.requests
                     if r.method == method and r.path.startswith(prefix)]
            return max(sum(s <= start < e for s, e in spans) for start, _ in spans)

        creations = [r for r in emu.requests if r.method == "POST"]
        assert len(creations) > 1
        assert most_at_once("POST", "/v1/reporting/report_runs") > 1
        assert most_at_once("GET", "/v1/reporting/report_runs/") > 1


def test_a_report_time_is_read_in_stripes_own_form_only():
    """Report CSVs give `2025-03-01 12:34:56` (UTC): written as RFC 3339. Another form that
    is as long is not taken for it (a fast path of the reader checks the exact form)."""
    from tap_stripe_connect.sync.reports import time_field

    assert time_field("2025-03-01 12:34:56") == "2025-03-01T12:34:56Z"
    assert time_field(" 2025-3-1 1:2:3 ") == "2025-03-01T01:02:03Z"
    assert time_field("") is None
    for text in ("2025-03-01 12:34+01", "2025-02-30 00:00:00", "2025-03-01T12:34:56"):
        with pytest.raises(ValueError, match=r"does not match format|out of range"):
            time_field(text)
