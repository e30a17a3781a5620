"""Every stream of the resource table, against the emulator over HTTP.

One emulator for the module: a first (full) sync of every stream, then changes to every
stream through the emulator's mutation API and an incremental sync; after each, the
stand-in warehouse must equal the emulator's objects exactly, stream by stream. Then
restricted keys: the permission check before a sync.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import jsonschema
import pytest

from tap_stripe_connect.resources import (
    CREATED,
    EVENTS,
    FULL_TABLE,
    MAX_EVENT_TYPES,
    PARENT,
    RESOURCES,
    RESOURCES_BY_NAME,
)
from tap_stripe_connect.settings import parse_time as rfc3339_to_unix
from tests import openapi
from tests.conftest import TapRun, emulator_config, run_tap
from tests.emulator import Emulator
from tests.emulator.billing import KINDS
from tests.warehouse import TAP_FIELDS, Warehouse, truth

NAMES = [r.name for r in RESOURCES]


def catalog_of(emu: Emulator, tmp_path: Path, selected: set[str] | None = None) -> dict:
    """The discovered catalog with every stream (or only `selected`) selected."""
    run = run_tap("--discover", config=emulator_config(emu), tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    catalog = json.loads(run.stdout)
    for entry in catalog["streams"]:
        for md in entry["metadata"]:
            if md["breadcrumb"] == []:
                md["metadata"]["selected"] = selected is None or entry["tap_stream_id"] in selected
    return catalog


def sync(emu: Emulator, tmp_path: Path, catalog: dict, state: dict | None = None,
         **config: object) -> TapRun:
    run = run_tap(config=emulator_config(emu, **config), catalog=catalog, state=state,
                  tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def expected_rows(emu: Emulator, stream: str) -> dict[str, dict]:
    """The emulator's objects as the tap writes them, without the fields the tap adds."""
    rows = truth(emu, stream)
    if stream == "credit_note_line_items":
        # Stripe's credit note lines do not name their credit note; the tap adds it.
        for note in emu.objects("credit_notes"):
            for line_id in _line_ids(emu, note):
                rows[line_id]["credit_note"] = note["id"]
    return rows


def _line_ids(emu: Emulator, note: dict) -> list[str]:
    return [line["id"] for line in emu.store.cn_lines[note["id"]]]


def warehouse_rows(warehouse: Warehouse, stream: str) -> dict[str, dict]:
    """Rows without the fields the tap adds (Stripe's own `product.updated` stays)."""
    added = set(TAP_FIELDS) - ({"updated"} if stream == "products" else set())
    return {
        key: {f: v for f, v in row.items() if f not in added}
        for key, row in warehouse.tables.get(stream, {}).items()
    }


def assert_exact(got: dict[str, dict], expected: dict[str, dict], stream: str) -> None:
    missing, extra = expected.keys() - got.keys(), got.keys() - expected.keys()
    assert not missing, f"{stream}: {len(missing)} missing, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{stream}: {len(extra)} extra, e.g. {sorted(extra)[:3]}"
    for key, row in expected.items():
        if got[key] != row:
            fields = sorted(
                f for f in row.keys() | got[key].keys() if row.get(f) != got[key].get(f)
            )
            raise AssertionError(f"{stream}: {key} differs from Stripe in {fields}")


# -- the module's emulator: a full sync, then changes and an incremental sync ---------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("streams")
    with Emulator(objects=30, seed=41) as emu:
        catalog = catalog_of(emu, tmp_path)
        first = sync(emu, tmp_path, catalog)
        warehouse = Warehouse()
        warehouse.apply(first)
        # Snapshots: the parametrized checks of the first sync do not depend on test order.
        full = {
            stream: (warehouse_rows(warehouse, stream), expected_rows(emu, stream))
            for stream in NAMES
        }
        yield {"emu": emu, "tmp": tmp_path, "catalog": catalog, "first": first,
               "warehouse": warehouse, "full": full, "first_requests": emu.requests}


