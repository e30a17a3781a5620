"""Concurrent listing and the per-record fast path (issue 7).

`list_windows` reads each object exactly once however windows split; its queue bounds
memory; a full sync with 8 workers survives a burst of 429s; records are written as
before with the SDK's per-record walks skipped.
"""

from __future__ import annotations

import bisect
import collections
import decimal
import json
import random
import subprocess
import sys
import threading
import time
import typing as t

import pytest
from singer_sdk.singerlib import RecordMessage

from tap_stripe_connect.output.writer import LockedWriter
from tap_stripe_connect.sync.scheduler import CpuLoad, Scheduler
from tap_stripe_connect.sync.windows import STRIPE_EPOCH, Window, WindowReader, list_windows
from tests.conftest import ROOT, TapRun, emulator_config, run_tap
from tests.emulator import Emulator

CORE = ("charges", "customers", "invoices", "subscriptions")


def stripe_like(
    objects: list[dict],
    delay: float = 0.0,
    windows: list | None = None,
    splits: int = 0,
):
    """A `read(window)` that pages like Stripe's list with `created[gte]`/`created[lt]`.

    Newest first by (created, id), 100 per page, `starting_after` the last one. The
    window's bounds are read once, when its paging starts, as `window_records` builds one
    request for a window: a split raises `lower` meanwhile, and paging then ends at the
    first object below it (`Window.accept`).

    `splits`: after its first page, a reader waits between pages (up to 10 s) until that
    many windows were split off, or its own window is no longer worth splitting: the
    consumer then waits for a batch and splits one, however loaded the machine.
    """
    keys = sorted((o["created"], o["id"]) for o in objects)
    by_id = {o["id"]: o for o in objects}
    seen: list[Window] = [] if windows is None else windows
    changed = threading.Condition()

    def splittable(window: Window) -> bool:
        cursor = window.cursor if window.cursor is not None else window.lower
        return window.remaining() >= Window.MIN_SPLIT and cursor >= window.lower + 2

    def read(window: Window):
        with changed:
            seen.append(window)
            changed.notify_all()
        lower, upper = window.lower, window.upper
        lo = bisect.bisect_left(keys, (lower, ""))
        after = None
        while True:
            time.sleep(delay)
            hi = bisect.bisect_left(keys, (upper, ""))
            if after is not None:
                hi = min(hi, bisect.bisect_left(keys, after))
            page = keys[max(lo, hi - 100) : hi][::-1]
            for _, object_id in page:
                yield by_id[object_id]
            if hi - 100 <= lo:
                return
            after = page[-1]
            with changed:
                changed.wait_for(
                    lambda: len(seen) > splits or not splittable(window), timeout=10
                )

    return read


