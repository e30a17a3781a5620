"""The committed JSON Schemas: up to date with the generator, valid, and typed as intended."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
from jsonschema import Draft7Validator

from tap_stripe_connect.resources import RESOURCES, RESOURCES_BY_NAME

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "generate_schemas.py"
SCHEMA_DIR = ROOT / "tap_stripe_connect" / "schemas"


def _load_generator() -> t.Any:
    spec = importlib.util.spec_from_file_location("generate_schemas", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = _load_generator()


@pytest.fixture(scope="module")
def components() -> dict:
    path = generator.spec_path()
    if not path.is_file():
        pytest.fail(
            f"Stripe OpenAPI spec missing at {path}: the schema tests need it "
            f"(expected at ../shared/stripe-openapi/, or set {generator.SPEC_ENV})."
        )
    return generator.load_components(path)


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


def test_check_mode_exits_zero_when_up_to_date(components: dict) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--spec", str(generator.spec_path())],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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
