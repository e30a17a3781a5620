"""`api_version`: each version's schemas, and every record of every stream true to them.

A sync per version over the emulator, which answers in the shape of the `Stripe-Version`
asked for; each record is checked against the schema the tap declared for its stream,
strictly (tests/strict.py): a field typed string arriving as an object, a time left as an
integer or a field the schema does not declare fails here, not in a target's load.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from tap_stripe_connect.resources import REPORTS, RESOURCES
from tap_stripe_connect.streams import report_schema
from tap_stripe_connect.versions import API_VERSIONS, DEFAULT_API_VERSION, load_schema
from tests import openapi
from tests.conftest import ROOT, TapRun, emulator_config, run_tap
from tests.emulator import Emulator
from tests.openapi import generator, load_script
from tests.strict import first_problems

ENDIVE = "2026-10-28.endive"
ALL_STREAMS = tuple(r.name for r in RESOURCES)
#: Stripe's reports have the same columns whatever the API version: one schema each.
REPORT_SCHEMAS = {report.name: report_schema(report) for report in REPORTS}


def catalog_of_every_stream(emu: Emulator, tmp_path: Path, **config: t.Any) -> dict:
    """The catalog discovered with `config`, every stream selected (also those that are
    not by default)."""
    discovered = run_tap("--discover", config=emulator_config(emu, **config), tmp_path=tmp_path)
    assert discovered.returncode == 0, discovered.stderr[-3000:]
    catalog = json.loads(discovered.stdout)
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            if not entry["breadcrumb"]:
                entry["metadata"]["selected"] = True
    return catalog


def sync_every_stream(emu: Emulator, tmp_path: Path, **config: t.Any) -> TapRun:
    catalog = catalog_of_every_stream(emu, tmp_path, **config)
    run = run_tap(config=emulator_config(emu, **config), catalog=catalog, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def off_schema(run: TapRun, schemas: dict[str, dict]) -> dict[str, list[str]]:
    """Streams with records that break `schemas` strictly, with a few of their problems."""
    records = [
        (m["stream"], m["record"]) for m in run.messages if m["type"] == "RECORD"
    ]
    return first_problems(schemas, records)


@pytest.fixture(scope="module")
def emu() -> t.Iterator[Emulator]:
    # Varied pricing: discounted lines, coupons and more intervals, so more shapes are checked.
    with Emulator(objects=40, seed=15, varied_pricing=True) as emu:
        yield emu


@pytest.mark.parametrize("api_version", API_VERSIONS)
def test_every_stream_of_each_version_is_true_to_that_versions_schemas(
    emu: Emulator, tmp_path: Path, api_version: str
) -> None:
    emu.clear_requests()
    run = sync_every_stream(emu, tmp_path, api_version=api_version)
    # Every request asked for the version, and the tap declared that version's schemas.
    versions = {r.headers.get("Stripe-Version") for r in emu.requests if r.path.startswith("/v1/")}
    assert versions == {api_version}
    schemas = run.schemas()
    assert set(schemas) == set(ALL_STREAMS) | set(REPORT_SCHEMAS)
    for name in ALL_STREAMS:
        assert schemas[name] == load_schema(name, api_version), name
    for name, schema in REPORT_SCHEMAS.items():
        assert schemas[name] == schema, name
    # Every stream has records (so every shape is checked), each true to its schema.
    assert not [s for s in schemas if not run.records(s)]
    problems = off_schema(run, schemas)
    assert not problems, json.dumps(problems, indent=1)
    # The same objects as Stripe holds, whatever the version.
    for name in ("charges", "customers", "invoices", "subscriptions", "subscription_items"):
        assert len(run.records(name)) == len(emu.objects(name)), name


def test_2024_06_20_has_the_current_period_on_subscriptions(
    emu: Emulator, tmp_path: Path
) -> None:
    run = sync_every_stream(emu, tmp_path)  # no api_version: the default
    assert DEFAULT_API_VERSION == "2024-06-20"
    sub = run.records("subscriptions")[0]
    stored = next(s for s in emu.objects("subscriptions") if s["id"] == sub["id"])
    assert sub["current_period_end"].endswith("Z")
    assert "parent" not in run.records("invoices")[0]
    assert stored["current_period_end"] == _unix(sub["current_period_end"])


def test_2026_10_28_endive_moves_periods_to_items_and_invoice_links_to_parent(
    emu: Emulator, tmp_path: Path
) -> None:
    run = sync_every_stream(emu, tmp_path, api_version=ENDIVE)
    subs = {s["id"]: s for s in emu.objects("subscriptions")}
    for sub in run.records("subscriptions"):
        assert "current_period_end" not in sub
        assert "current_period_start" not in sub
    items = run.records("subscription_items")
    assert items
    for item in items:
        stored = subs[item["subscription"]]
        # Times converted to RFC 3339: the tap knows the new fields are times.
        assert _unix(item["current_period_end"]) == stored["current_period_end"]
        assert _unix(item["current_period_start"]) == stored["current_period_start"]
    invoices = {i["id"]: i for i in emu.objects("invoices")}
    linked = [i for i in run.records("invoices") if invoices[i["id"]].get("subscription")]
    assert linked
    for invoice in linked:
        assert "subscription" not in invoice
        details = invoice["parent"]["subscription_details"]
        assert details["subscription"] == invoices[invoice["id"]]["subscription"]
    lines = run.records("invoice_line_items")
    assert all("price" not in line and "type" not in line for line in lines)
    assert any((line.get("pricing") or {}).get("price_details", {}).get("price") for line in lines)


def test_2024_shaped_objects_break_the_2026_schemas(emu: Emulator, tmp_path: Path) -> None:
    """What `api_version` did before 2026-10-28.endive had its schemas: the strict check
    names every field a version moved (this check is what the sync tests rely on)."""
    run = sync_every_stream(emu, tmp_path)  # 2024-06-20 records
    endive = {name: load_schema(name, ENDIVE) for name in ALL_STREAMS}
    problems = off_schema(run, {**endive, **REPORT_SCHEMAS})
    assert {"subscriptions", "invoices", "invoice_line_items", "charges"} <= set(problems)
    for stream, moved in (("subscriptions", "'current_period_end'"),
                          ("invoices", "'subscription'"), ("invoice_line_items", "'price'"),
                          ("charges", "'invoice'")):
        assert "Additional properties are not allowed" in problems[stream][0]
        assert moved in problems[stream][0], (stream, problems[stream][0])


def test_a_field_typed_string_arriving_expanded_is_caught(
    emu: Emulator, tmp_path: Path
) -> None:
    """Stripe answering with an expanded object where the schema has an id: a target
    would fail its load on the record; the strict check fails first, naming the field."""
    charge = dict(emu.objects("charges")[0])
    customer = next(c for c in emu.objects("customers") if c["id"] == charge["customer"])
    charge["customer"] = customer  # expanded, unasked
    body = {"object": "list", "data": [charge], "has_more": False, "url": "/v1/charges"}
    emu.inject(200, count=50, path_prefix="/v1/charges", body=body)
    try:
        catalog = catalog_of_every_stream(emu, tmp_path)
        for stream in catalog["streams"]:
            for entry in stream["metadata"]:
                if not entry["breadcrumb"]:
                    entry["metadata"]["selected"] = stream["tap_stream_id"] == "charges"
        run = run_tap(config=emulator_config(emu), catalog=catalog, tmp_path=tmp_path)
    finally:
        emu.clear_faults()
    assert run.returncode == 0, run.stderr[-3000:]
    assert [r["id"] for r in run.records("charges")] == [charge["id"]]
    problems = off_schema(run, run.schemas())
    assert list(problems) == ["charges"]
    assert problems["charges"] == [
        f"{charge['id']}: customer: object where the schema has ['string', 'null']"
    ]


def test_an_unknown_api_version_is_refused_naming_both_versions(
    emu: Emulator, tmp_path: Path
) -> None:
    for args in ((), ("--discover",)):
        run = run_tap(*args, config=emulator_config(emu, api_version="2025-03-31.basil"),
                      tmp_path=tmp_path)
        assert run.returncode != 0
        assert run.error_line == (
            "tap-stripe-connect: error: Invalid settings: setting 'api_version' must be "
            "'2024-06-20' or '2026-10-28.endive', not '2025-03-31.basil'."
        )
        assert not run.records()


def _unix(text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


# -- the schemas and their source ---------------------------------------------------------

EXTRACTOR = ROOT / "scripts" / "extract_stripe_python.py"


extractor = load_script(EXTRACTOR)


def test_the_vendored_2026_shapes_are_what_stripe_python_16_1_0_declares(tmp_path: Path) -> None:
    """The extractor, reading the installed `stripe` 16.1.0's source, reproduces the
    vendored file byte for byte (the package is found, never imported)."""
    vendored = extractor.vendored_path(ENDIVE)
    assert vendored == generator.SPECS[ENDIVE]
    assert vendored.stat().st_size < 200_000, "keep the vendored file compressed"
    result = subprocess.run(
        [sys.executable, str(EXTRACTOR), "--check"], capture_output=True, text=True,
        check=False, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    info = generator.load_spec(vendored)["info"]
    assert info == {"version": ENDIVE,
                    "x-source": "stripe-python 16.1.0 (PyPI `stripe`), typed classes"}


def test_the_unix_time_rule_finds_every_time_stripe_marks_in_2024_06_20() -> None:
    """The typed classes have no `unix-time` marker; the rule that replaces it, applied to
    the 2024-06-20 description (which has one), misses no marked time and flags only
    fields documented there as times."""
    missed, extra = [], set()
    for name, component in openapi.spec()["components"]["schemas"].items():
        for field, prop in (component.get("properties") or {}).items():
            if prop.get("type") != "integer":
                continue
            marked = prop.get("format") == "unix-time"
            found = bool(extractor.UNIX_TIME_DOC.search(prop.get("description", ""))
                         or extractor.UNIX_TIME_NAME.match(field))
            if marked and not found:
                missed.append((name, field))
            elif found and not marked:
                extra.add((name, field))
    assert not missed
    # The 2024 generator's own list of times the description forgets to mark, and five
    # more, each described as a time ("The time that the flight departed.").
    assert extra >= generator.UNDECLARED_UNIX_TIMES
    assert extra - generator.UNDECLARED_UNIX_TIMES == {
        ("invoice", "subscription_proration_date"),
        ("issuing.settlement", "clearing_date"),
        ("issuing_transaction_flight_data", "departure_at"),
        ("issuing_transaction_lodging_data", "check_in_at"),
        ("topup", "expected_availability_date"),
    }


@pytest.mark.parametrize("api_version", API_VERSIONS)
def test_the_committed_schemas_of_each_version_match_the_generator(api_version: str) -> None:
    components = generator.load_components(generator.SPECS[api_version])
    expected = generator.render(RESOURCES, components)
    folder = generator.schema_dir(api_version)
    assert not generator.differences(expected, folder)
    for resource in RESOURCES:
        schema = load_schema(resource.name, api_version)
        Draft7Validator.check_schema(schema)
        props = schema["properties"]
        assert props["id"] == {"type": "string"}
        assert props["updated"] == {"type": ["string", "null"], "format": "date-time"}
        if "created" in props:  # line items have none
            assert props["created"]["format"] == "date-time", resource.name


def test_the_2026_schemas_follow_stripes_changes() -> None:
    subs = load_schema("subscriptions", ENDIVE)["properties"]
    items = load_schema("subscription_items", ENDIVE)["properties"]
    assert "current_period_end" not in subs
    assert items["current_period_end"] == {"type": "string", "format": "date-time"}
    invoices = load_schema("invoices", ENDIVE)["properties"]
    assert "subscription" not in invoices
    assert "charge" not in invoices
    details = invoices["parent"]["properties"]["subscription_details"]["properties"]
    assert details["subscription"] == {"type": "string"}
    assert invoices["due_date"] == {"type": ["string", "null"], "format": "date-time"}
    line = load_schema("invoice_line_items", ENDIVE)["properties"]
    assert "price" not in line
    assert "pricing" in line
    prices = load_schema("prices", ENDIVE)["properties"]
    assert prices["unit_amount_decimal"] == {"type": ["string", "null"]}
    assert "tiers" in prices
    assert "deleted" in prices


def test_an_unknown_version_has_no_schemas() -> None:
    with pytest.raises(ValueError, match=re.escape("'2024-06-20' or '2026-10-28.endive'")):
        load_schema("charges", "2025-03-31.basil")


def test_2026_incremental_syncs_keep_the_2026_shape_whatever_the_events_version(
    tmp_path: Path,
) -> None:
    """Events are rendered in the version of their day: a 2024-06-20 event's object is
    fetched again in 2026-10-28.endive; a 2026 event's payload is used as it is."""
    config = {"api_version": ENDIVE}
    schemas = {name: load_schema(name, ENDIVE) for name in ALL_STREAMS}
    with Emulator(objects=20, seed=3) as emu:
        first = sync_every_stream(emu, tmp_path, **config)
        state = first.last_state
        for version in ("2024-06-20", ENDIVE):
            emu.set_event_api_version(version)
            sub = emu.objects("subscriptions")[0]["id"]
            inv = emu.objects("invoices")[0]["id"]
            emu.update("subscriptions", sub, {"metadata": {"v": version}})
            emu.update("invoices", inv, {"metadata": {"v": version}})
            emu.clear_requests()
            catalog = catalog_of_every_stream(emu, tmp_path, **config)
            run = run_tap(config=emulator_config(emu, **config), catalog=catalog,
                          state=state, tmp_path=tmp_path)
            assert run.returncode == 0, run.stderr[-3000:]
            state = run.last_state
            assert [r["id"] for r in run.records("subscriptions")] == [sub]
            assert [r["id"] for r in run.records("invoices")] == [inv]
            assert run.records("subscriptions")[0]["metadata"] == {"v": version}
            assert "parent" in run.records("invoices")[0]
            problems = off_schema(run, schemas)
            assert not problems, json.dumps(problems, indent=1)
            fetched = {r.path for r in emu.requests}
            assert (f"/v1/subscriptions/{sub}" in fetched) == (version != ENDIVE), version