def mutate_every_stream(emu: Emulator) -> dict[str, str]:
    """Creates, updates and deletes in every stream, as Stripe allows; ids worth checking."""
    rng = random.Random(5)
    ids: dict[str, str] = {}

    def some(stream: str, keep=lambda o: True) -> dict:
        return rng.choice([o for o in emu.objects(stream) if keep(o)])

    emu.advance(600)
    # Core streams and their children.
    emu.update("charges", some("charges")["id"], {"metadata": {"note": "changed"}})
    emu.create("charges")  # and its balance transaction
    emu.update("customers", some("customers")["id"], {"name": "Renamed"})
    methods = {m["customer"] for m in emu.objects("payment_methods")}
    emu.delete("customers", some("customers", lambda c: c["id"] not in methods)["id"])
    draft = emu.create("invoices", lines=2)
    emu.delete("invoices", draft["id"])
    emu.add_invoice_lines(emu.create("invoices", lines=3, status="open")["id"], 9)
    emu.create("subscriptions", items=2)
    emu.cancel_subscription(some("subscriptions", lambda s: s["status"] == "active")["id"])
    # Invoice items: created and deleted (their events), pulled into a draft invoice (no
    # event of their own: the invoice's lines name them).
    emu.create("invoice_items")
    emu.delete("invoice_items", some("invoice_items")["id"])
    pending = some("invoice_items", lambda i: i["invoice"] is None)
    emu.pull_invoice_items(emu.create("invoices", lines=1, status="draft")["id"], [pending["id"]])
    emu.create("payment_intents", status="requires_payment_method")
    intent = some("payment_intents", lambda p: p["status"] == "requires_payment_method")
    emu.update("payment_intents", intent["id"],
               {"status": "succeeded", "amount_received": intent["amount"]},
               event_type="payment_intent.succeeded")
    emu.create("setup_intents", status="requires_payment_method")
    emu.update("setup_intents", some("setup_intents", lambda s: s["status"] != "canceled")["id"],
               {"status": "canceled", "cancellation_reason": "abandoned"},
               event_type="setup_intent.canceled")
    customer = some("customers")
    ids["attached"] = emu.create("payment_methods", customer=customer["id"])["id"]
    emu.update("payment_methods", some("payment_methods")["id"], {"metadata": {"k": "v"}})
    ids["detached"] = some("payment_methods", lambda m: m["id"] != ids["attached"])["id"]
    emu.delete("payment_methods", ids["detached"])
    refundable = some("charges", lambda c: c["status"] == "succeeded" and not c["refunded"]
                      and not c["disputed"])
    ids["refund"] = emu.create("refunds", charge=refundable["id"], amount=100)["id"]
    emu.update("refunds", some("refunds", lambda r: r["id"] != ids["refund"])["id"],
               {"metadata": {"reason": "support"}})
    emu.create("disputes", charge=some("charges", lambda c: c["status"] == "succeeded"
                                       and not c["disputed"] and not c["refunded"])["id"])
    emu.update("disputes", some("disputes")["id"], {"status": "under_review"})
    emu.create("payouts")
    emu.update("payouts", some("payouts", lambda p: p["status"] == "in_transit")["id"]
               if any(p["status"] == "in_transit" for p in emu.objects("payouts"))
               else some("payouts")["id"], {"status": "paid"}, event_type="payout.paid")
    emu.create("transfers")
    emu.update("transfers", some("transfers")["id"], {"description": "Monthly payout"})
    emu.create("application_fees")
    fee = some("application_fees")
    emu.update("application_fees", fee["id"],
               {"amount_refunded": fee["amount"], "refunded": True},
               event_type="application_fee.refunded")
    # Catalogue: prices and plans are expanded (`tiers`), so events are fetched again.
    product = emu.create("products", name="Gift card")
    emu.update("products", some("products")["id"], {"description": "Now with more"})
    emu.delete("products", emu.create("products", name="Short-lived")["id"])
    tiered = next(p for p in emu.objects("prices") if p["billing_scheme"] == "tiered")
    ids["tiered"] = tiered["id"]
    emu.update("prices", tiered["id"], {
        "metadata": {"tiers": "cheaper"},
        "tiers": [{**tiered["tiers"][0], "unit_amount": 40, "unit_amount_decimal": "40"},
                  *tiered["tiers"][1:]],
    })
    emu.create("prices", product=product["id"], unit_amount=2500)
    emu.delete("prices", some("prices", lambda p: p["id"] != tiered["id"])["id"])
    emu.create("plans", product=product["id"], unit_amount=900)
    emu.update("plans", some("plans")["id"], {"nickname": "Legacy"})
    emu.delete("plans", some("plans", lambda p: p["billing_scheme"] == "per_unit")["id"])
    emu.create("coupons")
    emu.update("coupons", some("coupons")["id"], {"name": "Renamed coupon"})
    emu.delete("coupons", some("coupons")["id"])
    emu.create("promotion_codes")
    emu.update("promotion_codes", some("promotion_codes")["id"], {"active": False})
    emu.create("credit_notes", lines=2)
    emu.update("credit_notes", some("credit_notes")["id"], {"memo": "Goodwill"})
    emu.update("credit_notes", some("credit_notes", lambda n: n["status"] == "issued")["id"],
               {"status": "void", "voided_at": emu.clock}, event_type="credit_note.voided")
    emu.create("tax_rates")
    emu.update("tax_rates", some("tax_rates")["id"], {"active": False})
    # Checkout Sessions: none is announced by an event when created.
    ids["session"] = emu.create("checkout_sessions")["id"]
    emu.update("checkout_sessions", emu.create("checkout_sessions")["id"],
               {"status": "complete", "payment_status": "paid", "url": None},
               event_type="checkout.session.completed")
    emu.create("subscription_schedules")
    emu.update("subscription_schedules", some("subscription_schedules")["id"],
               {"status": "canceled", "canceled_at": emu.clock},
               event_type="subscription_schedule.canceled")
    # Connected accounts: only `account.updated` exists (the stream lists them whole).
    emu.create("accounts")
    emu.update("accounts", some("accounts")["id"], {"email": "new-owner@example.com"})
    emu.delete("accounts", some("accounts")["id"])
    emu.advance(5)
    return ids


