"""Catalogs for CLI runs that select some streams (and leave some fields out)."""

from __future__ import annotations

import functools
import json
import typing as t

from tap_stripe_connect.resources import RESOURCES
from tap_stripe_connect.tap import TapStripeConnect
from tests.conftest import emulator_config, run_tap
from tests.emulator import STREAMS

if t.TYPE_CHECKING:
    from pathlib import Path

    from tests.emulator import Emulator

#: The tap's streams the emulator serves (its own event log aside).
EMULATOR_STREAMS = tuple(r.name for r in RESOURCES if r.name in STREAMS and r.name != "events")


def catalog_selecting(
    emu: Emulator, tmp_path: Path, streams: t.Mapping[str, t.Iterable[str]]
) -> dict:
    """The discovered catalog with only `streams` selected, less the fields each names."""
    discovered = run_tap("--discover", config=emulator_config(emu), tmp_path=tmp_path)
    assert discovered.returncode == 0, discovered.stderr[-3000:]
    catalog = json.loads(discovered.stdout)
    for stream in catalog["streams"]:
        wanted = stream["tap_stream_id"] in streams
        left_out = set(streams.get(stream["tap_stream_id"], ()))
        for entry in stream["metadata"]:
            breadcrumb = entry["breadcrumb"]
            if not breadcrumb:
                entry["metadata"]["selected"] = wanted
            elif wanted and breadcrumb[-1] in left_out:
                entry["metadata"]["selected"] = False
    return catalog


def select_streams(catalog: dict, streams: t.Iterable[str]) -> dict:
    """`catalog` (changed in place) with exactly `streams` selected."""
    wanted = set(streams)
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            if entry["breadcrumb"] == []:
                entry["metadata"]["selected"] = stream["tap_stream_id"] in wanted
    return catalog


@functools.cache
def tap_catalog(api_key: str, *streams: str) -> str:
    """The tap's catalog (discovered in this process, once) with exactly `streams` selected,
    as JSON text: each caller's `json.loads` is its own copy."""
    tap = TapStripeConnect(config={"api_key": api_key}, validate_config=False, setup_mapper=False)
    return json.dumps(select_streams(tap.catalog_dict, streams))
