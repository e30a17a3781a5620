"""Incremental sync through the Events API: the warehouse stays equal to Stripe.

Every test runs the real CLI against the emulator over HTTP, applies the emitted records
to a stand-in warehouse by primary key, and compares with the emulator's objects.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys

import pytest

from tests.catalogs import catalog_selecting
from tests.conftest import ROOT, TapRun, emulator_config, run_tap
from tests.emulator import Emulator
from tests.warehouse import Warehouse, assert_equal_to_stripe, truth

CORE = ("charges", "customers", "invoices", "subscriptions")
ALL = (*CORE, "invoice_line_items", "subscription_items")
DAY = 86400


def sync(emu: Emulator, tmp_path, state=None, catalog=None, **config) -> TapRun:
    run = run_tap(config=emulator_config(emu, **config), state=state, catalog=catalog,
                  tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def assert_no_object_twice(run: TapRun) -> None:
    for stream in CORE:
        ids = [r["id"] for r in run.records(stream)]
        assert len(ids) == len(set(ids)), f"{stream}: an object was emitted twice in one sync"


def mutate(emu: Emulator, rng: random.Random, *, updates=100, deletes=10, creates=50, cancels=10):
    """One round of changes across the four core streams."""
    ids = {s: [o["id"] for o in emu.objects(s)] for s in CORE}
    for i in range(updates):
        stream = CORE[i % 4]
        emu.update(stream, rng.choice(ids[stream]), {"metadata": {"round": str(rng.random())}})
    for i in range(creates):
        stream = CORE[i % 4]
        fields = {"lines": 12} if stream == "invoices" and i % 8 == 2 else {}
        emu.create(stream, **fields)
    # Drafts with more lines than Stripe embeds are left alone: once deleted, Stripe no
    # longer serves their other lines (see README, "Known limits").
    drafts = [
        o["id"]
        for o in emu.objects("invoices")
        if o["status"] == "draft" and not o["lines"]["has_more"]
    ]
    for i in range(deletes):
        if i % 2 and drafts:
            emu.delete("invoices", drafts.pop())
        else:
            customers = [o["id"] for o in emu.objects("customers")]
            emu.delete("customers", rng.choice(customers))
    live = [
        o["id"]
        for o in emu.objects("subscriptions")
        if o["status"] not in ("canceled", "incomplete_expired")  # both have ended
    ]
    for sub_id in rng.sample(live, min(cancels, len(live))):
        emu.cancel_subscription(sub_id)
    for invoice in emu.objects("invoices")[:5]:
        if invoice["status"] in ("draft", "open"):
            emu.pay_invoice(invoice["id"])
    charge_ids = ids["charges"]
    for charge_id in rng.sample(charge_ids, 3):
        charge = emu.get("charges", charge_id)
        if charge and charge["status"] == "succeeded" and not charge["refunded"]:
            emu.refund_charge(charge_id)


@pytest.fixture
def emu():
    with Emulator(objects=120, seed=21) as emulator:
        yield emulator


def test_updates_deletes_creates_and_cancels_reach_the_warehouse(emu, tmp_path):
    warehouse = Warehouse()
    first = sync(emu, tmp_path)
    warehouse.apply(first)
    assert_equal_to_stripe(warehouse, emu, ALL)

    mutate(emu, random.Random(1))
    second = sync(emu, tmp_path, state=first.last_state)
    assert_no_object_twice(second)
    warehouse.apply(second)
    assert_equal_to_stripe(warehouse, emu, ALL)
    cancelled = [r for r in second.records("subscriptions") if r["status"] == "canceled"]
    assert len(cancelled) >= 10
    assert all(r["_sdc_deleted_at"] is None for r in cancelled), "a cancellation is no delete"
    deleted = [r for r in second.records("customers") if r["_sdc_deleted_at"]]
    assert len(deleted) >= 5


def test_ten_rounds_in_a_row_stay_exact(emu, tmp_path):
    warehouse = Warehouse()
    run = sync(emu, tmp_path)
    warehouse.apply(run)
    rng = random.Random(2)
    for _ in range(10):
        mutate(emu, rng, updates=20, deletes=4, creates=10, cancels=2)
        emu.advance(3600)
        run = sync(emu, tmp_path, state=run.last_state)
        assert_no_object_twice(run)
        warehouse.apply(run)
        assert_equal_to_stripe(warehouse, emu, ALL)


def test_first_sync_lists_without_replaying_events(emu, tmp_path):
    run = sync(emu, tmp_path)
    # The `events` stream lists the event log; no stream reads its changes from it.
    assert not [r for r in emu.requests if r.path == "/v1/events" and "types[]" in r.query]
    for stream in CORE:
        assert len(run.records(stream)) == len(emu.objects(stream))


def test_few_changes_cost_a_handful_of_requests(emu, tmp_path):
    # The four core streams and their children (CREATED streams cost a listing since the
    # bookmark, full-table ones a listing: see test_streams.py).
    catalog = catalog_selecting(emu, tmp_path, dict.fromkeys(ALL, ()))
    first = sync(emu, tmp_path, catalog=catalog)
    for stream in CORE:
        emu.update(stream, emu.objects(stream)[7]["id"], {"metadata": {"x": "1"}})
    emu.clear_requests()
    second = sync(emu, tmp_path, state=first.last_state, catalog=catalog)
    paths = [r.path for r in emu.requests]
    # One events page for every stream, the account probe, and nothing re-listed.
    assert paths.count("/v1/events") == 1
    assert not any(p in ("/v1/charges", "/v1/customers", "/v1/invoices") for p in paths)
    assert len(paths) <= 1 + 1 + 2, paths
    assert {len(second.records(s)) for s in CORE} == {1}


def test_a_31_day_pause_relists_the_stream_with_a_warning(emu, tmp_path):
    warehouse = Warehouse()
    first = sync(emu, tmp_path)
    warehouse.apply(first)
    mutate(emu, random.Random(3), updates=20, deletes=4, creates=8, cancels=2)
    emu.advance(31 * DAY)
    mutate(emu, random.Random(4), updates=8, deletes=2, creates=4, cancels=1)
    second = sync(emu, tmp_path, state=first.last_state)
    assert "older than the 30 days of events" in second.stderr
    warehouse.apply(second)
    assert_equal_to_stripe(warehouse, emu, ALL)


def test_state_of_another_account_is_not_used_for_this_one(emu, tmp_path):
    """A project that switches its key to another account keeps Meltano's state: the other
    account's bookmarks would skip everything this account changed before them."""
    first = sync(emu, tmp_path)
    with Emulator(objects=30, seed=22) as other:
        assert other.account_id != emu.account_id
        second = sync(other, tmp_path, state=first.last_state)
    for stream in CORE:
        assert {r["id"] for r in second.records(stream)} == {
            o["id"] for o in other.objects(stream)
        }, stream
    assert (
        f"The state of stream 'charges' is account {emu.account_id}'s, not "
        f"{other.account_id}'s: syncing {other.account_id} from start_date." in second.stderr
    )
    bookmarks = second.last_state["bookmarks"]
    assert bookmarks["charges"]["account_id"] == other.account_id


