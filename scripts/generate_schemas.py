"""Generate the tap's JSON Schemas, per Stripe API version, from vendored descriptions.

One schema per entry of `tap_stripe_connect.resources.RESOURCES`, taken from
`components.schemas[resource.object]`: field names and types only (no prose, no enums,
no length limits), Unix times as `date-time` strings (the tap converts them using these
formats), nested objects resolved to a limited depth.

    python scripts/generate_schemas.py            # write the schema files of every version
    python scripts/generate_schemas.py --check    # exit 1 if the committed files differ
    python scripts/generate_schemas.py --api-version 2024-06-20 --spec PATH
        (or STRIPE_OPENAPI_SPEC=PATH: another copy of that version's description)

Sources (see the READMEs beside them), both OpenAPI `components.schemas`, `.json.gz` or
plain `.json`:
- 2024-06-20: Stripe's OpenAPI description, `vendor/stripe-openapi/`;
  schemas in `tap_stripe_connect/schemas/*.json` (the default version's folder);
- 2026-10-28.endive: the typed classes of `stripe` (stripe-python) 16.1.0 extracted by
  `scripts/extract_stripe_python.py` into `vendor/stripe-python/`;
  schemas in `tap_stripe_connect/schemas/2026-10-28.endive/*.json`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import typing as t
from pathlib import Path

from tap_stripe_connect.resources import RESOURCES, RESOURCES_BY_NAME, Resource
from tap_stripe_connect.versions import API_VERSIONS, DEFAULT_API_VERSION, schema_folder

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tap_stripe_connect"
# The default version's (2024-06-20) folder and description.
SCHEMA_DIR = PACKAGE / schema_folder(DEFAULT_API_VERSION)
DEFAULT_SPEC = ROOT / "vendor" / "stripe-openapi" / "spec3.2024-06-20.json.gz"
SPEC_ENV = "STRIPE_OPENAPI_SPEC"

# The vendored description of each version the tap offers.
SPECS: dict[str, Path] = {
    "2024-06-20": DEFAULT_SPEC,
    "2026-10-28.endive": ROOT / "vendor" / "stripe-python" / "components.2026-10-28.endive.json.gz",
}
assert set(SPECS) == set(API_VERSIONS), "a vendored description for every version"


def schema_dir(api_version: str) -> Path:
    return PACKAGE / schema_folder(api_version)

# Nested objects deeper than this (the resource itself is depth 0) become generic
# objects: Stripe's objects reference each other widely, and fully resolved schemas
# would be megabytes. The items of embedded lists (`invoice.lines`) count one level
# deeper than the list object that holds them.
MAX_DEPTH = 4

# Fields the tap adds to every record (see `StripeStream.shape` and deletion events).
TAP_FIELDS: dict[str, dict[str, t.Any]] = {
    "account_id": {"type": ["string", "null"]},
    # The replication key: the SDK refuses a replication key missing from the schema.
    "updated": {"type": ["string", "null"], "format": "date-time"},
    "_sdc_deleted_at": {"type": ["string", "null"], "format": "date-time"},
}

# Unix times the 2024-06-20 spec forgets to mark `format: unix-time` (component, field);
# each is documented as a Unix timestamp in its description.
UNDECLARED_UNIX_TIMES: frozenset[tuple[str, str]] = frozenset(
    {
        ("subscription_item", "created"),
        ("account_terms_of_service", "date"),
        ("card_issuing_account_terms_of_service", "date"),
        ("payment_intent_next_action_pix_display_qr_code", "expires_at"),
        ("payment_method_options_pix", "expires_at"),
    }
)

Schema = dict[str, t.Any]


def spec_path(cli_value: str | None = None, api_version: str = DEFAULT_API_VERSION) -> Path:
    """`--spec`, else `$STRIPE_OPENAPI_SPEC`, else the vendored copy of the version."""
    return Path(cli_value or os.environ.get(SPEC_ENV) or SPECS[api_version])


def load_components(path: Path) -> dict[str, Schema]:
    """`components.schemas` of the OpenAPI description."""
    if not path.is_file():
        raise FileNotFoundError(
            f"Stripe OpenAPI spec not found at {path} (pass --spec PATH or set {SPEC_ENV})"
        )
    return t.cast("dict[str, Schema]", load_spec(path)["components"]["schemas"])


def load_spec(path: Path = DEFAULT_SPEC) -> dict[str, t.Any]:
    """The whole OpenAPI description, from `.json` or gzip-compressed `.json.gz`."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return t.cast("dict[str, t.Any]", json.loads(raw))


