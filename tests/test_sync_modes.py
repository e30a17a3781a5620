"""Each sync mode on its own: one (account, stream) `Unit` read through the client from
the emulator over HTTP, with its state kept in a plain dict, as the streams do."""

from __future__ import annotations

import copy
import logging
import typing as t

import pytest

from tap_stripe_connect.api import StripeClient
from tap_stripe_connect.api.auth import StripeKeyAuthenticator
from tap_stripe_connect.output.records import Records
from tap_stripe_connect.resources import RESOURCES_BY_NAME
from tap_stripe_connect.settings import Settings, format_time, parse_time
from tap_stripe_connect.state.bookmarks import Bookmarks, Checkpoints, UnitState
from tap_stripe_connect.streams import load_schema
from tap_stripe_connect.sync import created, events, full_table
from tap_stripe_connect.sync.children import EmbeddedLists
from tap_stripe_connect.sync.listing import list_all
from tap_stripe_connect.sync.run import Run
from tap_stripe_connect.sync.unit import Unit
from tests.conftest import emulator_config
from tests.emulator import Emulator


class Output:
    """The stream side of a unit: table versions and children, as they were asked for."""

    def __init__(self) -> None:
        self.table_version: int | None = None
        self.activated: list[int | None] = []
        self.prefetched: list[str] = []

    def use_table_version(self, version: int | None) -> None:
        self.table_version = version

    def activate_table_version(self) -> None:
        self.activated.append(self.table_version)

    def prefetch_children(self, parents: list[dict], account: str | None) -> None:
        self.prefetched += [p["id"] for p in parents]

    def children_gone(self) -> bool:
        return False


class Harness:
    """A run over the emulator and the state dict its units share."""

    def __init__(self, emu: Emulator, **config: t.Any) -> None:
        self.settings = Settings.from_config(emulator_config(emu, **config))
        self.tap_state: dict = {}
        self.states_written: list[dict] = []
        self.store = Bookmarks(self.tap_state)
        self.checkpoints = Checkpoints(self.store, self.write_state, min_seconds=0)
        self.next_run()

    def write_state(self) -> int:
        self.states_written.append(copy.deepcopy(self.tap_state))
        return 1

    def next_run(self) -> None:
        """A new run (a new client, as a new process has) over the same state."""
        settings = self.settings
        client = StripeClient(settings, StripeKeyAuthenticator({"api_key": settings.api_key}))
        self.run = Run(client, settings, logging.getLogger("test-sync"))
        self.run.read_account()

    def sync(self, mode: t.Callable[[Unit], t.Iterator[dict]], unit: Unit) -> list[dict]:
        """The unit's records (its bookmark moves once they are all read)."""
        return list(mode(unit))

    def unit(self, name: str, *, bookmarked: bool = True) -> Unit:
        state = UnitState(
            self.store, name, None, bookmarked=bookmarked, checkpoints=self.checkpoints
        )
        records = Records(load_schema(name))
        return Unit(
            self.run, RESOURCES_BY_NAME[name], None, state, records, Output(), self.run.logger
        )

    def bookmark(self, name: str) -> dict:
        return self.tap_state["bookmarks"][name]


@pytest.fixture
def emu():
    with Emulator(objects=150, seed=71, lines_per_invoice=14) as emulator:
        yield emulator


def ids(records: t.Iterable[dict]) -> list[str]:
    return [r["id"] for r in records]


def test_full_listing_writes_every_object_once_then_sets_the_bookmark(emu):
    harness = Harness(emu)
    unit = harness.unit("customers")
    got = harness.sync(events.sync, unit)
    assert sorted(ids(got)) == sorted(c["id"] for c in emu.objects("customers"))
    assert len(got) == len(set(ids(got)))
    started = {r["updated"] for r in got}
    assert len(started) == 1  # every record: the Stripe time the listing began
    state = harness.bookmark("customers")
    assert state["replication_key_value"] == started.pop()
    assert "listing" not in state
    # The listing was checkpointed while it ran, and its table version activated at the end.
    assert any("listing" in s["bookmarks"]["customers"] for s in harness.states_written)
    assert unit.out.activated == [state["table_version"]]
    assert all(r["account_id"] == emu.account_id and r["_sdc_deleted_at"] is None for r in got)


