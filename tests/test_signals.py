"""SIGTERM and SIGINT: the run stops promptly, writes what it read and the STATE covering
it, and exits 143 or 130, never 0; its STATE resumes to every object exactly once.

Through the real CLI against the emulator with slow responses (so that a sync is still
under way when the signal comes). No wall-clock assertion: what is counted is what the
tap decided, the requests that reached the emulator after the tap logged it was stopping
(at most one per thread that had passed the check just before); the time to stop is
printed.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime

import pytest

from tests.conftest import ROOT, TapRun, record_output, run_tap
from tests.test_faults import ALL, CORE, config, core_catalog, emulator
from tests.test_interruptions import done_ranges, listed_records
from tests.warehouse import Warehouse, assert_equal_to_stripe

WORKERS = 4


def run_and_signal(emu, tmp_path, state, *, after_records: int, signum: int | None, **extra):
    """Run the CLI; after `after_records` records send `signum` (None: run to the end).

    Returns the run, how many requests arrived at the emulator after the tap logged that
    it was stopping (only those threads that had passed the check before it may send one:
    at most one each), and the seconds from the signal to the exit.
    """
    first = len(emu.requests)
    config_path, state_path = tmp_path / "config.json", tmp_path / "state.json"
    catalog_path, stderr_path = tmp_path / "catalog.json", tmp_path / "stderr.txt"
    settings = config(emu, max_workers=WORKERS, **extra)
    config_path.write_text(json.dumps(settings))
    catalog_path.write_text(core_catalog())
    argv = [sys.executable, "-m", "tap_stripe_connect", "--config", str(config_path),
            "--catalog", str(catalog_path)]
    if state is not None:
        state_path.write_text(json.dumps(state))
        argv += ["--state", str(state_path)]
    seconds = None
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        lines, records, sent_at = [], 0, None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith('{"type":"RECORD"'):
                records += 1
                if signum is not None and records == after_records:
                    sent_at = time.monotonic()
                    proc.send_signal(signum)
        proc.wait(timeout=120)
        if sent_at is not None:
            seconds = time.monotonic() - sent_at
    stderr_text = stderr_path.read_text()
    record_output(settings, None, "".join(lines), stderr_text)
    messages = [json.loads(ln) for ln in lines if ln.startswith('{"type"') and ln.endswith("\n")]
    run = TapRun(proc.returncode, "".join(lines), stderr_text, messages)
    noticed = [ln for ln in stderr_text.splitlines() if ": stopping; no new page starts" in ln]
    if not noticed:
        return run, None, seconds
    # The log line's time (asctime: local time, milliseconds), as the emulator's clock.
    at = datetime.strptime(noticed[0][:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return run, sum(1 for r in emu.requests[first:] if r.time > at + 0.001), seconds


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_run_with_its_exit_code_and_a_state_that_resumes_exactly(
    tmp_path, signum, code
):
    with emulator(objects=2000, seed=51) as emu:
        emu.set_latency(150, 50)
        stopped, sent_after, seconds = run_and_signal(
            emu, tmp_path, None, after_records=300, signum=signum
        )
        print(f"{signal.Signals(signum).name}: exit {stopped.returncode} {seconds:.2f} s after "
              f"the signal; {sent_after} requests arrived after it was noticed")
        assert stopped.returncode == code, stopped.stderr[-3000:]
        # No page started after the tap noticed the signal (but by a thread past the check).
        assert sent_after is not None, stopped.stderr[-3000:]
        assert sent_after <= WORKERS, sent_after
        assert f"Stopped by {signal.Signals(signum).name}" in stopped.stderr
        assert "Sync stopped: " in stopped.stderr  # the summary table's first line
        assert "ERROR" not in stopped.stderr  # a stop is no error
        assert "Traceback" not in stopped.stderr
        # The run was stopped midway, and its records were written with a STATE after them.
        assert stopped.records(), "nothing written"
        assert stopped.messages[-1]["type"] == "STATE", stopped.messages[-1]
        finished = {m["stream"] for m in stopped.messages if m["type"] == "ACTIVATE_VERSION"}
        assert set(CORE) - finished, "the run was not stopped midway: raise `objects`"
        state = stopped.last_state
        if signum != signal.SIGTERM:
            return  # the same stop as SIGTERM's: its resume is checked once, there

        emu.set_latency(0, 0)
        resumed, _, _ = run_and_signal(emu, tmp_path, state, after_records=-1, signum=None)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        warehouse = Warehouse()
        warehouse.apply(stopped)
        warehouse.apply(resumed)
        assert_equal_to_stripe(warehouse, emu, ALL)
        # Every object listed over the two runs, and once, but for the last object of a
        # page whose `created` second the STATE could not record as done (a range it
        # records is [created + 1, upper): other objects may share that second). (After
        # its listing, the resumed run reads the events since the listing began, less
        # `event_lag_seconds`: objects created then come again, as in any run.)
        for stream in CORE:
            ids = [r["id"] for r in stopped.records(stream)]
            ids += [r["id"] for r in listed_records(resumed, stream)]
            assert len(set(ids)) == len(emu.objects(stream)), stream
            edges = {lo - 1 for lo, _ in done_ranges(state, stream)}
            created = {o["id"]: o["created"] for o in emu.objects(stream)}
            twice = [i for i, n in collections.Counter(ids).items() if n > 1]
            again = [i for i in twice if created[i] not in edges]
            assert not again, f"{stream}: {len(again)} objects written twice, e.g. {again[:3]}"
            print(f"{stream}: {len(twice)} objects at the edge of a done range written twice")


def test_a_second_signal_exits_at_once(tmp_path):
    with emulator(objects=400, seed=52) as emu:
        # Responses so slow that the first signal's run waits for them.
        emu.set_latency(3000, 0)

        config_path = tmp_path / "config.json"
        settings = config(emu, max_workers=WORKERS, request_timeout=30)
        config_path.write_text(json.dumps(settings))
        (tmp_path / "catalog.json").write_text(core_catalog())
        argv = [sys.executable, "-m", "tap_stripe_connect", "--config", str(config_path),
                "--catalog", str(tmp_path / "catalog.json")]
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, stdin=subprocess.DEVNULL)
        assert proc.stderr is not None
        # Wait until the first list request is under way.
        deadline = time.monotonic() + 60
        while not any(r.path in ("/v1/charges", "/v1/customers") for r in emu.requests):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        # The second signal once the tap has taken the first (its warning), not after a
        # pause: two signals before the handler runs are one signal to Python.
        first = []
        for line in proc.stderr:
            first.append(line)
            if "SIGTERM: stopping; no new page starts" in line:
                break
        proc.send_signal(signal.SIGTERM)
        out, rest = proc.communicate(timeout=60)
        err = "".join(first) + rest
        record_output(settings, None, out, err)
        assert proc.returncode == 143, err[-3000:]
        assert "SIGTERM again: exiting now" in err
        assert "Not ended 4 s after the signal" not in err  # not the first signal's deadline
        # Whole lines only.
        assert all(line.startswith('{"type"') for line in out.splitlines())


def test_responses_slower_than_the_grace_period_do_not_hold_the_exit(tmp_path):
    """Responses of 6 s: 4 s after the signal the tap writes what it read and the STATE,
    and exits (the tap decides it: its warning says so), with whole lines only."""
    with emulator(objects=2000, seed=54) as emu:
        settings = config(emu, max_workers=WORKERS, request_timeout=30)
        (tmp_path / "config.json").write_text(json.dumps(settings))
        (tmp_path / "catalog.json").write_text(core_catalog())
        argv = [sys.executable, "-m", "tap_stripe_connect", "--config",
                str(tmp_path / "config.json"), "--catalog", str(tmp_path / "catalog.json")]
        err_path = tmp_path / "stderr.txt"
        with err_path.open("w") as stderr:
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr,
                                    text=True, stdin=subprocess.DEVNULL)
            assert proc.stdout is not None
            # The signal once a request sent after the change is under way (the emulator
            # waits out its 6 s), not some time after the change.
            slow, wait = threading.Event(), emu.latency_wait

            def latency_wait(seconds: float) -> object:
                if seconds >= 6:
                    slow.set()
                return wait(seconds)

            emu.latency_wait = latency_wait
            signaller = threading.Thread(
                target=lambda: slow.wait(timeout=60) and proc.send_signal(signal.SIGTERM)
            )
            lines = []
            for line in proc.stdout:
                lines.append(line)
                if len(lines) == 200:
                    emu.set_latency(6000, 0)  # the requests from now on take 6 s
                    signaller.start()
            proc.wait(timeout=60)
            signaller.join(timeout=60)
            assert slow.is_set(), "no request was sent after the latency changed"
        out, err = "".join(lines), err_path.read_text()
        record_output(settings, None, out, err)
        assert proc.returncode == 143, err[-3000:]
        assert "Not ended 4 s after the signal: exiting now." in err
        assert "Stopped by SIGTERM" in err
        messages = [json.loads(line) for line in out.splitlines()]  # whole lines only
        assert messages[-1]["type"] == "STATE"



def read_slowly(argv: list[str], err_path, *, stops: bool, nonblocking: bool = False):
    """Run `argv` with a reader slower than it writes (its writes wait on a full pipe);
    `stops`: SIGSTOP and SIGCONT it again and again meanwhile; `nonblocking`: its stdout is
    a pipe another process made non-blocking. Returns its exit code, stdout and stderr."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, not nonblocking)
    with err_path.open("w") as stderr:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=write_end, stderr=stderr,
                                stdin=subprocess.DEVNULL)
        os.close(write_end)
        count, ended = [0], threading.Event()

        def stop_and_continue() -> None:
            while stops and not ended.is_set():
                try:
                    os.kill(proc.pid, signal.SIGSTOP)
                    time.sleep(0.0005)
                    os.kill(proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    return
                count[0] += 1
                time.sleep(0.001)

        stopper = threading.Thread(target=stop_and_continue)
        stopper.start()
        chunks = []
        try:
            while chunk := os.read(read_end, 8192):
                chunks.append(chunk)
                time.sleep(0.0005)  # a reader slower than the tap
        finally:
            ended.set()
            stopper.join(timeout=60)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
            proc.wait(timeout=120)
            os.close(read_end)
    out = b"".join(chunks).decode()
    print(f"{count[0]} stops, {len(out) / 1e6:.1f} MB")
    return proc.returncode, out, err_path.read_text()


def run_with_a_lagging_reader(emu, tmp_path, *, stops: bool, nonblocking: bool = False):
    """A sync through `read_slowly`: the run, every line whole (or the test fails)."""
    settings = config(emu, max_workers=WORKERS)
    (tmp_path / "config.json").write_text(json.dumps(settings))
    (tmp_path / "catalog.json").write_text(core_catalog())
    argv = [sys.executable, "-m", "tap_stripe_connect", "--config",
            str(tmp_path / "config.json"), "--catalog", str(tmp_path / "catalog.json")]
    code, out, err = read_slowly(argv, tmp_path / "stderr.txt", stops=stops,
                                 nonblocking=nonblocking)
    record_output(settings, None, out, err)
    assert code == 0, err[-3000:]
    broken, messages = [], []
    for line in out.splitlines():
        try:
            messages.append(json.loads(line))
        except ValueError:
            broken.append(line)
    assert not broken, f"{len(broken)} broken lines, e.g. {broken[0][:300]}"
    return TapRun(code, out, err, messages)


@pytest.mark.parametrize("nonblocking", [False, True], ids=["stopped", "non-blocking"])
def test_a_run_whose_reader_lags_writes_every_line_whole_and_once(tmp_path, nonblocking):
    """SIGSTOP and SIGCONT again and again (job control, a paused container, a debugger, a
    sampling profiler) while the tap's writes wait on a full pipe, so that they are cut
    short; or a stdout another process made non-blocking. Every line arrives whole, once,
    and the warehouse equals the emulator's objects. Python's buffered stdout lost the
    rest of a cut write (the next line glued to a broken one), and raised on a
    non-blocking pipe with part of a chunk written."""
    with emulator(objects=2500, seed=55) as emu:
        run = run_with_a_lagging_reader(emu, tmp_path, stops=not nonblocking,
                                        nonblocking=nonblocking)
        warehouse = Warehouse()
        warehouse.apply(run)
        assert_equal_to_stripe(warehouse, emu, ALL)
        for stream in CORE:
            ids = [r["id"] for r in run.records(stream)]
            assert len(ids) == len(set(ids)) == len(emu.objects(stream)), stream


def test_a_catalog_written_while_its_reader_lags_arrives_whole(tmp_path):
    """`--discover` (~1.8 MB of catalog in one write) stopped and continued again and
    again while its reader lags: the whole catalog arrives, the same as a plain run's (the
    SDK's `print` lost all but the first ~80 KB and exited 0)."""
    settings = {"api_key": "sk_test_discoverOnly123"}
    plain = run_tap("--discover", config=settings, tmp_path=tmp_path)
    assert plain.returncode == 0, plain.stderr[-2000:]
    argv = [sys.executable, "-m", "tap_stripe_connect", "--config",
            str(tmp_path / "config.json"), "--discover"]
    code, out, err = read_slowly(argv, tmp_path / "stderr.txt", stops=True)
    record_output(settings, None, out, err)
    assert code == 0, err[-3000:]
    assert len(out) == len(plain.stdout)
    assert json.loads(out) == json.loads(plain.stdout)
