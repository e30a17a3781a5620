"""Interruptions: a killed or failed run resumes from its last STATE, losing nothing.

A first sync (no bookmark yet) killed again and again continues each time from the
`created` ranges its last STATE recorded as written, instead of listing everything again;
a key revoked mid-run stops the run with one clear line and a STATE for what completed.
Helpers are shared with `test_faults.py`; `no_secret_leaks` (conftest) checks every output.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys

from tap_stripe_connect.settings import parse_time as rfc3339_to_unix
from tests.conftest import ROOT, TapRun, record_output
from tests.emulator import Emulator
from tests.test_faults import (
    ALL,
    CORE,
    LISTS,
    SECRET,
    assert_one_clear_error,
    config,
    core_catalog,
    emulator,
    mutate,
)
from tests.warehouse import Warehouse, assert_equal_to_stripe


def run_until(
    emu: Emulator, tmp_path, state, after_records: int, action=None, **extra
) -> tuple[TapRun, list[tuple[str, int, int]]]:
    """Run the tap; after `after_records` records either SIGKILL it or call `action()`.

    Returns the messages it wrote and its list requests: (stream, created[gte],
    created[lt]) of each page of a core stream's `created` windows.
    """
    before = len(emu.requests)
    config_path, state_path = tmp_path / "run-config.json", tmp_path / "run-state.json"
    catalog_path, stderr_path = tmp_path / "run-catalog.json", tmp_path / "run-stderr.txt"
    config_path.write_text(json.dumps(config(emu, **extra)))
    catalog_path.write_text(core_catalog())
    argv = [sys.executable, "-m", "tap_stripe_connect", "--config", str(config_path)]
    argv += ["--catalog", str(catalog_path)]
    if state is not None:
        state_path.write_text(json.dumps(state))
        argv += ["--state", str(state_path)]
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert proc.stdout is not None
        lines, records = [], 0
        for line in proc.stdout:
            lines.append(line)
            if line.startswith('{"type":"RECORD"'):
                records += 1
                if records == after_records:
                    if action is None:
                        proc.send_signal(signal.SIGKILL)
                        break
                    action()
        proc.wait(timeout=120)
    stderr_text = stderr_path.read_text()
    record_output(config(emu, **extra), None, "".join(lines), stderr_text)
    messages = [json.loads(ln) for ln in lines if ln.startswith('{"type"') and ln.endswith("\n")]
    list_requests = [
        (r.path.rsplit("/", 1)[-1], int(r.query.get("created[gte]", ["0"])[0]), int(lt[0]))
        for r in emu.requests[before:]
        if r.path in LISTS and (lt := r.query.get("created[lt]"))
    ]
    return TapRun(proc.returncode, "".join(lines), stderr_text, messages), list_requests


def done_ranges(state: dict | None, stream: str) -> list[list[int]]:
    entry = ((state or {}).get("bookmarks") or {}).get(stream) or {}
    return (entry.get("listing") or {}).get("done") or []


def listed_records(run: TapRun, stream: str) -> list[dict]:
    """The stream's records up to its ACTIVATE_VERSION: those of its listing."""
    records = []
    for message in run.messages:
        if message.get("stream") != stream:
            continue
        if message["type"] == "ACTIVATE_VERSION":
            break
        if message["type"] == "RECORD":
            records.append(message["record"])
    return records


def assert_resumed_where_state_left_off(state: dict, resumed: TapRun, requests) -> None:
    """No page, and no listed record, of a range the STATE recorded as done."""
    for stream in CORE:
        done = done_ranges(state, stream)
        overlapping = [
            (lo, hi)
            for s, lo, hi in requests
            if s == stream and any(lo < done_hi and done_lo < hi for done_lo, done_hi in done)
        ]
        assert not overlapping, f"{stream}: listed {overlapping[:3]} again; done: {done}"
        # The listing's records come before its ACTIVATE_VERSION; records read from events
        # while catching up after it (they may be of any `created`).
        again = [
            r["id"]
            for r in listed_records(resumed, stream)
            if any(lo <= rfc3339_to_unix(r["created"]) < hi for lo, hi in done)
        ]
        assert not again, f"{stream}: {len(again)} records of done ranges listed again"


