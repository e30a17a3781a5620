"""What a newcomer meets in the first hour, through the CLI against the emulator: a
`start_date` Stripe has not reached is one clear line, and an error before any stream
starts comes without a summary table of zeros."""

from __future__ import annotations

from datetime import datetime, timezone

from tests.catalogs import catalog_selecting
from tests.conftest import emulator_config, run_tap
from tests.emulator import Emulator


def test_a_start_date_after_stripes_time_is_one_line_and_exit_1(tmp_path):
    with Emulator(objects=5, seed=91) as emu:
        # The emulator's clock is 2026-01-01 plus the seconds it has run: 2027 is ahead.
        config = {**emulator_config(emu), "start_date": "2027-01-01T00:00:00Z"}
        run = run_tap(config=config, tmp_path=tmp_path)
        paths = [r.path for r in emu.requests]
    assert run.returncode == 1
    assert not run.records("charges")
    errors = [line for line in run.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        "tap-stripe-connect: error: Setting 'start_date' (2027-01-01T00:00:00Z) is after "
        f"Stripe's current time ({errors[0].split('current time (')[1].split(')')[0]}): no "
        "object can have been created since. Set an earlier start_date, or leave it out to "
        "sync all history."
    ], run.stderr[-2000:]
    # Stripe's time, from the emulator's Date header (its clock starts at 2026-01-01; a
    # Date header is stepped back one second), not this machine's clock.
    said = errors[0].split("current time (")[1].split(")")[0]
    stripe_time = datetime.strptime(said, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    emulator_start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert abs((stripe_time - emulator_start).total_seconds()) < 600, said
    assert "Sync finished" not in run.stderr, "no summary table of zeros"
    assert paths == ["/v1/account"], "stopped after the one request that told Stripe's time"


def test_a_start_date_stripe_has_reached_still_syncs(tmp_path):
    with Emulator(objects=5, seed=92) as emu:
        config = {**emulator_config(emu), "start_date": "2025-12-31T23:59:00Z"}
        run = run_tap(config=config, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Sync finished" in run.stderr


def test_no_summary_table_before_a_rejected_credential(tmp_path):
    with Emulator(objects=5, seed=93) as emu:
        config = {**emulator_config(emu), "api_key": "sk_test_not_the_emulators"}
        run = run_tap(config=config, tmp_path=tmp_path)
    assert run.returncode == 1
    assert "Stripe rejected the credential in setting 'api_key'" in run.stderr
    assert "Sync finished" not in run.stderr
    assert "total" not in run.stderr


def test_invoice_items_start_at_start_date_like_the_other_streams(tmp_path):
    """Stripe's invoice item list filters `created` on the items' `date`: a first sync with
    `start_date` reads only those, as the windowed streams read only objects since then."""
    with Emulator(objects=40, seed=94) as emu:
        items = emu.objects("invoice_items")
        dates = sorted(item["date"] for item in items)
        start = dates[len(dates) // 2]
        iso = datetime.fromtimestamp(start, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        config = {**emulator_config(emu), "start_date": iso}
        catalog = catalog_selecting(emu, tmp_path, {"invoice_items": ()})
        run = run_tap(config=config, catalog=catalog, tmp_path=tmp_path)
        asked = [r.query for r in emu.requests if r.path == "/v1/invoiceitems"]
    assert run.returncode == 0, run.stderr[-2000:]
    expected = {item["id"] for item in items if item["date"] >= start}
    assert 0 < len(expected) < len(items)
    assert {r["id"] for r in run.records("invoice_items")} == expected
    assert all(q.get("created[gte]") == [str(start)] for q in asked), asked
