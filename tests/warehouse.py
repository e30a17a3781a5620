"""A stand-in warehouse: applies Singer records by primary key, as an upserting target does."""

from __future__ import annotations

import json
import typing as t

from tap_stripe_connect.output.records import RecordShaper
from tap_stripe_connect.streams import load_schema

if t.TYPE_CHECKING:
    from tests.conftest import TapRun
    from tests.emulator import Emulator

# Fields the tap adds to every record; Stripe's objects do not have them.
TAP_FIELDS = ("updated", "account_id", "_sdc_deleted_at")


class Warehouse:
    """Rows per stream keyed by primary key; delete markers remove rows."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, dict]] = {}
        self.versions: dict[str, dict[str, int | None]] = {}

    def apply(self, run: TapRun) -> None:
        for message in run.messages:
            stream = message.get("stream")
            table = self.tables.setdefault(stream, {})
            versions = self.versions.setdefault(stream, {})
            if message["type"] == "ACTIVATE_VERSION":
                # As SDK targets do: rows of older table versions are removed.
                for key, version in list(versions.items()):
                    if version is None or version < message["version"]:
                        table.pop(key, None)
                        versions.pop(key)
            if message["type"] != "RECORD":
                continue
            record = message["record"]
            if record.get("_sdc_deleted_at"):
                table.pop(record["id"], None)
                versions.pop(record["id"], None)
            else:
                table[record["id"]] = record
                versions[record["id"]] = message.get("version")

    def rows(self, stream: str) -> dict[str, dict]:
        return {key: strip(row) for key, row in self.tables.get(stream, {}).items()}


def strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TAP_FIELDS}


def truth(emulator: Emulator, stream: str) -> dict[str, dict]:
    """The emulator's current objects, shaped the way the tap emits them."""
    shaper = RecordShaper(load_schema(stream))
    return {
        obj["id"]: json.loads(json.dumps(shaper.shape(obj))) for obj in emulator.objects(stream)
    }


def assert_equal_to_stripe(warehouse: Warehouse, emulator: Emulator, streams: t.Iterable[str]):
    for stream in streams:
        expected = truth(emulator, stream)
        got = warehouse.rows(stream)
        missing = expected.keys() - got.keys()
        extra = got.keys() - expected.keys()
        assert not (missing or extra), (  # noqa: PT018
            f"{stream}: {len(missing)} missing (e.g. {sorted(missing)[:3]}), "
            f"{len(extra)} extra (e.g. {sorted(extra)[:3]})"
        )
        differing = [key for key in expected if expected[key] != got[key]]
        if differing:
            key = differing[0]
            fields = {
                f
                for f in expected[key].keys() | got[key].keys()
                if expected[key].get(f) != got[key].get(f)
            }
            raise AssertionError(
                f"{stream}: {len(differing)} rows differ from Stripe, "
                f"e.g. {key} in {sorted(fields)}"
            )
