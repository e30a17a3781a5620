"""`created` windows: one listing read by several workers at once.

A `Window` is a `created` range paged newest first by one worker. While the consumer
waits for data, a new worker takes the older half of the biggest remaining range (work
stealing), so data that is bunched in time still spreads over the workers. Stripe's
rate budget is per endpoint and per account, so several windows of one list in flight
are what makes a listing fast.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence


# No Stripe object is older than Stripe (2010-01-01).
STRIPE_EPOCH = 1_262_304_000


class Window:
    """Objects created in [lower, upper), read newest first by one worker."""

    # Split only windows expected to hold this many more objects: every split window
    # ends on a partial page, so smaller splits cost more requests than they save.
    # (150 shortened scenario C's last windows in a quiet sitting, but added windows and
    # requests and was not faster on a loaded machine: issue 25.5.)
    MIN_SPLIT = 300

    def __init__(self, lower: int, upper: int, floor: int = STRIPE_EPOCH) -> None:
        self.lower = lower
        self.upper = upper
        self.floor = floor  # the earliest `created` the objects plausibly have
        self.first: int | None = None  # `created` of the first (newest) object accepted
        self.cursor: int | None = None  # `created` of the last (oldest) object accepted
        self.count = 0
        #: Objects per second of `created` the window it was split from had: its estimate
        #: until its own first page is read (see `remaining`).
        self.density = 0.0
        self.finished = False  # read to its lower bound: nothing is left to give away
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Window[{self.lower}, {self.upper})"

    def remaining(self) -> float:
        """Objects still to read, estimated from the density read so far (0: unknown)."""
        return self._density() * (self._top() - self._plausible_lower())

    def _density(self) -> float:
        if self.first is None or self.cursor is None or self.count < 100:
            # Not read enough yet: the density of the window it was split from. Without
            # it, a run's first splits all came from the one window that had answered,
            # each giving away half of what it had left: windows of 1/2, 1/4 ... 1/64 of
            # the listing, the small ones soon done and the half paging alone until split
            # again (five more times in scenario C; benchmarks/RESULTS.md, issue 25.5).
            return self.density
        return self.count / max(1, self.first + 1 - self.cursor)

    def _top(self) -> int:
        """Where the objects still to read end: below the last one accepted."""
        return self.cursor + 1 if self.cursor is not None else self.upper

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
            # A window not answered yet splits too (by its estimate): its request asks
            # for the newest objects, and paging ends at the first one below the new
            # `lower` (`accept`).
            if self.finished or self.remaining() < self.MIN_SPLIT:
                return None
            lower = self._plausible_lower()
            middle = lower + (self._top() - lower) // 2
            if middle <= self.lower:
                return None
            older = Window(self.lower, middle, self.floor)
            older.density = self._density()
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
    this batch, that range is done (see state/listing.py).
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
    windows = first if not isinstance(first, Window) else [first]
    reader = WindowReader(
        read,
        windows,
        workers,
        may_split=may_split,
        eager=eager,
        batch_size=batch_size,
        queue_size=queue_size,
    )
    return reader.batches()


class WindowReader:
    """The workers of one `list_windows` call and the queue they fill."""

    def __init__(
        self,
        read: Callable[[Window], Iterable[dict]],
        windows: Sequence[Window],
        workers: int,
        *,
        may_split: Callable[[], bool],
        eager: Callable[[], bool],
        batch_size: int,
        queue_size: int,
    ) -> None:
        self.read = read
        self.workers = max(1, workers)
        self.may_split = may_split
        self.eager = eager
        self.batch_size = batch_size
        self.out: queue.Queue = queue.Queue(maxsize=queue_size)
        self.lock = threading.Lock()
        self.pending: list[Window] = list(reversed(windows))
        self.active: list[Window] = []
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def next_window(self, split: bool) -> Window | None:
        """A pending window, else (when `split`) the older half of the largest active one."""
        with self.lock:
            window: Window | None = None
            if self.pending:
                window = self.pending.pop()
            elif split and self.active and self.may_split():
                candidates = sorted(self.active, key=lambda w: w.remaining(), reverse=True)
                window = next((w2 for w in candidates if (w2 := w.split())), None)
            if window is not None:
                self.active.append(window)
            return window

    def put(self, item: t.Any) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(queue.Full):
                self.out.put(item, timeout=0.1)
                return

    def work(self, window: Window | None) -> None:
        try:
            while window is not None and not self.stop.is_set():
                for batch in self.read_window(window):
                    self.put(batch)
                window = self.next_window(split=False)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self.put(exc)
        finally:
            self.put(_DONE)

    def read_window(self, window: Window) -> Iterator[Batch]:
        """Page one window into batches until it ends or a split took the rest."""
        batch = Batch()
        complete = True
        for obj in self.read(window):
            created = int(obj["created"])
            accepted = window.accept(created)
            if self.stop.is_set():
                complete = False
                break
            if accepted is False:
                break
            if accepted is None:
                continue
            batch.append(obj)
            if len(batch) >= self.batch_size:
                # Newest first: everything created after this object has been read.
                if created + 1 < window.upper:
                    batch.covers = (created + 1, window.upper)
                yield batch
                batch = Batch()
        with self.lock:
            done = window.finish()
            self.active.remove(window)
        if complete:
            batch.covers = done
        if batch or batch.covers:
            yield batch

    def start(self, window: Window) -> None:
        thread = threading.Thread(
            target=self.work, args=(window,), name=f"window-{len(self.threads)}", daemon=True
        )
        self.threads.append(thread)
        thread.start()

    def batches(self) -> Iterator[list[dict]]:
        if self.workers == 1:
            return self.read_here()
        return self.read_by_workers()

    def read_here(self) -> Iterator[list[dict]]:
        """One worker splits no window: the consumer's own thread reads them, one after
        another. (A platform run has a unit per worker: a thread, a queue and a wake-up
        per batch for each of thousands of units were ~8% of its CPU.)"""
        while (window := self.next_window(split=False)) is not None:
            yield from self.read_window(window)

    def read_by_workers(self) -> Iterator[list[dict]]:
        # Workers start with the pending windows and end when none is left. Only the
        # consumer adds workers (splitting a window for each), when it has waited STARVING
        # seconds for a batch: idle workers polling for work would take the GIL from busy
        # threads, which cost ~25% of the CPU of a sync without latency.
        running = 0
        while running < self.workers and (window := self.next_window(split=False)) is not None:
            self.start(window)
            running += 1
        tried = time.monotonic()
        try:
            while running:
                try:
                    # With every worker running no window can be split: the consumer waits
                    # for a batch without waking up every STARVING seconds (in a platform
                    # run, 32 units with one worker each woke 1,600 times a second).
                    item = self.out.get(timeout=STARVING if running < self.workers else None)
                except queue.Empty:
                    item = None
                # While Stripe's responses are slow, batches keep coming from the windows in
                # flight and say nothing of the budget left: a window may split anyway (the
                # last windows of a run would otherwise page alone).
                now = time.monotonic()
                wanted = item is None or (now - tried >= STARVING and self.eager())
                if wanted and running < self.workers:
                    tried = now
                    if (window := self.next_window(split=True)) is not None:
                        self.start(window)
                        running += 1
                if item is _DONE:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                elif item is not None:
                    yield item
        finally:
            self.stop.set()
            for thread in self.threads:
                thread.join(timeout=5)
