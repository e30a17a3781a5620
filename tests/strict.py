"""Records checked against the tap's own schema, strictly: what a target would choke on.

The generated schemas leave `additionalProperties` open (Stripe adds fields), so plain
validation passes a record carrying undeclared fields. Here every object the schema
describes field by field is closed, so a field typed string arriving as an object, a time
left as an integer, or a field the schema does not declare, is an error naming its path.
"""

from __future__ import annotations

import typing as t

from jsonschema import Draft7Validator, FormatChecker

_JSON_KINDS = {dict: "object", list: "array", str: "string", int: "integer", float: "number",
               bool: "boolean", type(None): "null"}


def closed(schema: dict) -> dict:
    """`schema` with every object that lists its properties closed to others."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: closed(v) for k, v in out["properties"].items()}
        out["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = closed(out[key])
    if "anyOf" in out:
        out["anyOf"] = [closed(o) for o in out["anyOf"]]
    return out


def strict_validator(schema: dict) -> Draft7Validator:
    return Draft7Validator(closed(schema), format_checker=FormatChecker())


def problems(validator: Draft7Validator, record: dict, limit: int = 5) -> list[str]:
    """Up to `limit` errors, each as `path: message`."""
    found = []
    for error in validator.iter_errors(record):
        path = ".".join(str(p) for p in error.absolute_path) or "(record)"
        if error.validator == "type":
            # The value itself may be a whole object: name its kind, not its text.
            kind = _JSON_KINDS.get(type(error.instance), type(error.instance).__name__)
            found.append(f"{path}: {kind} where the schema has {error.validator_value}")
        else:
            found.append(f"{path}: {error.message[:160]}")
        if len(found) >= limit:
            break
    return found


def first_problems(
    schemas: dict[str, dict], records: t.Iterable[tuple[str, dict]], per_stream: int = 3
) -> dict[str, list[str]]:
    """Stream -> a few records' problems, for every stream with a record off its schema."""
    validators = {name: strict_validator(schema) for name, schema in schemas.items()}
    found: dict[str, list[str]] = {}
    for stream, record in records:
        if len(found.get(stream, ())) >= per_stream:
            continue
        errors = problems(validators[stream], record)
        if errors:
            found.setdefault(stream, []).append(f"{record.get('id')}: {'; '.join(errors)}")
    return found