def test_events_mode_writes_each_changed_object_once_with_deletes(emu):
    harness = Harness(emu)
    harness.sync(events.sync, harness.unit("customers"))
    emu.advance(120)
    changed, deleted = emu.objects("customers")[:2]
    emu.update("customers", changed["id"], {"metadata": {"k": "1"}})
    emu.update("customers", changed["id"], {"metadata": {"k": "2"}})
    emu.delete("customers", deleted["id"])
    emu.advance(5)
    harness.next_run()
    emu.clear_requests()
    got = {r["id"]: r for r in harness.sync(events.sync, harness.unit("customers"))}
    assert set(got) == {changed["id"], deleted["id"]}
    assert got[changed["id"]]["metadata"] == {"k": "2"}  # the newest state
    assert got[deleted["id"]]["_sdc_deleted_at"] is not None
    assert [r.path for r in emu.requests] == ["/v1/events"]
    assert parse_time(harness.bookmark("customers")["replication_key_value"]) >= emu.clock - 2


def test_events_mode_lists_again_when_the_bookmark_is_older_than_stripe_keeps(emu, caplog):
    harness = Harness(emu)
    harness.sync(events.sync, harness.unit("charges"))
    emu.advance(31 * 86400)
    harness.next_run()
    with caplog.at_level(logging.WARNING):
        got = harness.sync(events.sync, harness.unit("charges"))
    assert sorted(ids(got)) == sorted(c["id"] for c in emu.objects("charges"))
    assert "older than the 30 days" in caplog.text


def test_created_mode_lists_only_what_was_created_since_the_bookmark_less_the_lag(emu):
    harness = Harness(emu, event_lag_seconds=60)
    first = harness.sync(created.sync, harness.unit("balance_transactions"))
    assert sorted(ids(first)) == sorted(b["id"] for b in emu.objects("balance_transactions"))
    bookmark = parse_time(harness.bookmark("balance_transactions")["replication_key_value"])
    emu.advance(300)
    harness.next_run()
    emu.clear_requests()
    second = harness.sync(created.sync, harness.unit("balance_transactions"))
    lower = {int(r.query["created[gte]"][0]) for r in emu.requests}
    assert lower == {bookmark - 60}
    assert sorted(ids(second)) == sorted(
        b["id"] for b in emu.objects("balance_transactions") if b["created"] >= bookmark - 60
    )


def test_full_table_mode_lists_everything_every_run_under_a_new_table_version(emu):
    harness = Harness(emu)
    versions = []
    for _ in range(2):
        harness.next_run()
        unit = harness.unit("invoice_items", bookmarked=False)
        got = harness.sync(full_table.sync, unit)
        assert sorted(ids(got)) == sorted(i["id"] for i in emu.objects("invoice_items"))
        versions += unit.out.activated
        emu.advance(5)
    assert len(versions) == 2
    assert versions[0] < versions[1]
    assert "replication_key_value" not in harness.bookmark("invoice_items")


def test_a_resumed_listing_reads_only_the_ranges_not_yet_written(emu):
    harness = Harness(emu)
    charges = sorted(c["created"] for c in emu.objects("charges"))
    middle = charges[len(charges) // 2]
    started = emu.clock - 10
    harness.tap_state["bookmarks"] = {
        "charges": {"listing": {"started": started, "table_version": 7, "done": [[0, middle]]}}
    }
    unit = harness.unit("charges")
    got = harness.sync(list_all, unit)
    assert sorted(ids(got)) == sorted(
        c["id"] for c in emu.objects("charges") if c["created"] >= middle
    )
    assert unit.out.activated == [7]  # the table version of the listing it resumed
    # The bookmark is the start of the listing it resumed, not of this run.
    assert harness.bookmark("charges")["replication_key_value"] == format_time(started)


def test_children_past_the_embedded_page_are_paged_after_the_last_embedded_item(emu):
    harness = Harness(emu)
    invoice = next(i for i in emu.objects("invoices") if i["lines"]["has_more"])
    lines = EmbeddedLists(
        RESOURCES_BY_NAME["invoice_line_items"],
        harness.run,
        Records(load_schema("invoice_line_items"), parent_field="invoice"),
    )
    lines.remember(invoice)
    lines.prefetch(invoice, None)
    emu.clear_requests()
    got = list(lines.records(invoice["id"], None, None))
    all_lines = emu.objects("invoice_line_items")
    assert ids(got) == [line["id"] for line in all_lines if line["invoice"] == invoice["id"]]
    assert all(r["invoice"] == invoice["id"] for r in got)
    harness.run.close()


def test_a_per_parent_listing_reads_each_parents_list(emu):
    harness = Harness(emu)
    got = list(list_all(harness.unit("payment_methods")))
    assert sorted(ids(got)) == sorted(m["id"] for m in emu.objects("payment_methods"))
    harness.run.close()