@pytest.fixture(scope="module")
def changed(world):
    emu = world["emu"]
    ids = mutate_every_stream(emu)
    emu.clear_requests()
    second = sync(emu, world["tmp"], world["catalog"], state=world["first"].last_state)
    warehouse = copy.deepcopy(world["warehouse"])
    warehouse.apply(second)
    return {**world, "second": second, "after": warehouse, "ids": ids,
            "requests": emu.requests}


# -- the catalog and the table ---------------------------------------------------------------


def test_discover_lists_every_stream_with_schema_key_and_replication(tmp_path):
    run = run_tap("--discover", tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr
    streams = {s["tap_stream_id"]: s for s in json.loads(run.stdout)["streams"]}
    assert len(streams) >= 25
    reports = {"report_balance_activity", "report_balance_summary", "report_payout_reconciliation"}
    assert set(streams) == set(NAMES) | reports
    for name in reports:  # Stripe's own reports, selected by default, loaded by interval
        entry = streams.pop(name)
        assert entry["replication_method"] == "INCREMENTAL", name
        assert entry["replication_key"] == "updated", name
        root = next(md["metadata"] for md in entry["metadata"] if md["breadcrumb"] == [])
        assert root["selected-by-default"] is True, name
    for name, entry in streams.items():
        resource = RESOURCES_BY_NAME[name]
        assert entry["schema"]["properties"]["id"] == {"type": "string"}, name
        assert entry["key_properties"] == ["account_id", "id"], name
        incremental = resource.sync in (EVENTS, CREATED)
        assert entry["replication_method"] == ("INCREMENTAL" if incremental else "FULL_TABLE")
        assert entry.get("replication_key") == ("updated" if incremental else None), name
        root = next(md["metadata"] for md in entry["metadata"] if md["breadcrumb"] == [])
        assert root["selected-by-default"] is resource.selected_by_default, name
    assert not RESOURCES_BY_NAME["payment_methods"].selected_by_default  # a request per customer


def test_the_resource_table_keeps_stripes_limits():
    for resource in RESOURCES:
        # `GET /v1/events` takes at most 20 `types[]`; every stream reads its types at once.
        assert len(resource.feed_types) <= MAX_EVENT_TYPES, resource.name
        assert set(resource.delete_events) <= set(resource.event_types)
        for path in resource.expand:
            # Stripe expands at most four levels deep, counting the list's `data.`.
            assert len(f"data.{path}".split(".")) <= 4, (resource.name, path)
    modes = {r.name: r.sync for r in RESOURCES}
    assert modes["balance_transactions"] == modes["events"] == CREATED
    assert modes["accounts"] == FULL_TABLE  # read as themselves in a platform run
    assert modes["invoice_items"] == EVENTS
    assert {n for n, m in modes.items() if m == PARENT} == {
        "invoice_line_items", "subscription_items", "credit_note_line_items"}


def test_the_resource_table_matches_the_2024_06_20_spec():
    spec = openapi.spec()
    known_events = set(
        spec["paths"]["/v1/webhook_endpoints"]["post"]["requestBody"]["content"][
            "application/x-www-form-urlencoded"]["schema"]["properties"]["enabled_events"][
            "items"]["enum"]
    )
    paths = {_generic(p): ops for p, ops in spec["paths"].items()}
    for resource in RESOURCES:
        assert set(resource.event_types) <= known_events, resource.name
        listing = paths.get(_generic(resource.path)) or {}
        assert "get" in listing, f"{resource.name}: no GET {resource.path}"
        params = {p["name"]: p for p in listing["get"].get("parameters", [])}
        assert ("created" in params) == resource.created_filter or resource.name in (
            "invoice_items",  # filters on `date`, which invoice items have instead
        ), resource.name
        required = {n for n, p in params.items() if p.get("required") and p["in"] == "query"}
        assert required <= {key for key, _value in resource.list_params}, resource.name
        for key, _value in (*resource.list_params, *resource.list_variants):
            assert key in params, (resource.name, key)
        if resource.sync == EVENTS:
            retrieve = paths.get(_generic(resource.retrieve_path)) or {}
            assert "get" in retrieve, f"{resource.name}: no GET {resource.retrieve_path}"


def _generic(path: str) -> str:
    """`/v1/invoices/{invoice}/lines` and `/v1/invoices/{parent_id}/lines` alike."""
    return "/".join("{}" if part.startswith("{") else part for part in path.split("/"))


# -- every stream: a full sync, then an incremental one, both exact -------------------------


@pytest.mark.parametrize("stream", NAMES)
def test_full_sync_is_exact(world, stream):
    got, expected = world["full"][stream]
    assert expected, f"the emulator has no {stream}"
    assert_exact(got, expected, stream)


@pytest.mark.parametrize("stream", NAMES)
def test_incremental_sync_after_changes_is_exact(changed, stream):
    emu = changed["emu"]
    assert_exact(warehouse_rows(changed["after"], stream), expected_rows(emu, stream), stream)


def test_records_match_the_generated_schemas(world):
    first = world["first"]
    schemas = first.schemas()
    for stream in NAMES:
        validator = jsonschema.Draft7Validator(schemas[stream])
        for record in first.records(stream)[:50]:
            errors = [f"{list(e.absolute_path)}: {e.message[:100]}"
                      for e in validator.iter_errors(record)]
            assert not errors, (stream, record["id"], errors[:3])


def test_each_mode_reads_what_it_should(changed):
    """Events for EVENTS streams, a listing since the bookmark for CREATED ones, a full
    listing with a table version for FULL_TABLE ones."""
    second, requests = changed["second"], changed["requests"]
    lists = [r for r in requests if r.path != "/v1/events" and "limit" in r.query]
    listed = {r.path for r in lists}
    for resource in RESOURCES:
        path = resource.path
        if resource.sync == EVENTS and not resource.list_per:
            # Checkout Sessions also list those created since (no creation event).
            since = [r for r in lists if r.path == path]
            assert all("created[gte]" in r.query for r in since), resource.name
            assert bool(since) == (not resource.creation_event), resource.name
        elif resource.sync == FULL_TABLE:
            assert path in listed, resource.name
    versions = {m["stream"] for m in second.messages if m["type"] == "ACTIVATE_VERSION"}
    assert "accounts" in versions
    for run in (changed["first"], second):
        activated = {m["stream"] for m in run.messages if m["type"] == "ACTIVATE_VERSION"}
        assert not activated & {"balance_transactions", "events"}, "a CREATED stream's table " \
            "version would drop what Stripe no longer lists"
    # CREATED: from the bookmark, less the lag.
    bookmark = changed["first"].last_state["bookmarks"]["balance_transactions"]
    since = rfc3339_to_unix(bookmark["replication_key_value"]) - 60
    (txn_list,) = [r for r in lists if r.path == "/v1/balance_transactions"]
    assert int(txn_list.query["created[gte]"][0]) == since
    # EVENTS: one read of every type (no `types[]`) from the oldest bookmark, for all streams.
    events_requests = [r for r in requests if r.path == "/v1/events"]
    assert [r for r in events_requests if "starting_after" not in r.query] == events_requests[:1]
    assert all("types[]" not in r.query for r in events_requests)
    bookmarks = changed["first"].last_state["bookmarks"]
    oldest = min(
        rfc3339_to_unix(bookmarks[r.name]["replication_key_value"])
        for r in RESOURCES
        if r.sync == EVENTS and r.name in bookmarks and r.selected_by_default
    )
    assert int(events_requests[0].query["created[gte]"][0]) == oldest - 60


def test_expanded_fields_have_one_shape_from_lists_and_from_events(changed):
    """Prices are listed with `expand[]=data.tiers`; events never carry `tiers`, so the
    price an event names is fetched again with `expand[]=tiers`."""
    tiered = changed["ids"]["tiered"]
    first = {r["id"]: r for r in changed["first"].records("prices")}
    second = {r["id"]: r for r in changed["second"].records("prices")}
    assert first[tiered]["tiers"][0]["unit_amount"] == 50
    assert second[tiered]["tiers"][0]["unit_amount"] == 40
    requests = changed["requests"]
    refetch = [r for r in requests if r.path == f"/v1/prices/{tiered}"]
    assert refetch
    assert refetch[0].query["expand[]"] == ["tiers"]


def test_archived_prices_are_listed_too(world):
    """`GET /v1/prices` lists active prices unless asked for `active=false`."""
    asked = {r.query.get("active", [None])[0] for r in world["first_requests"]
             if r.path == "/v1/prices"}
    assert asked == {"true", "false"}
    archived = [r for r in world["first"].records("prices") if not r["active"]]
    assert archived
    assert len(archived) == sum(1 for p in world["emu"].objects("prices") if not p["active"])


def test_payment_methods_detached_become_deletes_and_sessions_appear_without_events(changed):
    second = changed["second"]
    ids = changed["ids"]
    detached = [r for r in second.records("payment_methods") if r["id"] == ids["detached"]]
    assert detached
    assert detached[0]["_sdc_deleted_at"]
    assert any(r["id"] == ids["attached"] for r in second.records("payment_methods"))
    assert any(r["id"] == ids["session"] for r in second.records("checkout_sessions"))
    assert any(r["id"] == ids["refund"] for r in second.records("refunds"))


# -- restricted keys -------------------------------------------------------------------------

RESTRICTED = "rk_test_noProductsNoCreditNotes7788"


@pytest.fixture(scope="module")
def restricted():
    readable = set(NAMES) - {"products", "credit_notes", "credit_note_line_items"}
    keys = {"sk_test_emulator": None, RESTRICTED: readable}
    with Emulator(objects=8, seed=43, api_keys=keys) as emu:
        yield emu


def test_a_restricted_key_fails_fast_naming_every_unreadable_stream(restricted, tmp_path):
    catalog = catalog_of(restricted, tmp_path)
    restricted.clear_requests()
    run = run_tap(config=emulator_config(restricted, api_key=RESTRICTED), catalog=catalog,
                  tmp_path=tmp_path)
    assert run.returncode != 0
    assert not run.records(), "the check runs before any stream starts"
    line = run.error_line
    for stream in ("products", "credit_notes", "credit_note_line_items"):
        assert f"stream '{stream}'" in line, line
    assert "'Products' read permission (rak_product_read)" in line
    assert "'Credit notes' read permission (rak_credit_note_read)" in line
    # The key has neither report permission: each report stream names both.
    for stream in ("report_balance_activity", "report_balance_summary",
                   "report_payout_reconciliation"):
        assert (f"stream '{stream}' needs the 'Report runs and report types' read permission "
                "(rak_report_run_write) and the 'Files' read permission (rak_file_read)") in line
    assert "skip_unreadable_streams" in line
    assert "stream 'charges'" not in line
    assert RESTRICTED not in run.stderr
    assert "7788" not in run.stderr
    # One cheap request per endpoint (a report type for the report streams), nothing more.
    report_types = [r for r in restricted.requests if r.path.startswith("/v1/reporting/")]
    assert sorted(r.path for r in report_types) == [
        "/v1/reporting/report_types/balance.summary.1",
        "/v1/reporting/report_types/balance_change_from_activity.itemized.3",
        "/v1/reporting/report_types/payout_reconciliation.itemized.5",
    ], report_types
    lists = [r for r in restricted.requests
             if r.path != "/v1/account" and r not in report_types]
    assert all(r.query.get("limit") == ["1"] for r in lists), lists
    assert len(lists) <= len(NAMES) + 3


def test_skip_unreadable_streams_syncs_the_rest_with_a_warning_each(restricted, tmp_path):
    catalog = catalog_of(restricted, tmp_path)
    run = run_tap(config=emulator_config(restricted, api_key=RESTRICTED,
                                         skip_unreadable_streams=True),
                  catalog=catalog, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    for stream in ("products", "credit_notes", "credit_note_line_items",
                   "report_balance_activity", "report_balance_summary",
                   "report_payout_reconciliation"):
        assert f"Skipping stream '{stream}'" in run.stderr
        assert not run.records(stream)
    for stream in ("charges", "prices", "payment_methods", "events", "balance_transactions"):
        assert len(run.records(stream)) == len(restricted.objects(stream)), stream


def test_events_permission_is_checked_for_streams_that_sync_through_events(tmp_path):
    from tap_stripe_connect.sync.permissions import find_unreadable
    from tap_stripe_connect.tap import TapStripeConnect

    key = "rk_test_noEvents0001"
    keys = {"sk_test_emulator": None, key: set(NAMES) - {"events"}}
    with Emulator(objects=3, seed=44, api_keys=keys) as emu:
        tap = TapStripeConnect(config=emulator_config(emu, api_key=key), validate_config=True)
        streams = ("charges", "balance_transactions", "invoice_line_items", "events")
        unreadable = {u.stream: u for u in find_unreadable(tap.run, streams)}
    # Charges (and children of an EVENTS parent) need the Events API; a CREATED stream
    # such as balance transactions does not, but the `events` stream itself does.
    assert set(unreadable) == {"charges", "invoice_line_items", "events"}
    assert str(unreadable["charges"]) == (
        "stream 'charges' needs the 'Events' read permission (rak_event_read)")


def test_the_emulator_serves_every_stream_in_the_2024_06_20_shape():
    from tests.test_emulator import _strict_schemas

    root = {"components": {"schemas": _strict_schemas()}}
    validators: dict[str, jsonschema.Draft202012Validator] = {}

    def errors(obj: dict) -> list[str]:
        name = obj["object"]
        if name not in validators:
            validators[name] = jsonschema.Draft202012Validator(
                {**root, "$ref": f"#/components/schemas/{name}"})
        return [f"{list(e.absolute_path)}: {e.message[:150]}"
                for e in validators[name].iter_errors(obj)]

    with Emulator(objects=20, seed=45) as emu:
        mutate_every_stream(emu)
        for stream, kind in KINDS.items():
            objects = emu.objects(stream)
            assert objects, stream
            for obj in objects[:30]:
                assert obj["object"] == kind.object
                assert not errors(obj), (stream, obj["id"], errors(obj)[:3])
        for event in emu.objects("events")[:150]:
            obj = event["data"]["object"]
            if not obj.get("deleted"):  # Stripe's deleted objects carry `deleted: true`
                assert not errors(obj), (event["type"], errors(obj)[:3])