def _typed(kind: str, nullable: bool, **extra: t.Any) -> Schema:
    """A plain type name when not nullable, `[kind, "null"]` when it is."""
    return {"type": [kind, "null"] if nullable else kind, **extra}


def _generic_object() -> Schema:
    # Polymorphic, free-form or too-deep objects: targets store them as JSON. Always
    # nullable, since nothing below is checked anyway.
    return {"type": ["object", "null"]}


def _ref_name(node: Schema) -> str:
    return str(node["$ref"]).rsplit("/", 1)[-1]


def resolve_object(
    name: str,
    components: dict[str, Schema],
    *,
    depth: int,
    nullable: bool,
    seen: tuple[str, ...] = (),
) -> Schema:
    """The JSON Schema of the component `name`, nested `depth` objects deep."""
    component = components.get(name)
    # Stop on cycles (e.g. a component reaching itself through its sub-objects).
    if component is None or name in seen:
        return _generic_object()
    if not component.get("properties"):
        # Some components are `anyOf` several objects; some (payment method details
        # such as `destination_details_affirm`) have no fields yet, and an empty
        # `properties` would make the SDK drop whatever Stripe adds there later.
        return _generic_object()
    return _object(component, components, depth=depth, nullable=nullable, seen=(*seen, name))


def _object(
    node: Schema,
    components: dict[str, Schema],
    *,
    depth: int,
    nullable: bool,
    seen: tuple[str, ...],
) -> Schema:
    if depth > MAX_DEPTH:
        return _generic_object()
    properties = _properties(node, components, depth=depth, seen=seen)
    return _typed("object", nullable, properties=properties)


def _properties(
    node: Schema,
    components: dict[str, Schema],
    *,
    depth: int,
    seen: tuple[str, ...],
    expand: tuple[str, ...] = (),
) -> dict[str, Schema]:
    """The converted properties of an object; `seen[-1]` is the component they belong to."""
    properties = {}
    required = set(node.get("required") or ())
    for name, prop in node["properties"].items():
        if (seen[-1], name) in UNDECLARED_UNIX_TIMES:
            declared = {**prop, "format": "unix-time"}
        else:
            declared = prop
        if name not in required:
            # Stripe leaves out properties that are not `required` (for example fields
            # returned only when expanded, such as `customer.sources`): they may be null.
            declared = {**declared, "nullable": True}
        properties[name] = convert(
            declared, components, depth=depth, seen=seen, expand=name in expand
        )
    return properties


def convert(
    node: Schema,
    components: dict[str, Schema],
    *,
    depth: int,
    seen: tuple[str, ...] = (),
    expand: bool = False,
) -> Schema:
    """JSON Schema for one OpenAPI property of an object at `depth`.

    `expand`: the property is requested with `expand[]`, so Stripe returns the object.
    """
    nullable = bool(node.get("nullable"))
    if "$ref" in node:
        return resolve_object(
            _ref_name(node), components, depth=depth + 1, nullable=nullable, seen=seen
        )
    if "anyOf" in node:
        refs = [_ref_name(option) for option in node["anyOf"] if "$ref" in option]
        is_id = any(option.get("type") == "string" for option in node["anyOf"])
        if is_id and refs:
            # Expandable field: Stripe sends the id unless asked to expand it, and even
            # then may send the id for some (e.g. objects from another account).
            id_schema = _typed("string", nullable)
            if not expand:
                return id_schema
            objects = [
                resolve_object(ref, components, depth=depth + 1, nullable=False, seen=seen)
                for ref in refs
            ]
            return {"anyOf": [id_schema, *objects]}
        if len(refs) == 1 and len(node["anyOf"]) == 1:
            # Stripe writes a nullable nested object as `anyOf: [{$ref}]` + nullable.
            return resolve_object(
                refs[0], components, depth=depth + 1, nullable=nullable, seen=seen
            )
        return _generic_object()
    kind = node.get("type")
    if kind == "object":
        if "properties" in node:
            # Inline objects are Stripe's embedded sub-lists: {object, data, has_more, url}.
            schema = _object(node, components, depth=depth + 1, nullable=nullable, seen=seen)
            if "has_more" in node["properties"]:
                # Stripe's responses also carry `total_count` on embedded lists such as
                # `invoice.lines`, though the OpenAPI description omits it.
                schema["properties"].setdefault("total_count", _typed("integer", True))
            return schema
        if isinstance(node.get("additionalProperties"), dict):
            # Maps such as `metadata`: keep as an object, values as declared (nullable,
            # since a key can be unset).
            values = convert(node["additionalProperties"], components, depth=depth + 1, seen=seen)
            values = _with_null(values)
            return _typed("object", nullable, additionalProperties=values)
        return _generic_object()
    if kind == "array":
        items = convert(node.get("items") or {}, components, depth=depth, seen=seen)
        return _typed("array", nullable, items=items)
    if kind == "integer" and node.get("format") == "unix-time":
        # The tap turns Unix seconds into RFC 3339 strings wherever the schema says so.
        return _typed("string", nullable, format="date-time")
    if kind in ("string", "integer", "number", "boolean"):
        return _typed(kind, nullable)
    return {}


