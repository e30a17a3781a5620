"""The scheduler of parallel work: which units of work run at once, and when one more starts.

singer-sdk syncs streams one after another. Stripe's budgets are per endpoint and per
account, so a run keeps several units of work (today: a top-level stream with all its
accounts; with many accounts: one (account, stream) pair each) in flight at once, each
through the same client and writer.
"""

from __future__ import annotations

import collections
import heapq
import queue
import threading
import time
import typing as t
from concurrent.futures import Future, ThreadPoolExecutor

if t.TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

# Share of a CPU a sync must have used over the last 50 ms for no other unit to start.
STREAM_START_BUSY = 0.5
# Eager jobs beyond `floor` start only while the sync leaves more than this idle: a
# look every 50 ms widens (or, busier, narrows) the jobs at once by GROW_STEP.
GROW_BUSY = 0.85
GROW_STEP = 4


class Job(t.Protocol):
    """A unit of work the scheduler runs: its name (for progress), its account and the work."""

    @property
    def name(self) -> str: ...

    @property
    def account(self) -> str | None:
        """The account whose budget the job spends (None: the credential's own)."""

    def run(self) -> None: ...


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


class Scheduler:
    """Runs jobs up to `parallel` at once, starting one more only when it helps.

    Parallel jobs overlap their waits for Stripe (for responses, for the rate budget).
    When nothing waits, the process already keeps a CPU busy and one more job only
    competes for the GIL: without latency, four streams at once took ~30% longer than one
    after another. So a job starts when another ends, or when the last 50 ms left at least
    half a CPU idle, or at once when Stripe's responses are slow (then every job mostly
    waits). (Starting one whenever the CPU was 10% idle ran all four together at some
    point of a long sync: its peak memory, pages queued for four streams, was ~25% above
    a short sync's.) Every job runs even if one fails; the first failure (in job order) is
    raised at the end. Once the run is asked to stop (`stopping`), no job starts: those
    running end (their requests refused by the client) and `run` returns or raises.

    Jobs of many accounts rotate: the next job is the first waiting one of the account
    with the fewest jobs running, so every account's budget is used at once (Stripe limits
    each account on its own) and a large or slow account holds one worker, not the pool.
    Such jobs (`eager`) start up to `floor` at once whatever the CPU: they are small
    (one stream of one account, a few pages) and each waits for its own responses, so
    starting one per 50 ms of idle CPU ran a 40-account platform without latency one unit
    at a time (38 s at a third of a CPU; 16 s started at once). Beyond `floor`, up to
    `parallel`: every 50 ms the jobs at once widen by 4 while the sync leaves 15% of a CPU
    idle, and narrow by 4 (not below `floor`) while it does not: how many units keep the
    CPU busy depends on how long Stripe takes to answer. Eager jobs are not handed out by
    this thread: each worker takes the next one as its last ends (`_run_eager`).
    """

    def __init__(
        self,
        parallel: int,
        responses_slow: Callable[[], bool],
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.parallel = max(1, parallel)
        self.responses_slow = responses_slow
        #: Whether the run was asked to stop (a signal): then no job starts any more.
        self.stopping = stopping
        #: Start every job at once (up to `floor`, then up to `parallel` while the CPU
        #: has room): the units of many accounts.
        self.eager = False
        self.floor = self.parallel
        #: How busy the sync keeps a CPU, looked at over 50 ms (tests give their own).
        self.cpu_load: Callable[[], CpuLoad] = lambda: CpuLoad(0.05)
        #: Set while a job may still start: running jobs then split no `created` window
        #: (a job adds requests for full pages, a split window partial ones).
        self.may_start = threading.Event()

    def run(self, jobs: Sequence[Job]) -> None:
        if self.eager:
            self._run_eager(Waiting(jobs))
            return
        waiting = Waiting(jobs)
        # Of the finished futures only the first failure (in job order) is kept: a platform
        # run has a job per (account, stream), 240,000 for 10,000 accounts, and a finished
        # future holds a lock and a condition (~1 KB) until it is let go.
        first_failure: tuple[int, Future] | None = None
        #: Of each running job: its place in the start order, and its account.
        running: dict[Future, tuple[int, str | None]] = {}
        #: Running jobs by account (the next job is of the account with fewest).
        busy: collections.Counter[str | None] = collections.Counter()
        # Each job puts its future here as it ends: the loop takes what ended, not (as
        # `concurrent.futures.wait` does) a look at every running job at every turn.
        ended: queue.SimpleQueue[Future] = queue.SimpleQueue()
        count = 0
        room = self.cpu_load()  # a quick look: jobs start within a few responses
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="stream") as pool:
            while waiting or running:
                if waiting and self.stopping():
                    waiting.clear()  # those left start in the next run
                slow = self.responses_slow()
                while self._room_for_one(waiting, running, slow, room):
                    job = next_job(waiting, busy)
                    account = getattr(job, "account", None)
                    future = pool.submit(job.run)
                    running[future] = (count, account)
                    busy[account] += 1
                    count += 1
                    future.add_done_callback(ended.put)
                    if not slow:
                        break  # one at a time: see whether the CPU is left idle
                self._may_start(waiting, len(running))
                if not running:
                    continue
                timeout = room.span if self.may_start.is_set() else None
                for future in take_ended(ended, timeout):
                    place, account = running.pop(future)
                    ended_one(waiting, busy, account)
                    failed = future.exception() is not None
                    if failed and (first_failure is None or place < first_failure[0]):
                        first_failure = (place, future)
        self.may_start.clear()
        if first_failure is not None:
            first_failure[1].result()

    def _run_eager(self, waiting: Waiting) -> None:
        """Many accounts' units: each worker takes its next unit itself as one ends.

        A platform run starts a unit per request or two (an account's stream of a few
        objects), so handing each to the pool through this thread cost ~3 thread switches
        a unit (the worker waits on the pool's queue, this thread wakes for the ended
        future, each then waits for the GIL): 11 a request in a 1,000-account run, 8 now.
        Here this thread only looks at the CPU every 50 ms, starts workers up to the width
        (each with its first job), lets the surplus end as their jobs do when it narrows,
        and returns when every worker has ended.
        """
        lock = threading.Lock()
        room = self.cpu_load()
        width = self.floor
        busy: collections.Counter[str | None] = collections.Counter()
        first_failure: tuple[int, BaseException] | None = None
        workers = running = count = 0
        changed = threading.Condition(lock)  # a worker ended

        def take() -> tuple[Job, str | None, int]:
            """The next job, counted as running; the caller holds `lock`."""
            nonlocal running, count
            job = next_job(waiting, busy)
            account = getattr(job, "account", None)
            busy[account] += 1
            running, count = running + 1, count + 1
            self._may_start(waiting, running)
            return job, account, count - 1

        def worker(job: Job, account: str | None, place: int) -> None:
            nonlocal workers, running, first_failure
            while True:
                failure: BaseException | None = None
                try:
                    job.run()
                except BaseException as exc:  # raised at the end, as a pool's future would
                    failure = exc
                with lock:
                    running -= 1
                    ended_one(waiting, busy, account)
                    if failure is not None and (first_failure is None or place < first_failure[0]):
                        first_failure = (place, failure)
                    if not waiting or workers > width or self.stopping():
                        workers -= 1
                        self._may_start(waiting, running)
                        changed.notify()
                        return
                    job, account, place = take()

        looked = time.monotonic()
        # This thread holds `lock` except while it waits (`changed.wait`); the pool's exit,
        # after the lock is let go, waits for the workers still running.
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="stream") as pool, lock:
            try:
                while True:
                    if waiting and self.stopping():
                        waiting.clear()  # those left start in the next run
                    if not waiting and not workers:
                        break
                    if time.monotonic() - looked >= room.span:
                        # More units only while responses leave the CPU idle: with fast
                        # responses the sync is bound by its CPU at ~30 units, and more would
                        # only queue for the GIL; with Stripe's 200-600 ms it takes ~10x as many.
                        looked = time.monotonic()
                        grow = not room.busy(GROW_BUSY)
                        width = width + GROW_STEP if grow else max(self.floor, width - GROW_STEP)
                        width = min(width, self.parallel)
                    # New workers' first jobs are taken here, at once: one of each account
                    # before a second of any (a worker that ends one first would take its
                    # account's next, which is first in the order).
                    for _ in range(min(width - workers, len(waiting))):
                        pool.submit(worker, *take())
                        workers += 1
                    changed.wait(room.span)
            except BaseException:
                # This thread failed: under the lock still, so no worker takes another unit
                # (the pool's exit waits for those running, not for every unit of the run).
                waiting.clear()
                self.may_start.clear()
                raise
        self.may_start.clear()
        if first_failure is not None:
            raise first_failure[1]

    def _may_start(self, waiting: Waiting, running: int) -> None:
        """Set `may_start` while a job may still start (a change only: an Event's lock)."""
        may = bool(waiting) and running < self.parallel
        if may != self.may_start.is_set():
            if may:
                self.may_start.set()
            else:
                self.may_start.clear()

    def _room_for_one(
        self,
        waiting: Waiting,
        running: Mapping[Future, t.Any],
        slow: bool,
        room: CpuLoad,
    ) -> bool:
        if not waiting or len(running) >= self.parallel:
            return False
        return not running or slow or not room.busy(STREAM_START_BUSY)


