"""singer-sdk's stream maps, flattening and catalog selection with the tap's schemas.

Every test runs the real CLI against the emulator over HTTP.
"""

from __future__ import annotations

import json

import pytest

from tests.catalogs import catalog_selecting
from tests.conftest import TapRun, emulator_config, run_tap
from tests.emulator import Emulator

DESELECTED = ("receipt_url", "fraud_details", "billing_details")


@pytest.fixture(scope="module")
def emu():
    with Emulator(objects=30, seed=41) as emulator:
        charge = emulator.objects("charges")[0]
        emulator.update("charges", charge["id"], {"metadata": {"order_id": "6735", "ref": "x"}})
        yield emulator


def sync(emu: Emulator, tmp_path, catalog: dict | None = None, **config) -> TapRun:
    run = run_tap(config=emulator_config(emu, **config), catalog=catalog, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def test_stream_map_adds_a_computed_field_to_selected_streams_and_fields(emu, tmp_path):
    catalog = catalog_selecting(emu, tmp_path, {"charges": DESELECTED, "customers": ()})
    run = sync(
        emu,
        tmp_path,
        catalog=catalog,
        stream_maps={"charges": {"amount_major": "amount / 100"}},
    )
    assert {m["stream"] for m in run.messages if m["type"] == "RECORD"} == {
        "charges",
        "customers",
    }
    charges = run.records("charges")
    assert len(charges) == len(emu.objects("charges"))
    assert len(run.records("customers")) == len(emu.objects("customers"))
    schema = run.schemas()["charges"]["properties"]
    assert "amount_major" in schema
    for record in charges:
        assert record["amount_major"] == pytest.approx(record["amount"] / 100)
        assert not set(DESELECTED) & set(record), "a deselected field was emitted"
        assert isinstance(record["metadata"], dict)
    assert not set(DESELECTED) & set(schema), "a deselected field is in the SCHEMA"
    tagged = [r for r in charges if r["metadata"]]
    assert tagged
    assert tagged[0]["metadata"] == {"order_id": "6735", "ref": "x"}
    # The summary counts what was written.
    assert f"Sync finished: {len(charges) + len(run.records('customers')):,} records" in (
        run.stderr
    )


def test_flattening_keeps_metadata_one_column(emu, tmp_path):
    catalog = catalog_selecting(emu, tmp_path, {"charges": (), "invoices": ()})
    run = sync(emu, tmp_path, catalog=catalog, flattening_enabled=True, flattening_max_depth=1)
    schemas = run.schemas()
    for stream in ("charges", "invoices"):
        properties = schemas[stream]["properties"]
        # Free-form `metadata` has no properties to flatten: it stays one (JSON) column.
        assert "metadata" in properties
        assert not [p for p in properties if p.startswith("metadata__")], stream
        for record in run.records(stream):
            assert not [k for k in record if k.startswith("metadata__")], stream
            # The SDK passes a null object (`shipping: null`) on unflattened; loaders
            # ignore fields outside the SCHEMA. Nothing else may be outside it.
            outside = {k: v for k, v in record.items() if k not in properties}
            assert not {k: v for k, v in outside.items() if v is not None}, stream
    charges = run.records("charges")
    assert "billing_details__address" in schemas["charges"]["properties"]
    tagged = [r for r in charges if r["metadata"] not in ("{}", {}, None)]
    assert tagged
    metadata = tagged[0]["metadata"]
    assert (json.loads(metadata) if isinstance(metadata, str) else metadata) == {
        "order_id": "6735",
        "ref": "x",
    }
    # Only the selected streams, not their children, nor the other streams.
    assert {m["stream"] for m in run.messages if m["type"] == "RECORD"} == {"charges", "invoices"}