def _with_null(schema: Schema) -> Schema:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    return schema


def build_schema(resource: Resource, components: dict[str, Schema]) -> Schema:
    """The stream schema of one resource."""
    component = components[resource.object]
    unknown = set(resource.expand) - set(component.get("x-expandableFields", ()))
    if unknown:
        raise ValueError(f"{resource.name}: {sorted(unknown)} are not expandable fields")
    properties = _properties(
        component, components, depth=0, seen=(resource.object,), expand=resource.expand
    )
    properties["id"] = {"type": "string"}
    if resource.parent:
        # Child records carry their parent's id (`line_item.invoice`).
        parent = RESOURCES_BY_NAME[resource.parent]
        properties[parent.object] = {"type": ["string", "null"]}
    properties.update(TAP_FIELDS)
    return {"type": "object", "properties": properties, "additionalProperties": True}


def render(resources: t.Iterable[Resource], components: dict[str, Schema]) -> dict[str, str]:
    """File name -> file text, for every resource."""
    texts = {}
    for resource in resources:
        schema = build_schema(resource, components)
        texts[f"{resource.name}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return texts


def differences(expected: dict[str, str], schema_dir: Path = SCHEMA_DIR) -> list[str]:
    """Files that are missing, different or no longer in the resource table."""
    existing = {path.name for path in schema_dir.glob("*.json")}
    changed = [
        name
        for name, text in expected.items()
        if name not in existing or (schema_dir / name).read_text(encoding="utf-8") != text
    ]
    stale = sorted(existing - expected.keys())
    return sorted(changed) + stale


def write(expected: dict[str, str], schema_dir: Path = SCHEMA_DIR) -> None:
    schema_dir.mkdir(parents=True, exist_ok=True)
    for name, text in expected.items():
        (schema_dir / name).write_text(text, encoding="utf-8")
    for path in schema_dir.glob("*.json"):
        if path.name not in expected:
            path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--api-version", choices=API_VERSIONS,
        help="one version only (default: every version, each from its vendored source)",
    )
    parser.add_argument(
        "--spec", help=f"another copy of the version's description (or ${SPEC_ENV}); "
        "needs --api-version"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed schemas differ; write nothing"
    )
    args = parser.parse_args(argv)
    if (args.spec or os.environ.get(SPEC_ENV)) and not args.api_version:
        print(f"--spec and ${SPEC_ENV} describe one version: add --api-version", file=sys.stderr)
        return 2
    versions = [args.api_version] if args.api_version else list(API_VERSIONS)
    status = 0
    for version in versions:
        try:
            components = load_components(spec_path(args.spec, version))
        except FileNotFoundError as exc:
            print(exc, file=sys.stderr)
            return 2
        expected = render(RESOURCES, components)
        folder = schema_dir(version)
        if args.check:
            stale = differences(expected, folder)
            for name in stale:
                print(f"out of date ({version}): {folder.relative_to(ROOT) / name}")
            if stale:
                print("run: python scripts/generate_schemas.py", file=sys.stderr)
                status = 1
            continue
        write(expected, folder)
        for name, text in expected.items():
            print(f"{folder.relative_to(ROOT) / name}: {len(text.encode())} bytes")
    return status


if __name__ == "__main__":
    sys.exit(main())