def test_a_first_sync_killed_again_and_again_resumes_where_its_state_left_off(tmp_path):
    with emulator(objects=2000, seed=41) as emu:
        # What one uninterrupted listing costs.
        full, full_list = run_until(emu, tmp_path, None, after_records=-1)
        full_requests = len(full_list)
        assert full.returncode == 0
        total = len(full.records())

        warehouse = Warehouse()
        rng = random.Random(8)
        state, resumed_requests, emitted = None, [], 0
        for _ in range(4):
            killed, requests_made = run_until(
                emu, tmp_path, state, after_records=rng.randrange(1500, 4500), max_workers=8
            )
            assert killed.returncode == -signal.SIGKILL
            if state is not None:
                resumed_requests.append(len(requests_made))
                assert_resumed_where_state_left_off(state, killed, requests_made)
            warehouse.apply(killed)
            emitted += len(killed.records())
            state = killed.last_state or state
            assert any(done_ranges(state, s) for s in CORE), "no listing progress in STATE"

        # Changes while the tap is down are read from events when it resumes.
        mutate(emu, random.Random(9))
        last, requests_made = run_until(emu, tmp_path, state, after_records=-1, max_workers=8)
        assert last.returncode == 0, last.stderr[-2000:]
        assert_resumed_where_state_left_off(state, last, requests_made)
        resumed_requests.append(len(requests_made))
        warehouse.apply(last)
        emitted += len(last.records())
        assert_equal_to_stripe(warehouse, emu, ALL)
        assert all(not done_ranges(last.last_state, s) for s in CORE), "listing left in STATE"

        # Resumed runs listed only what was left: together about one listing, not one each.
        print(
            f"full listing: {full_requests} list requests, {total} records; resumed runs: "
            f"{resumed_requests} list requests; records emitted over 5 runs: {emitted}"
        )
        # Starting over each time would cost one full listing per run (5 x 119 requests).
        assert max(resumed_requests) < full_requests
        assert sum(resumed_requests) < 2 * full_requests
        assert emitted < total * 1.6


def test_a_key_revoked_mid_run_stops_with_state_for_what_completed(tmp_path):
    with emulator(objects=1500, seed=43) as emu:

        def revoke() -> None:
            emu.api_keys.clear()
            emu.api_keys["sk_test_someOtherKey_000"] = None

        failed, _ = run_until(emu, tmp_path, None, after_records=2500, action=revoke)
        assert_one_clear_error(failed, "'api_key'", "revoked", "Request-Id req_")
        assert "sk_test_****" not in failed.stderr
        state = failed.last_state
        # Progress: `created` ranges of a listing under way, or a stream already finished.
        finished = [
            s for s in CORE if ((state or {}).get("bookmarks") or {}).get(s, {}).get(
                "replication_key_value"
            )
        ]
        assert finished or any(done_ranges(state, s) for s in CORE), "no progress in STATE"

        emu.api_keys.clear()
        emu.api_keys[SECRET] = None
        warehouse = Warehouse()
        warehouse.apply(failed)
        resumed, requests_made = run_until(emu, tmp_path, state, after_records=-1)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert_resumed_where_state_left_off(state, resumed, requests_made)
        warehouse.apply(resumed)
        assert_equal_to_stripe(warehouse, emu, ALL)


def test_a_listing_interrupted_longer_ago_than_events_reach_starts_over(tmp_path):
    with emulator(objects=100, seed=44) as emu:
        # Begun 40 days ago and "done" entirely: resumed, it would list nothing at all.
        started = emu.clock - 40 * 86400
        listing = {"started": started, "table_version": started * 1000, "done": [[0, started]]}
        state = {"bookmarks": {s: {"listing": dict(listing)} for s in CORE}}
        result, requests_made = run_until(emu, tmp_path, state, after_records=-1)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "began too long ago to resume" in result.stderr
        assert {s for s, _, _ in requests_made} == set(CORE)
        warehouse = Warehouse()
        warehouse.apply(result)
        assert_equal_to_stripe(warehouse, emu, ALL)
