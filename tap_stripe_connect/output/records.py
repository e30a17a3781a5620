"""Shaping Stripe objects into records: Unix times become RFC 3339 UTC strings.

The schema says where the times are (`format: date-time`), so the shaper is compiled once
per stream from it and then visits only those paths, not every field of every record.
"""

from __future__ import annotations

import decimal
import logging
import threading
import typing as t

from tap_stripe_connect.errors import TapError
from tap_stripe_connect.settings import format_time

#: The JSON column that keeps the fields Stripe sent and the schema lacks (setting
#: 'keep_undeclared_fields').
EXTRA_COLUMN = "_sdc_extra"
#: `deleted: true` of a deleted object is what `_sdc_deleted_at` records.
KNOWN_UNDECLARED = frozenset({"deleted"})


def with_extra_column(schema: dict) -> dict:
    """The schema with the JSON column of undeclared fields."""
    properties = {**schema.get("properties", {}), EXTRA_COLUMN: {"type": ["object", "null"]}}
    return {**schema, "properties": properties}


# A plan maps a field name to True (a time) or to a nested plan (object or array items).
Plan = dict[str, t.Any]


def _types(schema: dict) -> set[str]:
    kind = schema.get("type", [])
    return {kind} if isinstance(kind, str) else set(kind)


def compile_plan(schema: dict) -> Plan:
    """The paths of date-time fields below an object schema."""
    plan: Plan = {}
    for name, prop in (schema.get("properties") or {}).items():
        sub = _compile_value(prop)
        if sub:
            plan[name] = sub
    return plan


def _compile_value(schema: dict) -> t.Any:
    if schema.get("format") == "date-time":
        return True
    options = schema.get("anyOf")
    if options:
        merged: Plan = {}
        for option in options:
            sub = _compile_value(option)
            if isinstance(sub, dict):
                merged.update(sub)
        return merged or None
    kinds = _types(schema)
    if "array" in kinds and "items" in schema:
        return {"[]": _compile_value(schema["items"])} if _compile_value(schema["items"]) else None
    if "object" in kinds:
        return compile_plan(schema) or None
    return None


# Unix times of the years 1000 to 9999: all RFC 3339 can write (and more than Stripe sends).
MIN_TIME, MAX_TIME = -30_610_224_000, 253_402_300_800


def to_rfc3339(value: t.Any) -> t.Any:
    """Unix seconds -> `2026-01-01T00:00:00Z`; anything else passes through unchanged."""
    if isinstance(value, bool) or not isinstance(value, (int, float, decimal.Decimal)):
        return value
    try:
        in_range = MIN_TIME <= value < MAX_TIME
    except ArithmeticError:  # a Decimal NaN
        in_range = False
    if not in_range:
        raise TapError(
            f"Stripe sent {str(value)[:30]} where a Unix time belongs, which is no date of "
            "the years 1000 to 9999; the record cannot be written."
        )
    return format_time(int(value))


def _apply(value: t.Any, plan: t.Any) -> t.Any:
    if plan is True:
        return to_rfc3339(value)
    if isinstance(value, list):
        item_plan = plan.get("[]")
        return [_apply(v, item_plan) for v in value] if item_plan else value
    if isinstance(value, dict):
        for name, sub in plan.items():
            if name in value and value[name] is not None:
                value[name] = _apply(value[name], sub)
    return value


class RecordShaper:
    """Converts a Stripe object in place to the stream's record shape."""

    def __init__(self, schema: dict) -> None:
        self.plan = compile_plan(schema)

    def shape(self, record: dict) -> dict:
        return t.cast("dict", _apply(record, self.plan))


class Records:
    """A stream's records from Stripe objects: times as RFC 3339, plus the fields the tap
    adds to every record (`updated`, `account_id`, `_sdc_deleted_at`)."""

    def __init__(
        self,
        schema: dict,
        *,
        parent_field: str | None = None,
        stream: str = "",
        logger: logging.Logger | None = None,
    ) -> None:
        self.shaper = RecordShaper(schema)
        properties = schema.get("properties") or {}
        self.keep_extra = EXTRA_COLUMN in properties
        self.declared = frozenset(properties) | KNOWN_UNDECLARED
        self.stream = stream
        self.logger = logger or logging.getLogger("tap-stripe-connect")
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        #: A child's field naming its parent (`line_item.invoice`), filled when Stripe
        #: leaves it out (credit note lines).
        self.parent_field = parent_field

    def shape(
        self,
        obj: dict,
        updated: int | None,
        account_id: str | None,
        *,
        parent_id: str | None = None,
        deleted_at: int | None = None,
    ) -> dict:
        # A copy: a child's embedded items are also the parent's `lines.data`/`items.data`,
        # and the SDK writes the parent after its children, so the fields added below
        # would otherwise show up inside the parent record.
        record = self.shaper.shape(dict(obj))
        if undeclared := obj.keys() - self.declared:
            self.undeclared(record, undeclared)
        elif self.keep_extra:
            record[EXTRA_COLUMN] = None
        # `updated`: the Stripe time from which the record is known current. An object with
        # its own (`product.updated`, when it last changed) keeps Stripe's value.
        if record.get("updated") is None:
            record["updated"] = format_time(updated) if updated is not None else None
        record["account_id"] = account_id
        record["_sdc_deleted_at"] = format_time(deleted_at) if deleted_at is not None else None
        if self.parent_field and record.get(self.parent_field) is None:
            record[self.parent_field] = parent_id
        return record

    def undeclared(self, record: dict, names: t.AbstractSet[str]) -> None:
        """Fields Stripe sent that the schema lacks: targets write only declared columns,
        so say which (once per stream), and keep them in `_sdc_extra` when asked to."""
        if self.keep_extra:
            record[EXTRA_COLUMN] = {name: record.pop(name) for name in sorted(names)}
        with self._lock:
            new = names - self._warned
            self._warned |= names
        if new:
            kept = (
                f"kept in column '{EXTRA_COLUMN}'"
                if self.keep_extra
                else f"dropped; set setting 'keep_undeclared_fields' to keep them in "
                f"column '{EXTRA_COLUMN}'"
            )
            self.logger.warning(
                "Stream '%s': Stripe sent fields the schema lacks (%s): %s.",
                self.stream,
                kept,
                ", ".join(sorted(new)),
            )
