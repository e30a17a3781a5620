"""The committed JSON Schemas: up to date with the generator, valid, and typed as intended."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from tap_stripe_connect.resources import RESOURCES, RESOURCES_BY_NAME
from tests import openapi
from tests.openapi import SCRIPT, generator

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = ROOT / "tap_stripe_connect" / "schemas"




@pytest.fixture(scope="module")
def components() -> dict:
    return openapi.spec()["components"]["schemas"]


def committed(name: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{name}.json").read_text(encoding="utf-8"))


def walk(schema: dict) -> t.Iterator[dict]:
    """Every (sub)schema of a schema: the schema, properties, items, map values, options."""
    yield schema
    for sub in schema.get("properties", {}).values():
        yield from walk(sub)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from walk(schema[key])
    for option in schema.get("anyOf", []):
        yield from walk(option)


def test_committed_schemas_match_generator(components: dict) -> None:
    expected = generator.render(RESOURCES, components)
    stale = generator.differences(expected, SCHEMA_DIR)
    assert not stale, f"out of date: {stale}; run `python scripts/generate_schemas.py`"


def test_the_vendored_spec_is_stripes_2024_06_20_description() -> None:
    assert openapi.SPEC == ROOT / "vendor" / "stripe-openapi" / "spec3.2024-06-20.json.gz"
    assert openapi.SPEC.stat().st_size < 1_000_000, "keep the vendored copy compressed"
    info = openapi.spec()["info"]
    assert (info["title"], info["version"]) == ("Stripe API", "2024-06-20")


def test_the_generator_reproduces_the_committed_schemas_from_the_vendored_spec(
    tmp_path: Path,
) -> None:
    """`generate_schemas.py` with no --spec and no env: the vendored copy, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if k != generator.SPEC_ENV}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,  # not the checkout: nothing may be found relative to the caller
        env={**env, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # And writing them from scratch gives the same bytes as the committed files.
    out = tmp_path / "schemas"
    generator.write(generator.render(RESOURCES, openapi.spec()["components"]["schemas"]), out)
    written = {p.name: p.read_bytes() for p in out.glob("*.json")}
    assert written == {p.name: p.read_bytes() for p in SCHEMA_DIR.glob("*.json")}


def test_nothing_outside_the_repository_is_needed() -> None:
    """A user's clone has no ../shared beside it: no script or test may read from there."""
    tracked = subprocess.run(
        ["git", "ls-files", "*.py", "*.sh", ".ci/run", "*.yml"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout.split()
    outside = [
        name for name in tracked
        if name != "tests/test_schemas.py"
        and any(s in (ROOT / name).read_text() for s in ("/work/shared", '"shared"', "../shared"))
    ]
    assert not outside


def test_check_mode_reports_differences(components: dict, tmp_path: Path) -> None:
    expected = generator.render(RESOURCES, components)
    generator.write(expected, tmp_path)
    (tmp_path / "charges.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "gone.json").write_text("{}\n", encoding="utf-8")
    assert generator.differences(expected, tmp_path) == ["charges.json", "gone.json"]
    generator.write(expected, tmp_path)
    assert generator.differences(expected, tmp_path) == []
    assert not (tmp_path / "gone.json").exists()


def test_generation_is_deterministic(components: dict) -> None:
    assert generator.render(RESOURCES, components) == generator.render(RESOURCES, components)


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.name)
def test_every_resource_has_a_valid_schema(resource: t.Any) -> None:
    path = SCHEMA_DIR / f"{resource.name}.json"
    assert path.is_file(), f"{path} missing; run `python scripts/generate_schemas.py`"
    schema = committed(resource.name)
    Draft7Validator.check_schema(schema)
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is True
    props = schema["properties"]
    assert props["id"] == {"type": "string"}
    assert props["account_id"] == {"type": ["string", "null"]}
    assert props["_sdc_deleted_at"] == {"type": ["string", "null"], "format": "date-time"}
    # The stream's replication key must be in the schema.
    assert props["updated"] == {"type": ["string", "null"], "format": "date-time"}
    assert len(path.read_bytes()) < 300_000
    if resource.parent:
        parent_id = RESOURCES_BY_NAME[resource.parent].object
        assert props[parent_id] == {"type": ["string", "null"]}


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.name)
def test_no_prose_enums_or_extensions(resource: t.Any) -> None:
    allowed = {"type", "format", "properties", "items", "additionalProperties", "anyOf"}
    for node in walk(committed(resource.name)):
        # No description/enum/title/maxLength/x-*/$ref/nullable: only structure and types.
        assert set(node) <= allowed, f"{resource.name}: {set(node) - allowed} in {node}"
        assert node.get("format") in (None, "date-time")
        if node.get("format") == "date-time":
            assert "string" in node["type"]


def test_spot_checks() -> None:
    charges = committed("charges")["properties"]
    assert charges["created"] == {"type": "string", "format": "date-time"}
    assert charges["amount"] == {"type": "integer"}
    assert charges["customer"] == {"type": ["string", "null"]}
    assert charges["refunds"]["properties"]["data"]["items"]["properties"]["amount"] == {
        "type": "integer"
    }

    metadata = committed("customers")["properties"]["metadata"]
    assert metadata["type"] in ("object", ["object", "null"])
    assert metadata["additionalProperties"] == {"type": ["string", "null"]}

    invoices = committed("invoices")["properties"]
    lines = invoices["lines"]
    assert "object" in lines["type"]
    assert set(lines["properties"]) >= {"object", "data", "has_more", "url"}
    line = lines["properties"]["data"]["items"]
    assert line["properties"]["amount"] == {"type": "integer"}
    assert line["properties"]["period"]["properties"]["start"]["format"] == "date-time"
    assert invoices["status_transitions"]["properties"]["paid_at"] == {
        "type": ["string", "null"],
        "format": "date-time",
    }

    items = committed("subscriptions")["properties"]["items"]
    item = items["properties"]["data"]["items"]
    assert item["properties"]["created"] == {"type": "string", "format": "date-time"}


def test_expanded_field_is_the_object(components: dict) -> None:
    charges = dataclasses.replace(RESOURCES_BY_NAME["charges"], expand=("customer",))
    customer = generator.build_schema(charges, components)["properties"]["customer"]
    options = customer["anyOf"]
    assert {"type": ["string", "null"]} in options
    objects = [o for o in options if "properties" in o]
    assert any(o["properties"].get("email") == {"type": ["string", "null"]} for o in objects)
    # Times inside the expanded object are converted too.
    assert any(o["properties"].get("created", {}).get("format") == "date-time" for o in objects)
    Draft7Validator.check_schema({"type": "object", "properties": {"customer": customer}})
    validator = Draft7Validator({"type": "object", "properties": {"customer": customer}})
    for value in ("cus_123", None, {"id": "cus_123", "object": "customer", "email": None}):
        assert validator.is_valid({"customer": value}), value
    # Unexpanded, the same field is the id.
    plain = generator.build_schema(RESOURCES_BY_NAME["charges"], components)
    assert plain["properties"]["customer"] == {"type": ["string", "null"]}


def test_committed_schemas_accept_a_realistic_record() -> None:
    validator = Draft7Validator(committed("charges"))
    record = {
        "id": "ch_1",
        "object": "charge",
        "amount": 100,
        "created": "2026-01-01T00:00:00Z",
        "customer": "cus_1",
        "metadata": {"order": "42"},
        "account_id": "acct_1",
        "updated": "2026-01-01T00:00:00Z",
        "_sdc_deleted_at": None,
        "some_future_field": {"anything": True},
    }
    errors = [e.message for e in validator.iter_errors(record)]
    assert not errors


def test_expanding_an_unknown_field_is_an_error(components: dict) -> None:
    charges = dataclasses.replace(RESOURCES_BY_NAME["charges"], expand=("customr",))
    with pytest.raises(ValueError, match="customr"):
        generator.build_schema(charges, components)
