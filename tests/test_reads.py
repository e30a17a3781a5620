"""Reads, counted (issue 25): Stripe allots each account's reads (and a platform's, for its
connected accounts) by its transactions, so a run says what it read of each account, and
a platform may read a quiet account's events less often than a busy one's
(`quiet_account_events_interval_seconds`). Figures come from the emulator's request log."""

from __future__ import annotations

import collections
import json

import pytest

from tests.conftest import run_tap
from tests.emulator.connect import ConnectPlatform
from tests.test_platform import platform_settings
from tests.test_progress import STRUCTURED_LOGGING

LAG = 60  # event_lag_seconds (default)
INTERVAL = 6 * 3600  # quiet_account_events_interval_seconds in these tests
SETTING = "quiet_account_events_interval_seconds"
#: As docs/platforms.md advises: the listings of quiet accounts (balance transactions,
#: Checkout Sessions) wait longer than their events, once a day.
LISTINGS = {"quiet_account_interval_seconds": 86400}


@pytest.fixture
def platform():
    with ConnectPlatform(accounts=3, objects=15, latency=(5, 2)) as connect_platform:
        yield connect_platform


def stripe_counts(platform: ConnectPlatform, since: int) -> tuple[collections.Counter, int, int]:
    """What Stripe's allocations count of the requests the emulator served from index
    `since` of its log: GETs by `Stripe-Account` (None: the platform's own), and apart from
    them the Reporting API's requests (report runs, report types, a report's file) and the
    writes (POST), which no allocation counts."""
    reads: collections.Counter = collections.Counter()
    reporting = writes = 0
    for method, path, account in platform.api_requests[since:]:
        if method != "GET":
            writes += 1
        elif path.startswith("/v1/reporting/") or path.endswith("/contents"):
            reporting += 1
        else:
            reads[account] += 1
    return reads, reporting, writes