def ended_one(waiting: Waiting, busy: collections.Counter[str | None], account: str | None) -> None:
    """A job of `account` ended: one fewer running; its waiting jobs go first again if it
    has none running now."""
    busy[account] -= 1
    if not busy[account]:
        del busy[account]
        waiting.none_running(account)


def take_ended(ended: queue.SimpleQueue[Future], timeout: float | None) -> list[Future]:
    """The jobs that ended: one waited for (up to `timeout`), and those that ended with it."""
    try:
        futures = [ended.get(timeout=timeout)]
    except queue.Empty:
        return []
    while True:
        try:
            futures.append(ended.get_nowait())
        except queue.Empty:
            return futures


class Waiting:
    """The jobs not started yet, by account (in the order of their first job): the next is
    the first waiting job of the account with the fewest jobs running.

    Accounts with none running are kept in a heap by that order, so a platform run of
    10,000 accounts x 24 streams finds the next job without looking at the jobs of every
    account that has one running (a scan of the jobs took 12% of a run's CPU with 256
    units running).
    """

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.jobs: dict[str | None, collections.deque[Job]] = {}
        for job in jobs:
            self.jobs.setdefault(getattr(job, "account", None), collections.deque()).append(job)
        self.order = {account: place for place, account in enumerate(self.jobs)}
        #: Accounts with waiting jobs and, as far as known, none running: (order, account).
        self.idle = [(place, account) for account, place in self.order.items()]
        self.count = len(jobs)

    def __len__(self) -> int:
        return self.count

    def clear(self) -> None:
        self.jobs.clear()
        self.idle.clear()
        self.count = 0

    def none_running(self, account: str | None) -> None:
        """The account's last running job ended: its waiting jobs go first again."""
        if account in self.jobs:
            heapq.heappush(self.idle, (self.order[account], account))

    def take(self, account: str | None) -> Job:
        jobs = self.jobs[account]
        job = jobs.popleft()
        if not jobs:
            del self.jobs[account]
        self.count -= 1
        return job


def next_job(waiting: Waiting, busy: Mapping[str | None, int]) -> Job:
    """The first waiting job of the account with the fewest jobs running (`busy`: running
    jobs by account), taken from `waiting`."""
    while waiting.idle:
        _, account = heapq.heappop(waiting.idle)
        if account in waiting.jobs and not busy.get(account, 0):
            return waiting.take(account)
    # Every account with a job waiting has one running: the fewest, the first of them.
    account = min(waiting.jobs, key=lambda a: (busy.get(a, 0), waiting.order[a]))
    return waiting.take(account)