def test_an_invoice_with_40_lines_yields_40_line_items_also_after_an_update(emu, tmp_path):
    invoice = emu.create("invoices", lines=40, status="open")
    first = sync(emu, tmp_path)
    lines = [r for r in first.records("invoice_line_items") if r["invoice"] == invoice["id"]]
    assert len(lines) == 40
    emu.update("invoices", invoice["id"], {"description": "updated"})
    second = sync(emu, tmp_path, state=first.last_state)
    lines = [r for r in second.records("invoice_line_items") if r["invoice"] == invoice["id"]]
    assert len({r["id"] for r in lines}) == 40


def test_an_event_in_another_api_version_is_refetched_in_the_pinned_shape(emu, tmp_path):
    first = sync(emu, tmp_path)
    emu.set_event_api_version("2023-10-16")
    customer_id = emu.objects("customers")[3]["id"]
    emu.update("customers", customer_id, {"name": "Renamed Customer"})
    emu.clear_requests()
    second = sync(emu, tmp_path, state=first.last_state)
    assert emu.request_count(f"/v1/customers/{customer_id}") == 1
    (record,) = [r for r in second.records("customers") if r["id"] == customer_id]
    expected = truth(emu, "customers")[customer_id]
    assert {k: v for k, v in record.items() if k in expected} == expected