def sync(platform: ConnectPlatform, tmp_path, state: dict | None = None, **extra):
    """One run with structured logging; its summary (the log record's data), its requests."""
    logging_config = tmp_path / "logging.yaml"
    logging_config.write_text(STRUCTURED_LOGGING)
    since = len(platform.api_requests)
    run = run_tap(
        config=platform_settings(platform, **extra),
        state=state,
        tmp_path=tmp_path,
        env={"SINGER_SDK_LOG_CONFIG": str(logging_config)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    entries = [json.loads(ln) for ln in run.stderr.splitlines() if ln.startswith("{")]
    (summary,) = [e for e in entries if "summary" in e.get("extra", {})]
    return run, summary, since


def test_the_summary_counts_each_accounts_reads_apart_from_reports_and_writes(platform, tmp_path):
    first, summary, since = sync(platform, tmp_path)
    reads, reporting, writes = stripe_counts(platform, since)
    counted = summary["extra"]["summary"]["reads"]
    per_account = {a: n for a, n in reads.items() if a is not None}
    assert counted["own"] == reads[None]
    assert counted["connected"] == sum(per_account.values())
    assert counted["total"] == sum(reads.values())
    assert counted["accounts"] == len(platform.account_ids) == len(per_account)
    assert counted["per_account"]["max"] == max(per_account.values())
    assert counted["top"] == dict(
        sorted(per_account.items(), key=lambda item: (-item[1], item[0]))[:5]
    )
    # The platform's reports of its connected accounts: a run created (a write), its
    # status and file read (the Reporting API, left out of the allocation).
    assert reporting > 0
    assert writes > 0
    assert (counted["reporting"], counted["writes"]) == (reporting, writes)
    # The line under the summary table says it too.
    line = f"Reads: {sum(reads.values()):,} ({reads[None]:,} as the platform itself; "
    assert line in summary["message"]
    # A run with nothing new: one read (the events list) per connected account.
    platform.advance(LAG + 5)
    _, summary, since = sync(platform, tmp_path, state=first.last_state)
    reads, _, _ = stripe_counts(platform, since)
    counted = summary["extra"]["summary"]["reads"]
    assert {a: n for a, n in reads.items() if a is not None} == dict.fromkeys(
        platform.account_ids, 1
    )
    assert counted["connected"] == len(platform.account_ids)
    assert counted["per_account"] == {"mean": 1, "median": 1, "p99": 1, "max": 1}


def test_quiet_accounts_events_wait_busy_ones_are_read_every_run_and_nothing_is_lost(
    platform, tmp_path
):
    quiet_a, busy, quiet_c = platform.account_ids
    first, _, _ = sync(platform, tmp_path, **{SETTING: INTERVAL}, **LISTINGS)
    platform.advance(LAG + 5)

    def run(state: dict, **extra):
        settings = {SETTING: INTERVAL, **LISTINGS, **extra}
        run, summary, since = sync(platform, tmp_path, state=state, **settings)
        read = {a: n for a, n in stripe_counts(platform, since)[0].items() if a is not None}
        return run, summary["extra"]["summary"]["reads"], read

    def customers(run) -> set[tuple[str, str]]:
        return {(r["account_id"], r["id"]) for r in run.records("customers")}

    # A STATE of before (no account known quiet): every account's events are read; none
    # has any, so each is quiet now.
    second, counted, read = run(first.last_state)
    assert read == dict.fromkeys(platform.account_ids, 1)
    assert sorted(second.last_state["accounts"]["quiet"]) == sorted(platform.account_ids)
    # A customer in one account; ten minutes on, every account is quiet and its events
    # read waits: no request to any, nothing written, no bookmark moved.
    first_customer = platform.accounts[busy].create("customers")["id"]
    platform.advance(600)
    third, counted, read = run(second.last_state)
    assert read == {}
    assert third.records() == []
    assert counted["rested_accounts"] == len(platform.account_ids)
    assert third.last_state["accounts"]["bookmarks"] == second.last_state["accounts"]["bookmarks"]
    assert "(as the platform itself; no connected account read)" in third.stderr
    assert "Quiet accounts whose events read waited: 3" in third.stderr
    # Once the oldest bookmark is the interval old, every account is read again: the
    # customer arrives (that late), and its account is busy.
    platform.advance(INTERVAL - 600)
    fourth, counted, read = run(third.last_state)
    assert set(read) == set(platform.account_ids)
    # (The quiet accounts' listings wait for their day: their events list only.)
    assert (read[quiet_a], read[quiet_c]) == (1, 1)
    assert customers(fourth) == {(busy, first_customer)}
    assert sorted(fourth.last_state["accounts"]["quiet"]) == sorted([quiet_a, quiet_c])
    # Ten minutes on: the busy account is read (a new customer arrives now), the quiet
    # ones wait, also with a change of their own.
    second_customer = platform.accounts[busy].create("customers")["id"]
    changed = platform.accounts[quiet_a].objects("customers")[2]["id"]
    platform.accounts[quiet_a].update("customers", changed, {"metadata": {"late": "yes"}})
    platform.advance(600)
    fifth, counted, read = run(fourth.last_state)
    assert set(read) == {busy}
    assert read[busy] >= 1
    assert customers(fifth) == {(busy, second_customer)}
    assert counted["rested_accounts"] == 2
    assert counted["connected"] == read[busy]
    # The waiting change is read once the interval passed: nothing is lost.
    platform.advance(INTERVAL)
    sixth, counted, read = run(fifth.last_state)
    assert set(read) == set(platform.account_ids)
    assert customers(sixth) == {(quiet_a, changed)}
    assert sixth.records("customers")[0]["metadata"] == {"late": "yes"}
    # With the setting off, every account is read every run and STATE forgets which
    # accounts were quiet.
    platform.advance(600)
    seventh, counted, read = run(sixth.last_state, **{SETTING: 0})
    assert read == dict.fromkeys(platform.account_ids, 1)
    assert "quiet" not in seventh.last_state["accounts"]


def test_an_interval_near_the_30_days_of_events_is_refused_in_one_line(platform, tmp_path):
    run = run_tap(config=platform_settings(platform, **{SETTING: 8 * 86400}), tmp_path=tmp_path)
    assert run.returncode != 0
    assert f"setting '{SETTING}' must be at most 604800, not 691200 (7 days: " in run.stderr
    assert platform.api_requests == []
