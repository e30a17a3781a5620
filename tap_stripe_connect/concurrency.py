"""Concurrent extraction with one writer and consistent STATE.

singer-sdk syncs streams one after another and pages each list sequentially. Stripe's
rate budget is per endpoint and per account, so speed comes from several endpoints and
several `created` windows in flight at once. The pieces here keep that safe:

- `LockedWriter` / `LockedStateWriter` / `LockedStateManager`: every Singer message and
  every change to the shared state dict happens under one lock, so lines never interleave
  and a STATE message is always a consistent snapshot of what was written before it.
- `Window` / `list_windows`: a `created` range paged newest first by one worker; while
  the consumer waits for data, a new worker takes the older half of the biggest remaining
  range (work stealing), so data that is bunched in time still spreads over the workers.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
import typing as t

from singer_sdk.contrib.msgspec import MsgSpecWriter, encoder

from tap_stripe_connect.sdk_compat import StateWriter, StreamStateManager

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

# One lock for stdout and the shared state of a run.
RUN_LOCK = threading.RLock()


class _Lines:
    """RECORD lines one thread has collected and not yet written."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data = bytearray()


class LockedWriter(MsgSpecWriter):
    """singer-sdk's msgspec writer for several threads: whole lines, STATE after records.

    Each thread collects its RECORD lines and writes them in chunks of `CHUNK` bytes. Any
    other message (SCHEMA, STATE, ACTIVATE_VERSION) first writes every thread's collected
    lines, under the run lock: whatever a STATE message covers is on stdout before it.
    Writing and flushing each record under the run lock made parallel streams queue for
    the lock (and for the GIL, released inside it for every write): ~30% of a sync's time.
    """

    #: Called with every message once it is written (the run's progress counts records).
    observer: Callable[[t.Any], None] | None = None
    CHUNK = 1 << 16

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._local = threading.local()
        self._collected: list[_Lines] = []  # every thread's

    def write_message(self, message: t.Any) -> None:
        # Not `serialize_message`: it encodes into one buffer shared by every thread.
        line = encoder.encode(message.to_dict())
        if getattr(message, "type", None) == "RECORD":
            lines = self._lines()
            with lines.lock:
                lines.data += line
                lines.data += b"\n"
                full = len(lines.data) >= self.CHUNK
            if full:
                with RUN_LOCK:
                    self._write(lines)
                    sys.stdout.flush()
        else:
            with RUN_LOCK:
                for lines in self._collected:
                    self._write(lines)
                sys.stdout.buffer.write(line + b"\n")
                sys.stdout.flush()
        if self.observer is not None:
            self.observer(message)

    def flush(self) -> None:
        """Write every record collected so far (at the end of a run, or of a failed one)."""
        with RUN_LOCK:
            for lines in self._collected:
                self._write(lines)
            sys.stdout.flush()

    def _lines(self) -> _Lines:
        lines: _Lines | None = getattr(self._local, "lines", None)
        if lines is None:
            lines = self._local.lines = _Lines()
            with RUN_LOCK:
                self._collected.append(lines)
        return lines

    @staticmethod
    def _write(lines: _Lines) -> None:
        """Write one thread's collected lines; the caller holds the run lock."""
        with lines.lock:
            data, lines.data = lines.data, bytearray()
        if data:
            sys.stdout.buffer.write(data)


class LockedStateWriter(StateWriter):
    """Compares, writes and snapshots the state while no other thread changes it."""

    def write_state(self, state: t.Any) -> None:
        with RUN_LOCK:
            super().write_state(state)


