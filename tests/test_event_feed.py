"""One events read per account per run (issue 14): a platform's incremental runs read
`GET /v1/events` once per connected account, whatever the number of events-based streams,
and cost requests in proportion to what changed."""

from __future__ import annotations

import collections
import typing as t

import pytest

from tests.conftest import emulator_config, run_tap
from tests.emulator.connect import ConnectPlatform
from tests.test_account_list import catalog_of
from tests.test_connect import CORE
from tests.test_platform import platform_settings, run_killed

LAG = 60  # event_lag_seconds (default): a later run re-reads this much before its bookmark
QUIET = 86400  # quiet_account_interval_seconds (default)


@pytest.fixture
def platform():
    with ConnectPlatform(accounts=3, objects=20, latency=(5, 2)) as connect_platform:
        yield connect_platform


def advance(platform: ConnectPlatform, seconds: float) -> None:
    platform.advance(seconds)


def full_sync(platform: ConnectPlatform, tmp_path) -> dict:
    first = run_tap(config=platform_settings(platform), tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    # Past the lag: what the first run wrote is not read again.
    advance(platform, LAG + 5)
    for emulator in platform.accounts.values():
        emulator.clear_requests()
    platform.api_requests.clear()
    return first.last_state


def events_reads(platform: ConnectPlatform) -> collections.Counter:
    """`GET /v1/events` reads (first pages: a read pages on with `starting_after`) per
    account, as the platform sent them with `Stripe-Account`."""
    return collections.Counter(
        account
        for account, emulator in platform.accounts.items()
        for r in emulator.requests
        if r.path == "/v1/events" and "starting_after" not in r.query
    )


def test_a_platform_run_reads_the_events_of_each_account_once(platform, tmp_path):
    state = full_sync(platform, tmp_path)
    changed = collections.defaultdict(set)
    for account, emulator in platform.accounts.items():
        for stream in CORE:
            obj = emulator.objects(stream)[3]
            emulator.update(stream, obj["id"], {"metadata": {"changed": "yes"}})
            changed[stream].add((account, obj["id"]))
        changed["customers"].add((account, emulator.create("customers")["id"]))
    run = run_tap(config=platform_settings(platform), state=state, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    # Every default events-based stream (charges, customers, invoices, subscriptions,
    # refunds, prices, ... ~20) of each account, fed by one read.
    assert events_reads(platform) == dict.fromkeys(platform.account_ids, 1)
    sent = collections.Counter(a for _m, path, a in platform.api_requests if path == "/v1/events")
    assert sent == dict.fromkeys(platform.account_ids, 1)
    for stream in CORE:
        emitted = {(r["account_id"], r["id"]) for r in run.records(stream)}
        assert changed[stream] <= emitted, stream
        for record in run.records(stream):
            if (record["account_id"], record["id"]) in changed[stream] and stream != "customers":
                assert record["metadata"] == {"changed": "yes"}, (stream, record["id"])
    # The `events` stream takes its new events from the same read.
    assert {r["account_id"] for r in run.records("events")} == set(platform.account_ids)


@pytest.mark.parametrize("interval", [None, 0], ids=["default", "list-every-run"])
def test_a_no_change_run_costs_one_request_per_account_and_writes_nothing(
    platform, tmp_path, interval
):
    state = full_sync(platform, tmp_path)
    config = platform_settings(platform, quiet_account_interval_seconds=interval)
    run = run_tap(config=config, state=state, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.records() == []
    # With no event since the last run, the listings of objects Stripe creates without
    # an event (balance transactions, Checkout Sessions) wait for a later run (README,
    # stream table); with `quiet_account_interval_seconds: 0` they run every time.
    listings = {"/v1/balance_transactions": 1, "/v1/checkout/sessions": 1}
    waiting = {} if interval is None else listings
    for account, emulator in platform.accounts.items():
        paths = collections.Counter(r.path for r in emulator.requests)
        assert paths == {"/v1/events": 1, **waiting}, account
    # Accounts, invoice items: nothing listed again.
    assert not [p for _m, p, _a in platform.api_requests if p in ("/v1/invoiceitems",)]


def test_objects_created_without_an_event_wait_in_a_quiet_account_and_are_never_lost(
    platform, tmp_path
):
    state = full_sync(platform, tmp_path)
    quiet, busy = (platform.accounts[a] for a in platform.account_ids[:2])
    quiet_id, busy_id = platform.account_ids[:2]
    # Stripe sends no event for a Stripe fee or a new Checkout Session.
    created = {
        account: {
            (stream, emulator.create(stream)["id"])
            for stream in ("balance_transactions", "checkout_sessions")
        }
        for account, emulator in ((quiet_id, quiet), (busy_id, busy))
    }
    busy.create("customers")  # an event: the account changed, its listings run now

    def written(run, account):
        rows = [
            (stream, r["id"])
            for stream in ("balance_transactions", "checkout_sessions")
            for r in run.records(stream)
            if r["account_id"] == account
        ]
        assert len(rows) == len(set(rows)), rows  # each object once
        return set(rows)

    def run_once(state):
        for emulator in platform.accounts.values():
            emulator.clear_requests()
        run = run_tap(config=platform_settings(platform), state=state, tmp_path=tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
        return run

    first = run_once(state)
    assert written(first, busy_id) == created[busy_id]
    assert written(first, quiet_id) == set()
    assert [r.path for r in quiet.requests] == ["/v1/events"]
    # Still within the interval (an hour by default) of the quiet account's last listing.
    advance(platform, QUIET - 3 * LAG)
    second = run_once(first.last_state)
    assert written(second, quiet_id) == set()
    assert [r.path for r in quiet.requests] == ["/v1/events"]
    # Past it: listed from where the last listing ended, each object once.
    advance(platform, 3 * LAG)
    third = run_once(second.last_state)
    assert written(third, quiet_id) == created[quiet_id]
    # And quiet again: one request per account.
    advance(platform, LAG + 5)
    fourth = run_once(third.last_state)
    assert fourth.records() == []
    for account, emulator in platform.accounts.items():
        assert [r.path for r in emulator.requests] == ["/v1/events"], account


def test_invoice_items_and_accounts_change_incrementally(platform, tmp_path):
    state = full_sync(platform, tmp_path)
    account, other = platform.account_ids[:2]
    emulator = platform.accounts[account]
    pending = [i for i in emulator.objects("invoice_items") if i["invoice"] is None]
    created = emulator.create("invoice_items")
    deleted = pending[0]
    emulator.delete("invoice_items", deleted["id"])
    draft = emulator.create("invoices", status="draft", lines=1)
    pulled = pending[1]
    emulator.pull_invoice_items(draft["id"], [pulled["id"]])
    emulator.update_account({"email": "finance@example.com"})
    run = run_tap(config=platform_settings(platform), state=state, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    items = {r["id"]: r for r in run.records("invoice_items")}
    assert items[created["id"]]["_sdc_deleted_at"] is None
    assert items[deleted["id"]]["_sdc_deleted_at"] is not None
    # Pulled into the draft with no event of its own: named by the invoice's lines.
    assert items[pulled["id"]]["invoice"] == draft["id"]
    # The draft's own new item (created with it) too, and nothing else.
    assert set(items) == {created["id"], deleted["id"], pulled["id"]} | {
        i["id"] for i in emulator.objects("invoice_items") if i["invoice"] == draft["id"]
    }
    assert {r["account_id"] for r in run.records("invoice_items")} == {account}
    (changed,) = run.records("accounts")
    assert changed["id"] == account
    assert changed["email"] == "finance@example.com"
    # A row of the platform's account list, keyed as when the list is read whole.
    assert changed["account_id"] == "acct_platform0emulator"
    # Nothing read beyond the events for the account update and the invoice items.
    assert [r.path for r in platform.accounts[other].requests] == ["/v1/events"]


@pytest.mark.parametrize("listed", [True, False], ids=["star", "named"])
def test_a_first_platform_sync_writes_each_account_once(platform, tmp_path, listed):
    """Under `["*"]` the run's own listing of the accounts holds each record (no request
    more); accounts named in `account_ids` are read as themselves, once each."""
    ids = ["*"] if listed else list(platform.account_ids)
    run = run_tap(config=platform_settings(platform, account_ids=ids), tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    accounts = {r["id"]: r for r in run.records("accounts")}
    assert set(accounts) == set(platform.account_ids)
    assert len(run.records("accounts")) == len(accounts)
    for account_id, record in accounts.items():
        assert record["email"] == platform.accounts[account_id].store.account["email"]
    for emulator in platform.accounts.values():
        assert [r.path for r in emulator.requests].count("/v1/account") == (0 if listed else 1)


def test_a_run_killed_after_the_feed_was_read_resumes_without_gaps(tmp_path):
    with ConnectPlatform(accounts=3, objects=60, latency=(20, 5)) as platform:
        state = full_sync(platform, tmp_path)
        changed = {}
        for account, emulator in platform.accounts.items():
            for stream in CORE:
                for index, obj in enumerate(emulator.objects(stream)[:40]):
                    emulator.update(stream, obj["id"], {"metadata": {"v": str(index)}})
                    changed[stream, account, obj["id"]] = {"v": str(index)}
        config = platform_settings(platform)
        killed, killed_state = run_killed(config, tmp_path, after_records=300, state=state)
        assert killed_state is not None
        # Killed after feeds were read (once per account), while the changed objects were
        # being written: some were, others were left for the resumed run.
        written = {(m["stream"], m["record"]["account_id"], m["record"]["id"]) for m in killed}
        assert 0 < len(written & changed.keys()) < len(changed)
        reads = events_reads(platform)
        assert set(reads.values()) == {1}
        assert len(reads) >= 2
        resumed = run_tap(config=config, state=killed_state, tmp_path=tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
    latest = {}
    for message in killed:
        record = message["record"]
        latest[message["stream"], record["account_id"], record["id"]] = record
    for stream in CORE:
        for record in resumed.records(stream):
            latest[stream, record["account_id"], record["id"]] = record
    for key, metadata in changed.items():
        assert key in latest, f"{key} lost"
        assert latest[key]["metadata"] == metadata, key


def test_thousands_of_accounts_need_no_open_file_each(tmp_path):
    """An account's events stay in memory while few (a file each would exhaust the file
    descriptors of a platform run of thousands of accounts: 200 here, under `ulimit -n
    128`), and go when the account's last unit ends."""
    with ConnectPlatform(accounts=200, objects=1) as platform:
        settings = platform_settings(platform, max_workers=8)
        catalog = catalog_of(platform, tmp_path, ("customers", "charges"))
        first = run_tap(config=settings, catalog=catalog, tmp_path=tmp_path)
        assert first.returncode == 0, first.stderr[-2000:]
        advance(platform, LAG + 5)
        for emulator in platform.accounts.values():  # events to keep, for every account
            emulator.create("customers")
        again = run_tap(
            config=settings,
            catalog=catalog,
            state=first.last_state,
            tmp_path=tmp_path,
            open_files=128,
        )
        assert again.returncode == 0, again.stderr[-2000:]
        assert "Too many open files" not in again.stderr
        new = {(r["account_id"], r["id"]) for r in again.records("customers")}
        assert {a for a, _ in new} == set(platform.account_ids)


def test_an_account_with_many_events_keeps_them_in_a_file_until_closed(monkeypatch):
    """Past `SPOOL_BYTES` an account's events move to a temporary file; a stream reads its
    own types from it, newest first, and `close` (its last unit ended) lets the file go."""
    import types

    from tap_stripe_connect.resources import RESOURCES_BY_NAME
    from tap_stripe_connect.sync import feed as feed_module

    monkeypatch.setattr(feed_module, "SPOOL_BYTES", 2_000)
    events = [
        {"id": f"evt_{n}", "type": "customer.updated" if n % 3 else "charge.succeeded",
         "created": 10_000 - n, "data": {"object": {"id": f"obj_{n}", "pad": "x" * 100}}}
        for n in range(60)
    ]  # fmt: skip
    client = types.SimpleNamespace(
        pages=lambda read: iter([events[:30], events[30:]]),
        clock=types.SimpleNamespace(now=lambda: 10_005),
    )
    feed = feed_module.EventFeed(t.cast("t.Any", client), "acct_1", lambda: 9_900)
    assert feed.covers(9_950, RESOURCES_BY_NAME["customers"])
    assert not feed.covers(9_899, RESOURCES_BY_NAME["customers"])
    spooled = feed._file  # where the events are kept is the point
    assert spooled is not None
    assert list(feed.events(9_950, ["charge.succeeded"])) == [
        e for e in events if e["type"] == "charge.succeeded" and e["created"] >= 9_950
    ]
    assert list(feed.events(0)) == events
    assert not feed.quiet(9_941)
    assert feed.quiet(10_001)
    feed.close()
    assert spooled.closed


def test_a_key_without_the_events_permission_lists_balance_transactions_every_run(tmp_path):
    """Balance transactions need no Events permission: a key without it keeps listing them
    on every run (one refused events read, no error), as before quiet accounts."""
    from tests.emulator import Emulator
    from tests.test_streams import catalog_of as single_catalog

    key = "rk_test_balanceOnly0001"
    with Emulator(objects=5, seed=46, api_keys={"sk_test_emulator": None,
                                                key: {"balance_transactions"}}) as emu:
        catalog = single_catalog(emu, tmp_path, {"balance_transactions"})
        config = emulator_config(emu, api_key=key)
        first = run_tap(config=config, catalog=catalog, tmp_path=tmp_path)
        assert first.returncode == 0, first.stderr[-2000:]
        emu.advance(LAG + 5)
        fee = emu.create("balance_transactions")
        emu.clear_requests()
        run = run_tap(config=config, catalog=catalog, state=first.last_state, tmp_path=tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
        assert [r["id"] for r in run.records("balance_transactions")] == [fee["id"]]
        assert "ERROR" not in run.stderr, run.stderr[-2000:]
        assert "Traceback" not in run.stderr
        # One refused events read; the listing (besides the restricted key's `limit=1` check).
        refused = [r.path for r in emu.requests if r.status == 403]
        assert refused == ["/v1/events"]
        listed = [r for r in emu.requests if r.path == "/v1/balance_transactions"]
        assert [r.query.get("limit") for r in listed if r.query.get("limit") != ["1"]] == [["100"]]
