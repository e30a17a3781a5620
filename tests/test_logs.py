"""A plain sync's log: the SDK's per-page chatter only at DEBUG, and no false warning."""

from __future__ import annotations

import re

from tests.conftest import emulator_config, run_tap

CHATTER = ("METRIC", "Pagination stopped after", "with context keys", "Beginning sync of",
           "Starting incremental sync of", "as child stream to")
FALSE_WARNING = "progress is not resumable"
PROGRESS = r"\| Progress |: \d+ of Stripe's report runs pending"


def test_a_plain_sync_logs_progress_and_summary_without_chatter(emulator, tmp_path):
    run = run_tap(config=emulator_config(emulator), tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Sync finished" in run.stderr
    for chatter in CHATTER:
        assert chatter not in run.stderr, chatter
    assert FALSE_WARNING not in run.stderr
    # Progress lines come once an interval (10 s) while a stream syncs or waits for
    # Stripe's report runs: more of them on a slower machine. The rest is what a person
    # reads: start-up, a line for each report stream's plan, the summary table; not two
    # lines per stream.
    lines = [line for line in run.stderr.splitlines() if not re.search(PROGRESS, line)]
    assert len(lines) < 120
    info = [line for line in lines if "| INFO " in line]
    assert len(info) < 10, "\n".join(info)


def test_debug_logging_still_shows_the_chatter(emulator, tmp_path):
    run = run_tap(
        config=emulator_config(emulator), tmp_path=tmp_path,
        env={"TAP_STRIPE_CONNECT_LOGLEVEL": "debug"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "METRIC" in run.stderr
    assert "| DEBUG    | singer_sdk.metrics" in run.stderr