def test_a_product_changed_between_the_events_read_and_a_later_refetch_arrives_next_run(
    emu, tmp_path
):
    """A product carries Stripe's own `updated`. Fetched again after the account's events
    were read (its event is in another API version), it can carry a later `updated` than
    the read's start: the bookmark must stay at the start of the read, or a product
    changed in between (its event not read) is never read."""
    catalog = catalog_selecting(emu, tmp_path, {"products": ()})
    first = sync(emu, tmp_path, catalog=catalog)
    emu.advance(3600)
    emu.set_event_api_version("2023-10-16")
    fetched, missed = (p["id"] for p in emu.objects("products")[:2])
    emu.update("products", fetched, {"name": "Renamed once"})

    def meanwhile():  # after the events read, before the product is fetched again
        emu.update("products", missed, {"name": "Changed in between"})
        emu.advance(600)
        emu.update("products", fetched, {"name": "Renamed twice"})

    emu.before_request(f"/v1/products/{fetched}", meanwhile)
    second = sync(emu, tmp_path, state=first.last_state, catalog=catalog)
    assert emu.request_count(f"/v1/products/{fetched}") == 1, "the product was not re-fetched"
    assert [r["name"] for r in second.records("products")] == ["Renamed twice"]
    third = sync(emu, tmp_path, state=second.last_state, catalog=catalog)
    names = {r["id"]: r["name"] for r in third.records("products")}
    assert names.get(missed) == truth(emu, "products")[missed]["name"] == "Changed in between"


def run_until_killed(emu: Emulator, tmp_path, state, kill_after: int) -> TapRun:
    """Run the tap and SIGKILL it after `kill_after` records, like a crashed worker."""
    config_path = tmp_path / "kill-config.json"
    config_path.write_text(json.dumps(emulator_config(emu, max_workers=4)))
    argv = [sys.executable, "-m", "tap_stripe_connect", "--config", str(config_path)]
    if state is not None:
        state_path = tmp_path / "kill-state.json"
        state_path.write_text(json.dumps(state))
        argv += ["--state", str(state_path)]
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    messages, records = [], 0
    for line in proc.stdout:
        messages.append(json.loads(line))
        if messages[-1]["type"] == "RECORD":
            records += 1
            if records >= kill_after:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait()
    return TapRun(proc.returncode, "", "", messages)


@pytest.mark.parametrize("kill_after", [1, 150, 600])
def test_a_killed_sync_resumed_from_its_last_state_is_exact(emu, tmp_path, kill_after):
    warehouse = Warehouse()
    base = sync(emu, tmp_path)
    warehouse.apply(base)
    mutate(emu, random.Random(kill_after))
    # The incremental sync dies...
    killed = run_until_killed(emu, tmp_path, base.last_state, kill_after)
    warehouse.apply(killed)
    resume_from = killed.last_state or base.last_state
    mutate(emu, random.Random(kill_after + 1), updates=10, deletes=2, creates=5, cancels=1)
    # ...and a first sync dies too.
    fresh = Warehouse()
    first_killed = run_until_killed(emu, tmp_path, None, kill_after)
    fresh.apply(first_killed)

    resumed = sync(emu, tmp_path, state=resume_from)
    warehouse.apply(resumed)
    assert_equal_to_stripe(warehouse, emu, ALL)
    fresh_resumed = sync(emu, tmp_path, state=first_killed.last_state)
    fresh.apply(fresh_resumed)
    assert_equal_to_stripe(fresh, emu, ALL)