def dataset(kind: str, size: int, seed: int = 5) -> list[dict]:
    rng = random.Random(seed)
    if kind == "spread":
        times = [rng.randrange(1_600_000_000, 1_700_000_000) for _ in range(size)]
    elif kind == "bunched":
        # Most objects in two bursts, a third of them created in the same second.
        times = [1_650_000_000] * (size // 3)
        times += [1_650_000_000 + rng.randrange(-50, 50) for _ in range(size // 3)]
        times += [rng.randrange(1_600_000_000, 1_700_000_000) for _ in range(size - len(times))]
    else:  # "ties": 40 distinct seconds, so every split point falls on a tie
        seconds = sorted(rng.randrange(1_600_000_000, 1_700_000_000) for _ in range(40))
        times = [rng.choice(seconds) for _ in range(size)]
    return [{"id": f"ch_{i:08d}", "created": t} for i, t in enumerate(times)]


@pytest.mark.parametrize("kind", ["spread", "bunched", "ties"])
@pytest.mark.parametrize("workers", [1, 2, 8])
def test_every_object_exactly_once(kind, workers, monkeypatch):
    monkeypatch.setattr(Window, "MIN_SPLIT", 150)  # split often
    objects = dataset(kind, 3000)
    windows: list[Window] = []
    wanted = min(workers - 1, 3)  # windows split off: one for each idle worker, up to 3
    read = stripe_like(objects, delay=0.02, windows=windows, splits=wanted)
    seen = collections.Counter(
        obj["id"]
        for batch in list_windows(read, Window(1_500_000_000, 1_800_000_000), workers)
        for obj in batch
    )
    assert set(seen) == {o["id"] for o in objects}
    assert max(seen.values()) == 1
    # The windows did split, one for each idle worker at least (one worker: never).
    assert len(windows) - 1 >= wanted if workers > 1 else len(windows) == 1


def test_only_the_window_range_is_read():
    objects = dataset("spread", 2000)
    lower, upper = 1_620_000_000, 1_680_000_000
    got = [
        o["id"]
        for batch in list_windows(stripe_like(objects), Window(lower, upper), 4)
        for o in batch
    ]
    assert sorted(got) == sorted(o["id"] for o in objects if lower <= o["created"] < upper)


def test_a_listing_from_1970_splits_within_stripes_lifetime():
    """Without `start_date` a window reaches back to 1970; halving that range gives away
    a part that holds nothing (a request for an empty page), so splits place their
    estimate after 2010, while the windows still cover the whole range between them."""
    window = Window(0, 1_800_000_000)
    for created in range(1_700_000_100, 1_700_000_000, -1):
        assert window.accept(created)
    older = window.split()
    assert older is not None
    assert older.lower == 0  # nothing left uncovered
    assert older.upper == window.lower
    assert older.upper > STRIPE_EPOCH + (1_700_000_000 - STRIPE_EPOCH) // 3


def test_splits_start_from_the_accounts_creation_when_known():
    account_created = 1_650_000_000  # no object of the account is older (but may be)
    window = Window(0, 1_800_000_000, floor=account_created)
    for created in range(1_700_000_100, 1_700_000_000, -1):
        window.accept(created)
    older = window.split()
    assert older is not None
    assert older.lower == 0
    assert older.floor == account_created
    cursor = window.cursor
    assert cursor == 1_700_000_001
    assert older.upper == account_created + (cursor + 1 - account_created) // 2  # halfway


def test_the_first_splits_share_the_listing_evenly():
    """With one window answered, the next splits go to the largest estimate, windows not
    answered yet included (by the density of the window they came from): four windows of
    about a quarter each, not 1/2, 1/4, 1/8 and the rest (the half then paged alone)."""
    objects = dataset("spread", 4000)  # created evenly over 1.6e9 .. 1.7e9
    reader = WindowReader(
        stripe_like(objects),
        [Window(0, 1_800_000_000, floor=1_600_000_000)],
        4,
        may_split=lambda: True,
        eager=lambda: True,
        batch_size=100,
        queue_size=4,
    )
    first = reader.next_window(split=False)
    assert first is not None
    page = next(reader.read_window(first))  # the first page only
    assert len(page) == 100
    for _ in range(3):
        assert reader.next_window(split=True) is not None
    held = sorted(
        sum(1 for o in objects if w.lower <= o["created"] < min(w.upper, w.cursor or w.upper))
        for w in reader.active
    )
    assert len(held) == 4
    assert abs(sum(held) - 3900) <= 2
    assert held[-1] <= 1.5 * held[0], held


def test_no_split_while_the_budget_is_full():
    objects = dataset("spread", 3000)
    windows: list[Window] = []
    read = stripe_like(objects, delay=0.02, windows=windows)
    batches = list(list_windows(read, Window(0, 2**33), 8, may_split=lambda: False))
    assert sum(map(len, batches)) == 3000
    assert len(windows) == 1


def test_a_slow_consumer_holds_the_workers_back():
    """Workers stop reading when `queue_size` batches wait: memory stays bounded."""
    objects = dataset("spread", 3000)
    windows: list[Window] = []
    inner = stripe_like(objects, windows=windows)
    lock = threading.Lock()
    read_ahead = {"read": 0, "consumed": 0, "most": 0}

    def read(window: Window):
        for obj in inner(window):
            with lock:
                read_ahead["read"] += 1
                ahead = read_ahead["read"] - read_ahead["consumed"]
                read_ahead["most"] = max(read_ahead["most"], ahead)
            yield obj

    workers, batch_size, queue_size = 4, 10, 2
    for batch in list_windows(
        read, Window(0, 2**33), workers, batch_size=batch_size, queue_size=queue_size
    ):
        time.sleep(0.002)  # a consumer much slower than the workers
        with lock:
            read_ahead["consumed"] += len(batch)
    assert read_ahead["consumed"] == 3000
    # In the queue, one full batch blocked in each worker, the consumer's own batch.
    assert read_ahead["most"] <= (queue_size + workers + 1) * batch_size


def test_an_error_in_a_worker_reaches_the_consumer():
    def read(window: Window):
        yield {"id": "ch_1", "created": window.upper - 1}
        raise RuntimeError("Stripe went away")

    with pytest.raises(RuntimeError, match="went away"):
        for _ in list_windows(read, Window(0, 10), 4):
            pass


def test_cpu_load():
    now, used = [0.0], [0.0]
    load = CpuLoad(0.5, clock=lambda: now[0], cpu=lambda: used[0])
    assert not load.busy()
    now[0], used[0] = 1.0, 0.95  # a CPU kept busy
    assert load.busy()
    now[0], used[0] = 1.2, 1.0  # within the span: the last figure stands
    assert load.busy()
    now[0], used[0] = 2.0, 1.3  # mostly waiting
    assert not load.busy()


# -- a full sync -------------------------------------------------------------------------


def core_catalog(config: dict, tmp_path, selected=CORE, deselect: dict | None = None) -> dict:
    catalog = json.loads(run_tap("--discover", config=config, tmp_path=tmp_path).stdout)
    for entry in catalog["streams"]:
        for metadata in entry["metadata"]:
            breadcrumb = metadata["breadcrumb"]
            if breadcrumb == []:
                metadata["metadata"]["selected"] = entry["tap_stream_id"] in selected
            elif breadcrumb[-1] in (deselect or {}).get(entry["tap_stream_id"], ()):
                metadata["metadata"]["selected"] = False
    return catalog


def test_a_burst_of_429s_with_8_workers_loses_and_repeats_nothing(tmp_path):
    # Latency, so that windows split and several requests are in flight when the 429s
    # come; more retries than the default, so that the 30 may hit one request in a row.
    with Emulator(objects=1500, seed=13, latency=(40, 10)) as emu:
        config = emulator_config(
            emu,
            max_workers=8,
            max_retry_seconds=120,
            max_retries=30,
            max_requests_per_second=200,
            max_requests_per_second_per_endpoint=100,
        )
        catalog = core_catalog(config, tmp_path)
        injected = threading.Event()

        def inject_mid_sync() -> None:
            deadline = time.monotonic() + 60
            while emu.request_count() < 30 and time.monotonic() < deadline:
                time.sleep(0.005)
            emu.inject(429, count=30)
            injected.set()

        injector = threading.Thread(target=inject_mid_sync, daemon=True)
        injector.start()
        run = run_cli_with_short_backoff(config, catalog, tmp_path)
        injector.join(5)
        throttled = [r for r in emu.requests if r.status == 429]
        expected = {name: {o["id"] for o in emu.objects(name)} for name in CORE}
    assert injected.is_set()
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(throttled) == 30
    for name in CORE:
        emitted = collections.Counter(r["id"] for r in run.records(name))
        assert set(emitted) == expected[name], name
        assert max(emitted.values()) == 1, f"{name}: an object was written twice"
    assert "Retrying" in run.stderr


# The CLI as `run_tap` runs it, with retries 0.05 s apart instead of 0.5 s, 1 s, 2 s, ...:
# 30 429s over the few requests in flight would otherwise take a minute of waiting.
SHORT_BACKOFF = """
import sys
import backoff
from tap_stripe_connect.api.client import StripeClient
StripeClient.backoff_wait = lambda self: backoff.constant(interval=0.05)
from tap_stripe_connect.cli import main
main(sys.argv[1:])
"""


def run_cli_with_short_backoff(config: dict, catalog: dict, tmp_path) -> TapRun:
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            SHORT_BACKOFF,
            "--config",
            str(tmp_path / "config.json"),
            "--catalog",
            str(tmp_path / "catalog.json"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    messages = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith('{"type"')]
    return TapRun(proc.returncode, proc.stdout, proc.stderr, messages)


def test_records_as_before_with_the_fast_path(tmp_path):
    """No conformance pass, no deselection walk: records still match the catalog.

    A deselected property is still dropped; the embedded `lines` of an invoice do not
    pick up the fields the child stream adds to its own records.
    """
    with Emulator(objects=60, seed=17) as emu:
        config = emulator_config(emu)
        catalog = core_catalog(
            config,
            tmp_path,
            selected=("customers", "invoices", "invoice_line_items"),
            deselect={"customers": ("email",)},
        )
        run = run_tap(config=config, catalog=catalog, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    customers = run.records("customers")
    assert customers
    assert all("email" not in c and "name" in c for c in customers)
    invoices = run.records("invoices")
    assert invoices
    assert run.records("invoice_line_items")
    for invoice in invoices:
        assert invoice["created"].endswith("Z")  # times as RFC 3339
        for line in invoice["lines"]["data"]:
            assert not {"updated", "account_id", "_sdc_deleted_at"} & set(line)
    assert "not found in catalog schema" not in run.stderr


def test_decimals_and_times_are_written_as_json():
    message = RecordMessage(
        stream="charges",
        record={"amount": 100, "rate": decimal.Decimal("1.10"), "created": "2026-01-01T00:00:00Z"},
    )
    line = bytes(LockedWriter().serialize_message(message))
    record = json.loads(line)["record"]
    assert b'"rate":1.10' in line
    assert record["created"] == "2026-01-01T00:00:00Z"


def test_bookmarks_move_while_records_wait_on_a_full_pipe_and_a_state_comes_after_them(
    monkeypatch,
):
    """A thread's chunk of records waits on a full pipe (a target slower than the tap):
    meanwhile the run lock is free (bookmarks move: no unit queues behind the pipe), and
    a STATE written then reaches stdout after that chunk, every line whole."""
    import fcntl
    import os
    import struct
    import termios

    from tap_stripe_connect.output.writer import OUTPUT_LOCK
    from tap_stripe_connect.state.lock import RUN_LOCK

    read_end, write_end = os.pipe()
    monkeypatch.setattr(sys, "stdout", os.fdopen(write_end, "w"))
    writer = LockedWriter()
    record = b'{"type":"RECORD","stream":"charges","record":{"id":"ch_%05d","pad":"%s"}}'
    count = LockedWriter.CHUNK // 900 + 1  # lines of ~930 bytes: one chunk, more than a pipe

    def write_records() -> None:
        for i in range(count):
            writer.write_line(record % (i, b"x" * 900), record=True)

    def pipe_full() -> bool:
        waiting = struct.unpack("i", fcntl.ioctl(read_end, termios.FIONREAD, b"\0" * 4))[0]
        return waiting >= 65536 and not OUTPUT_LOCK.acquire(blocking=False)

    records = threading.Thread(target=write_records)
    records.start()
    for _ in range(1000):
        if pipe_full():
            break
        time.sleep(0.01)
    assert pipe_full(), "the chunk did not wait on the pipe"
    # The run lock is free: a bookmark moves now (before, the chunk held it).
    assert RUN_LOCK.acquire(blocking=False)
    RUN_LOCK.release()
    state = threading.Thread(
        target=writer.write_line, args=(b'{"type":"STATE","value":{"bookmarks":{}}}',)
    )
    state.start()
    lines = drain(read_end, records, state)
    assert [m["type"] for m in lines] == ["RECORD"] * count + ["STATE"]


def drain(read_end: int, *threads: threading.Thread) -> list[dict]:
    """Every message on the pipe (stdout) once `threads` end and stdout is closed."""
    import os
    import select

    chunks = []
    while any(thread.is_alive() for thread in threads):
        if select.select([read_end], [], [], 0.05)[0]:
            chunks.append(os.read(read_end, 65536))
    for thread in threads:
        thread.join()
    sys.stdout.close()
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    return [json.loads(line) for line in b"".join(chunks).splitlines()]


def test_a_state_waits_on_a_full_pipe_for_the_records_before_it_without_the_run_lock(
    monkeypatch,
):
    """A STATE goes out after every thread's collected records; while those wait on a
    full pipe, the run lock is free (units move their bookmarks), and the STATE still
    follows every record collected before it, every line whole."""
    import fcntl
    import os
    import struct
    import termios

    from tap_stripe_connect.output.writer import OUTPUT_LOCK, LockedStateWriter
    from tap_stripe_connect.state.lock import RUN_LOCK

    read_end, write_end = os.pipe()
    monkeypatch.setattr(sys, "stdout", os.fdopen(write_end, "w"))
    writer = LockedWriter()
    states = LockedStateWriter(writer)
    record = b'{"type":"RECORD","stream":"charges","record":{"id":"ch_%d_%03d","pad":"%s"}}'
    line = len(record % (0, 0, b"x" * 900)) + 1
    per_thread = LockedWriter.CHUNK // line - 1  # collected, not written: below a chunk

    def collect(thread: int) -> None:
        for i in range(per_thread):
            writer.write_line(record % (thread, i, b"x" * 900), record=True)

    collectors = [threading.Thread(target=collect, args=(n,)) for n in range(3)]
    for thread in collectors:
        thread.start()
    for thread in collectors:
        thread.join()
    state = threading.Thread(target=states.write, args=({"bookmarks": {"charges": {}}},))
    state.start()

    def waiting_on_the_pipe() -> bool:
        waiting = struct.unpack("i", fcntl.ioctl(read_end, termios.FIONREAD, b"\0" * 4))[0]
        return waiting >= 60000 and not OUTPUT_LOCK.acquire(blocking=False)

    for _ in range(1000):
        if waiting_on_the_pipe():
            break
        time.sleep(0.01)
    assert waiting_on_the_pipe(), "the STATE's records did not wait on the pipe"
    # Before, the records before a STATE went out under the run lock: every unit that
    # moved a bookmark waited for the target.
    assert RUN_LOCK.acquire(blocking=False), "the run lock is held while records wait"
    RUN_LOCK.release()
    lines = drain(read_end, state)
    assert [m["type"] for m in lines] == ["RECORD"] * (3 * per_thread) + ["STATE"]
    assert len({m["record"]["id"] for m in lines[:-1]}) == 3 * per_thread


# -- the run lock -------------------------------------------------------------------------


def test_the_run_lock_is_free_for_a_running_thread_until_the_waiter_it_woke_runs():
    """A release wakes a waiting thread, but the lock stays free until that thread holds
    the GIL: the thread still running may take it again. (`threading.RLock` hands itself
    to the waiter, which then waits for the GIL holding it, and every unit of a platform
    run that wants the lock queues behind.)"""
    from tap_stripe_connect.state.lock import RUN_LOCK

    took = threading.Event()
    about_to_wait = threading.Event()

    def wait_for_it() -> None:
        about_to_wait.set()
        with RUN_LOCK:
            took.set()

    RUN_LOCK.acquire()
    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    about_to_wait.wait(5)
    time.sleep(0.2)  # the waiter blocks on the lock
    interval = sys.getswitchinterval()
    sys.setswitchinterval(5.0)  # this thread keeps the GIL while it runs Python
    try:
        RUN_LOCK.release()
        spin_until = time.perf_counter() + 0.05  # the woken waiter is scheduled meanwhile
        while time.perf_counter() < spin_until:
            pass
        again = RUN_LOCK.acquire(blocking=False)
    finally:
        sys.setswitchinterval(interval)
    assert again, "the woken waiter took the lock before it could run"
    assert not took.is_set()
    RUN_LOCK.release()
    waiter.join(30)
    assert took.is_set()


def test_the_run_lock_excludes_nests_times_out_and_wakes_every_waiter():
    from tap_stripe_connect.state.lock import RunLock

    lock = RunLock()
    total = [0]

    def add() -> None:
        for i in range(3000):
            with lock, lock:  # reentrant
                value = total[0]
                if i % 50 == 0:
                    time.sleep(0)  # let another thread run inside
                total[0] = value + 1

    threads = [threading.Thread(target=add) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads), "a waiter was never woken"
    assert total[0] == 12 * 3000
    lock.acquire()
    result: list[bool] = []
    other = threading.Thread(target=lambda: result.append(lock.acquire(timeout=0.1)))
    other.start()
    other.join(30)
    assert result == [False]
    assert lock.held()
    lock.release()
    assert not lock.held()
    with pytest.raises(RuntimeError):
        lock.release()
    assert lock.acquire(blocking=False)
    lock.release()


def test_a_wait_on_the_run_lock_cut_short_by_a_signal_passes_its_turn_on():
    """The main thread waits on the lock and a signal handler raises (a stopped run):
    the next release still wakes the thread waiting after it."""
    import signal

    from tap_stripe_connect.state.lock import RunLock

    class SignalledError(Exception):
        pass

    def interrupt(signum: int, frame: object) -> None:
        raise SignalledError

    lock = RunLock()
    let_go = threading.Event()

    def hold() -> None:
        with lock:
            let_go.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    while lock.acquire(blocking=False):
        lock.release()
        time.sleep(0.01)
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(SignalledError):
            lock.acquire()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    took = threading.Event()

    def wait_for_it() -> None:
        with lock:
            took.set()

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    time.sleep(0.2)  # the waiter queues behind the interrupted wait
    let_go.set()
    holder.join(30)
    waiter.join(10)
    assert took.is_set(), "the release woke the interrupted wait, not the waiting thread"


# -- the scheduler of units of work ------------------------------------------------------------


class Job:
    def __init__(self, name: str, seconds: float = 0.0, fail: bool = False) -> None:
        self.name = name
        self.seconds = seconds
        self.fail = fail
        self.ran = threading.Event()

    def run(self) -> None:
        time.sleep(self.seconds)
        self.ran.set()
        if self.fail:
            raise RuntimeError(f"{self.name} failed")


@pytest.mark.parametrize("eager", [False, True])
def test_the_scheduler_runs_every_job_and_raises_the_first_failure_at_the_end(eager):
    scheduler = Scheduler(2, responses_slow=lambda: True)
    scheduler.eager = eager
    jobs = [Job("a", 0.05), Job("b", fail=True), Job("c", fail=True), Job("d", 0.05)]
    with pytest.raises(RuntimeError, match="b failed"):
        scheduler.run(jobs)
    assert all(job.ran.is_set() for job in jobs)
    assert not scheduler.may_start.is_set()


def test_the_scheduler_runs_at_most_parallel_jobs_at_once():
    running, most = [0], [0]
    lock = threading.Lock()
    three = threading.Event()  # set once 3 jobs run together: none ends before

    class Counted(Job):
        def run(self) -> None:
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
                if running[0] == 3:
                    three.set()
            three.wait(timeout=10)
            with lock:
                running[0] -= 1

    Scheduler(3, responses_slow=lambda: True).run([Counted(str(i)) for i in range(9)])
    assert three.is_set()
    assert most[0] == 3


def test_the_scheduler_keeps_no_finished_job_of_a_long_run():
    """A platform run has a job per (account, stream), 240,000 for 10,000 accounts: what the
    scheduler holds while the last ones run does not grow with the jobs already finished."""
    import gc
    from concurrent.futures import Future

    seen: list[int] = []

    class Counting(Job):
        def run(self) -> None:
            if self.name in ("100", "2999"):
                gc.collect()
                seen.append(sum(isinstance(o, Future) for o in gc.get_objects()))

    scheduler = Scheduler(4, responses_slow=lambda: True)
    scheduler.eager = True
    scheduler.run([Counting(str(i)) for i in range(3000)])
    early, late = seen
    assert late <= early + 4, (early, late)


def noted_jobs(
    count: int, then: t.Callable[[int], object] = bool
) -> tuple[list[Job], list[str]]:
    """`count` jobs that note their names as they run (in the list returned), then call
    `then` with how many ran so far."""
    ran: list[str] = []
    lock = threading.Lock()

    class Noted(Job):
        def run(self) -> None:
            with lock:
                ran.append(self.name)
                then(len(ran))

    return [Noted(str(i)) for i in range(count)], ran


def test_a_platforms_workers_take_their_next_unit_themselves(monkeypatch):
    """A platform run has a unit per (account, stream), often one request each: handing
    every unit to the pool through the scheduler's thread cost ~3 thread switches a unit.
    Each worker takes the next unit as one ends, so the pool gets a task per worker."""
    from concurrent.futures import ThreadPoolExecutor

    submitted = [0]
    submit = ThreadPoolExecutor.submit

    def counted(self, *args, **kwargs):
        submitted[0] += 1
        return submit(self, *args, **kwargs)

    monkeypatch.setattr(ThreadPoolExecutor, "submit", counted)
    jobs, ran = noted_jobs(3000)
    scheduler = Scheduler(4, responses_slow=lambda: True)
    scheduler.eager = True
    scheduler.run(jobs)
    assert sorted(ran, key=int) == [str(i) for i in range(3000)]
    assert submitted[0] <= 8, submitted[0]  # the workers (started again if the width narrowed)


def test_a_platform_run_asked_to_stop_starts_no_unit_and_ends_those_running():
    stop = threading.Event()
    # The signal comes as the 10th unit starts, while others run.
    jobs, started = noted_jobs(1000, lambda count: count == 10 and stop.set())
    scheduler = Scheduler(3, responses_slow=lambda: True, stopping=stop.is_set)
    scheduler.eager = True
    scheduler.run(jobs)
    assert 10 <= len(started) <= 12  # only those that had been taken before the stop
    assert not scheduler.may_start.is_set()


def test_a_platform_run_whose_scheduler_fails_starts_no_more_units_and_raises():
    """A failure in the scheduler's own thread (its look at the CPU, here) ends the run: the
    workers take no other unit, the failure is raised, and no unit runs after it."""
    from tap_stripe_connect.sync.scheduler import CpuLoad

    first_running = threading.Barrier(3)  # the two workers' first units, and the look below
    raised = threading.Event()

    class Failing(CpuLoad):
        looks = 0

        def busy(self, threshold: float = 0.9) -> bool:
            Failing.looks += 1
            if Failing.looks == 1:
                return False  # the first look, before any worker starts
            first_running.wait(timeout=60)  # both workers hold a unit
            raised.set()
            raise RuntimeError("the look at the CPU failed")

    jobs, ran = noted_jobs(1000)
    scheduler = Scheduler(2, responses_slow=lambda: True)
    scheduler.eager = True
    scheduler.cpu_load = lambda: Failing(0.0)  # the look is due at once

    class Held(Job):
        def __init__(self, job: Job) -> None:
            super().__init__(job.name)
            self.job = job

        def run(self) -> None:
            self.job.run()
            if len(ran) <= 2:
                first_running.wait(timeout=60)
                raised.wait(timeout=60)  # ends after the failure: would it take another?

    with pytest.raises(RuntimeError, match="the look at the CPU failed"):
        scheduler.run([Held(job) for job in jobs])
    # Only the two units held when it failed: neither worker took another.
    assert len(ran) == 2, len(ran)
    assert not scheduler.may_start.is_set()


@pytest.mark.parametrize(("busy", "most"), [(False, 6), (True, 2)])
def test_many_accounts_units_start_beyond_the_floor_only_while_the_cpu_has_room(busy, most):
    """A platform's units: `floor` start at once; more, up to `parallel`, only while the
    sync leaves the CPU idle (Stripe's slow answers), never while it keeps a CPU busy."""
    from tap_stripe_connect.sync.scheduler import CpuLoad

    class Load(CpuLoad):
        def busy(self, threshold: float = 0.9) -> bool:
            return busy

    running, peak = [0], [0]
    lock = threading.Lock()
    release = threading.Event()

    class Held(Job):
        def run(self) -> None:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                if running[0] == 6:
                    release.set()  # every worker taken: let them all end
            # Busy: no more can start whatever the wait, so a short one keeps the test short.
            release.wait(timeout=0.2 if busy else 10)
            with lock:
                running[0] -= 1

    scheduler = Scheduler(6, responses_slow=lambda: True)
    scheduler.eager, scheduler.floor = True, 2
    scheduler.cpu_load = Load
    scheduler.run([Held(str(i)) for i in range(12)])
    assert peak[0] == most