def _locked(method: Callable) -> Callable:
    def call(self: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
        with RUN_LOCK:
            return method(self, *args, **kwargs)

    call.__name__ = method.__name__
    call.__doc__ = method.__doc__
    return call


# The manager's operations on the shared dict (tests/test_sdk_compat.py checks they exist).
LOCKED_METHODS = (
    "get_context_state",
    "write_starting_replication_value",
    "write_replication_key_signpost",
    "increment_state",
    "finalize_state",
    "finalize_progress_markers",
    "get_state_partitions",
)


class LockedStateManager(StreamStateManager):
    """The SDK's state manager; each operation on the shared dict holds the run lock."""

    @property
    def stream_state(self) -> dict:
        with RUN_LOCK:
            return StreamStateManager.stream_state.fget(self)  # type: ignore[attr-defined, no-any-return]


for _name in LOCKED_METHODS:
    setattr(LockedStateManager, _name, _locked(getattr(StreamStateManager, _name)))


# No Stripe object is older than Stripe (2010-01-01).
STRIPE_EPOCH = 1_262_304_000


class Window:
    """Objects created in [lower, upper), read newest first by one worker."""

    # Split only windows expected to hold this many more objects: every split window
    # ends on a partial page, so smaller splits cost more requests than they save.
    MIN_SPLIT = 300

    def __init__(self, lower: int, upper: int, floor: int = STRIPE_EPOCH) -> None:
        self.lower = lower
        self.upper = upper
        self.floor = floor  # the earliest `created` the objects plausibly have
        self.first: int | None = None  # `created` of the first (newest) object accepted
        self.cursor: int | None = None  # `created` of the last (oldest) object accepted
        self.count = 0
        self.finished = False  # read to its lower bound: nothing is left to give away
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Window[{self.lower}, {self.upper})"

    def remaining(self) -> float:
        """Objects still to read, estimated from the density read so far (0: unknown)."""
        if self.first is None or self.cursor is None or self.count < 100:
            return 0.0
        density = self.count / max(1, self.first + 1 - self.cursor)
        return density * (self.cursor + 1 - self._plausible_lower())

    def _plausible_lower(self) -> int:
        # Without `start_date` a listing reaches back to 1970; estimated from there, the
        # older half of each first split holds nothing (a request for an empty page),
        # and so on down to the account's first objects. The window still covers its
        # whole range: `floor` only places estimates and splits.
        return max(self.lower, min(self.floor, self.cursor or self.floor))

    def accept(self, created: int) -> bool | None:
        """Claim an object for this window.

        False once paging has passed the lower bound (a split gave the rest away); None
        for an object above the window, which Stripe's `created[lt]` should never send.
        """
        with self._lock:
            if created < self.lower:
                return False
            if created >= self.upper:
                return None
            if self.first is None:
                self.first = created
            self.cursor = created
            self.count += 1
            return True

    def split(self) -> Window | None:
        """Give away the older half (in time) of what is still to read."""
        with self._lock:
            if self.finished or self.cursor is None or self.remaining() < self.MIN_SPLIT:
                return None
            lower = self._plausible_lower()
            middle = lower + (self.cursor + 1 - lower) // 2
            if middle <= self.lower:
                return None
            older = Window(self.lower, middle, self.floor)
            self.lower = middle
            return older

    def finish(self) -> tuple[int, int]:
        """Stop splits once paging is over; the range this window read in full."""
        with self._lock:
            self.finished = True
            return self.lower, self.upper


class Batch(list):
    """Objects of one window, newest first.

    `covers`, when set, is a `created` range [lower, upper) every object of which is in
    this batch or in an earlier batch of the same window: once the consumer has written
    this batch, that range is done (see `checkpoints.py`).
    """

    covers: tuple[int, int] | None = None


_DONE = object()
# Seconds the consumer must have waited for a batch before a window is split for it.
STARVING = 0.02


def list_windows(
    read: Callable[[Window], Iterable[dict]],
    first: Window | Sequence[Window],
    workers: int,
    *,
    may_split: Callable[[], bool] = lambda: True,
    eager: Callable[[], bool] = lambda: False,
    batch_size: int = 100,
    queue_size: int = 4,  # batches: ~8 MB of parsed invoices, no slower than 8 here
) -> Iterator[list[dict]]:
    """Read `first` (one window or several) with up to `workers` threads; yield batches.

    Batches (`Batch`) come as they are read; each says which `created` range it completes.

    `read(window)` pages one window newest first; objects it yields that the window does
    not accept (taken by a split) end that window's paging. A window is split (for a new
    worker) only while the consumer waits for batches and `may_split()` says the rate
    budget has room: when the consumer is the slower side, or requests already wait for
    the limiter, more windows would add requests, not speed. Memory stays bounded:
    workers block when `queue_size` batches wait for the consumer.
    """
    out: queue.Queue = queue.Queue(maxsize=queue_size)
    lock = threading.Lock()
    pending: list[Window] = [first] if isinstance(first, Window) else list(reversed(first))
    active: list[Window] = []
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def next_window(split: bool) -> Window | None:
        """A pending window, else (when `split`) the older half of the largest active one."""
        with lock:
            window: Window | None = None
            if pending:
                window = pending.pop()
            elif split and active and may_split():
                candidates = sorted(active, key=lambda w: w.remaining(), reverse=True)
                window = next((w2 for w in candidates if (w2 := w.split())), None)
            if window is not None:
                active.append(window)
            return window

    def put(item: t.Any) -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                out.put(item, timeout=0.1)
                return

    def work(window: Window | None) -> None:
        try:
            while window is not None and not stop.is_set():
                batch = Batch()
                complete = True
                for obj in read(window):
                    created = int(obj["created"])
                    accepted = window.accept(created)
                    if stop.is_set():
                        complete = False
                        break
                    if accepted is False:
                        break
                    if accepted is None:
                        continue
                    batch.append(obj)
                    if len(batch) >= batch_size:
                        # Newest first: everything created after this object has been read.
                        if created + 1 < window.upper:
                            batch.covers = (created + 1, window.upper)
                        put(batch)
                        batch = Batch()
                with lock:
                    done = window.finish()
                    active.remove(window)
                if complete:
                    batch.covers = done
                if batch or batch.covers:
                    put(batch)
                window = next_window(split=False)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)
        finally:
            put(_DONE)

    def start(window: Window) -> None:
        thread = threading.Thread(
            target=work, args=(window,), name=f"window-{len(threads)}", daemon=True
        )
        threads.append(thread)
        thread.start()

    # Workers start with the pending windows and end when none is left. Only the consumer
    # adds workers (splitting a window for each), when it has waited STARVING seconds for
    # a batch: idle workers polling for work would take the GIL from busy threads, which
    # cost ~25% of the CPU of a sync without latency.
    running = 0
    while running < max(1, workers) and (window := next_window(split=False)) is not None:
        start(window)
        running += 1
    tried = time.monotonic()
    try:
        while running:
            try:
                item = out.get(timeout=STARVING)
            except queue.Empty:
                item = None
            # While Stripe's responses are slow, batches keep coming from the windows in
            # flight and say nothing of the budget left: a window may split anyway (the
            # last windows of a run would otherwise page alone).
            now = time.monotonic()
            if (item is None or (now - tried >= STARVING and eager())) and running < workers:
                tried = now
                if (window := next_window(split=True)) is not None:
                    start(window)
                    running += 1
            if item is None:
                continue
            if item is _DONE:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)


class CpuLoad:
    """How much of one CPU this process used over the last `span` seconds.

    Python runs one thread at a time. A sync that already keeps a CPU busy (parsing and
    writing records) gains nothing from more `created` windows in flight: they add
    partial pages and thread switches. In a local run without latency, splitting cost
    ~15% of the throughput.
    """

    def __init__(
        self,
        span: float = 0.5,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
    ) -> None:
        self.span = span
        self._clock = clock
        self._cpu = cpu
        self._lock = threading.Lock()
        self._at = clock()
        self._used = cpu()
        self.share = 0.0

    def busy(self, threshold: float = 0.9) -> bool:
        """Whether the process used at least `threshold` of a CPU lately."""
        with self._lock:
            now = self._clock()
            if now - self._at >= self.span:
                used = self._cpu()
                self.share = (used - self._used) / (now - self._at)
                self._at, self._used = now, used
            return self.share >= threshold
