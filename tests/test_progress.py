"""What a person watching a run sees: progress lines per stream and the summary table."""

from __future__ import annotations

import json
import logging
import re
import threading

import pytest

from tap_stripe_connect.output.progress import Progress, render_table
from tests.catalogs import EMULATOR_STREAMS, catalog_selecting
from tests.conftest import TapRun, emulator_config, run_tap
from tests.emulator import Emulator

STRUCTURED_LOGGING = """\
version: 1
disable_existing_loggers: false
formatters:
  structured:
    (): singer_sdk.logging.StructuredFormatter
handlers:
  stderr:
    class: logging.StreamHandler
    formatter: structured
    stream: ext://sys.stderr
root:
  level: INFO
  handlers: [stderr]
"""


class Ticks:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def emu():
    with Emulator(objects=40, seed=51) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def catalog(emu, tmp_path_factory):
    streams = dict.fromkeys(EMULATOR_STREAMS, ())
    return catalog_selecting(emu, tmp_path_factory.mktemp("catalog"), streams)


def sync(emu, catalog, tmp_path, state=None, env=None, **config) -> TapRun:
    run = run_tap(
        config=emulator_config(emu, **config),
        catalog=catalog,
        state=state,
        env=env,
        tmp_path=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def summary_table(stderr: str) -> dict[str, dict[str, str]]:
    """The summary table's rows, by stream, from a run's human-readable log."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if "Sync finished:" in line)
    header = lines[start + 1].split()
    assert header == ["stream", "records", "deletes", "requests", "retries", "duration"]
    rows = {}
    for line in lines[start + 2 :]:
        if line.startswith("-"):
            continue
        cells = line.split()
        rows[cells[0]] = dict(zip(header[1:], cells[1:], strict=True))
        if cells[0] == "total":
            break
    return rows


# -- the class itself -----------------------------------------------------------------------


def test_counts_from_many_threads_are_exact():
    progress = Progress(logging.getLogger("test"), 0)
    deleted = type("Msg", (), {"stream": "customers", "record": {"_sdc_deleted_at": "x"}})()
    kept = type("Msg", (), {"stream": "customers", "record": {"_sdc_deleted_at": None}})()

    def work() -> None:
        for i in range(2000):
            progress.observe_message(deleted if i % 4 == 0 else kept)
            progress.observe_request("customers")
        progress.observe_retry("customers")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    customers = progress.summary()["streams"]["customers"]
    assert customers["records"] == 16000
    assert customers["deletes"] == 4000
    assert customers["requests"] == 16000
    assert customers["retries"] == 8


def test_only_record_messages_count():
    progress = Progress(logging.getLogger("test"), 0)
    state = type("Msg", (), {"type": "STATE", "value": {}})()
    schema = type("Msg", (), {"type": "SCHEMA", "stream": "charges", "schema": {}})()
    progress.observe_message(state)
    progress.observe_message(schema)
    assert progress.summary()["streams"] == {}


# Which stream a request serves is said by the read itself (tests/test_client.py checks
# that the client counts each request for the stream of its read).


def test_progress_lines_show_records_rate_requests_and_retries(caplog):
    ticks = Ticks()
    progress = Progress(logging.getLogger("tap-test"), 10, clock=ticks)
    progress.start()
    progress.stream_started("charges")
    record = type("Msg", (), {"stream": "charges", "record": {"id": "ch_1"}})()
    for _ in range(500):
        progress.observe_message(record)
    progress.observe_request("charges")
    progress.observe_retry("charges")
    ticks.now += 5
    with caplog.at_level(logging.INFO, logger="tap-test"):
        progress.report()
        progress.stream_finished("charges")
        ticks.now += 1
        progress.report()  # a finished stream has no more progress lines
        summary = progress.stop()
    lines = [r for r in caplog.records if r.getMessage().startswith("Progress")]
    assert len(lines) == 1
    assert lines[0].getMessage() == (
        "Progress charges: 500 records so far (100.0 records/s); requests: 1, retries: 1"
    )
    assert lines[0].progress["records_per_second"] == 100.0
    assert summary["streams"]["charges"] == {
        "records": 500,
        "deletes": 0,
        "requests": 1,
        "retries": 1,
        "duration_seconds": 5.0,
    }
    table = caplog.records[-1]
    assert table.summary == summary
    assert table.getMessage() == render_table(summary)
    assert table.getMessage().splitlines()[0] == "Sync finished: 500 records in 6.0s"


def test_no_progress_line_for_a_stream_that_has_done_nothing_yet(caplog):
    """A stream waiting for a worker (or for the account's events read) has sent no request
    and written no record: a line of zeros says nothing."""
    ticks = Ticks()
    progress = Progress(logging.getLogger("tap-test"), 10, clock=ticks)
    for name in ("charges", "refunds", "tax_rates"):
        progress.stream_started(name)
    progress.observe_request("charges")
    progress.observe_message(type("Msg", (), {"stream": "tax_rates", "record": {"id": "t"}})())
    ticks.now += 5
    with caplog.at_level(logging.INFO, logger="tap-test"):
        progress.report()
    shown = [r.progress["stream"] for r in caplog.records if hasattr(r, "progress")]
    assert shown == ["charges", "tax_rates"]


# -- through the CLI ------------------------------------------------------------------------


def test_a_run_ends_with_a_summary_table_of_exact_counts(emu, catalog, tmp_path):
    emu.clear_requests()
    run = sync(emu, catalog, tmp_path)
    table = summary_table(run.stderr)
    for stream in EMULATOR_STREAMS:
        assert int(table[stream]["records"].replace(",", "")) == len(emu.objects(stream))
        assert table[stream]["deletes"] == "0"
        assert int(table[stream]["requests"]) >= 1
        assert table[stream]["retries"] == "0"
        assert re.fullmatch(r"\d+\.\ds", table[stream]["duration"])
    total = sum(len(emu.objects(s)) for s in EMULATOR_STREAMS)
    assert int(table["total"]["records"].replace(",", "")) == total
    assert int(table["total"]["requests"]) == emu.request_count("/v1/")


def sync_slowly(emu, catalog, tmp_path, latency_ms: float, **config) -> TapRun:
    """A sync while each response takes `latency_ms` (the shared emulator is reset after)."""
    emu.set_latency(latency_ms)
    try:
        return sync(emu, catalog, tmp_path, **config)
    finally:
        emu.set_latency(0)


def test_progress_lines_appear_at_the_interval(emu, catalog, tmp_path):
    run = sync_slowly(emu, catalog, tmp_path, 100, progress_interval_seconds=0.05)
    lines = [ln for ln in run.stderr.splitlines() if "| Progress " in ln]
    assert len(lines) >= 2, run.stderr[-3000:]
    assert re.search(
        r"Progress \w+: [\d,]+ records so far \([\d.]+ records/s\); requests: \d+, "
        r"retries: \d+$",
        lines[0],
    )


def test_no_progress_lines_with_interval_zero(emu, catalog, tmp_path):
    run = sync_slowly(emu, catalog, tmp_path, 20, progress_interval_seconds=0)
    assert "| Progress " not in run.stderr
    assert "Sync finished:" in run.stderr


def test_deletes_and_retries_are_counted(catalog, tmp_path):
    with Emulator(objects=20, seed=52) as emu:
        first = sync(emu, catalog, tmp_path)
        for customer in emu.objects("customers")[:3]:
            emu.delete("customers", customer["id"])
        emu.inject(503, count=1, path_prefix="/v1/events")
        second = sync(emu, catalog, tmp_path, state=first.last_state)
    table = summary_table(second.stderr)
    assert table["customers"]["deletes"] == "3"
    assert int(table["customers"]["records"]) == 3
    assert int(table["total"]["retries"]) == 1
    assert sum(int(row["retries"]) for name, row in table.items() if name != "total") == 1


def test_structured_logging_carries_the_summary_as_data(emu, catalog, tmp_path):
    config = tmp_path / "logging.yaml"
    config.write_text(STRUCTURED_LOGGING)
    run = sync(
        emu,
        catalog,
        tmp_path,
        env={"SINGER_SDK_LOG_CONFIG": str(config)},
        progress_interval_seconds=0.02,
    )
    entries = [json.loads(ln) for ln in run.stderr.splitlines() if ln.startswith("{")]
    summaries = [e["extra"]["summary"] for e in entries if "summary" in e.get("extra", {})]
    assert len(summaries) == 1
    summary = summaries[0]
    assert summary["status"] == "succeeded"
    for stream in EMULATOR_STREAMS:
        assert summary["streams"][stream]["records"] == len(emu.objects(stream))
        assert set(summary["streams"][stream]) == {
            "records",
            "deletes",
            "requests",
            "retries",
            "duration_seconds",
        }
    assert summary["total"]["records"] == sum(len(emu.objects(s)) for s in EMULATOR_STREAMS)
    progress = [e for e in entries if "progress" in e.get("extra", {})]
    assert progress, "no structured progress line"
    assert progress[0]["stream_name"] == progress[0]["extra"]["progress"]["stream"]
    assert {"records", "records_per_second", "requests", "retries"} <= set(
        progress[0]["extra"]["progress"]
    )
