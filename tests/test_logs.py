"""A plain sync's log: the SDK's per-page chatter only at DEBUG, and no false warning."""

from __future__ import annotations

from tests.conftest import emulator_config, run_tap

CHATTER = ("METRIC", "Pagination stopped after", "with context keys", "Beginning sync of",
           "Starting incremental sync of", "as child stream to")
FALSE_WARNING = "progress is not resumable"


def test_a_plain_sync_logs_progress_and_summary_without_chatter(emulator, tmp_path):
    run = run_tap(config=emulator_config(emulator), tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Sync finished" in run.stderr
    for chatter in CHATTER:
        assert chatter not in run.stderr, chatter
    assert FALSE_WARNING not in run.stderr
    assert len(run.stderr.splitlines()) < 120
    # Not two lines per stream: what a person reads (start-up, the summary table).
    info = [line for line in run.stderr.splitlines() if "| INFO " in line]
    assert len(info) < 10, "\n".join(info)


def test_debug_logging_still_shows_the_chatter(emulator, tmp_path):
    run = run_tap(
        config=emulator_config(emulator), tmp_path=tmp_path,
        env={"TAP_STRIPE_CONNECT_LOGLEVEL": "debug"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "METRIC" in run.stderr
    assert "| DEBUG    | singer_sdk.metrics" in run.stderr
