"""The run lock: one lock for the shared state dict of a run, and for every message but
records.

Streams sync in parallel threads. Every change to the state dict, and every Singer message
but a chunk of RECORD lines, happens under this lock, so a STATE message is always a
consistent snapshot of what was written before it. Nothing else in the tap locks state.
The bytes on stdout have a lock of their own (`output/writer.py`, `OUTPUT_LOCK`, always
taken after this one): a chunk of records waiting on a full pipe, and the records written
before a STATE (encoded under this lock), hold only that.
"""

from __future__ import annotations

import collections
import threading
import time
import typing as t

_allocate = threading.Lock
_ident = threading.get_ident


class RunLock:
    """A reentrant lock that a waiting thread does not own until it runs.

    `threading.RLock` hands itself to the thread it wakes, and that thread then waits
    for the GIL, holding the lock, while every other unit that wants it queues behind:
    with a platform's ~50-250 units in flight, one lock taken a dozen times a unit kept
    more threads waiting on it than on Stripe's answers (py-spy dumps of a 1,000-account
    run), and each wait is two thread switches. Here a release only wakes a waiter; the
    lock is free until a thread that holds the GIL takes it (so a waiter may find it
    taken again, and waits again). Taking and giving it back are single operations on a
    dict and a deque, which the GIL makes atomic.
    """

    __slots__ = ("_count", "_owner", "_slot", "_waiters")

    def __init__(self) -> None:
        self._slot: dict[int, int] = {}  # {0: owner}: a held lock
        self._owner: int | None = None
        self._count = 0
        self._waiters: collections.deque = collections.deque()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = _ident()
        if self._owner == me:
            self._count += 1
            return True
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        while True:
            if self._slot.setdefault(0, me) == me:
                self._owner, self._count = me, 1
                return True
            if not blocking:
                return False
            waiter = _allocate()
            waiter.acquire()
            try:
                self._waiters.append(waiter)
                # A release between the look above and `append` woke no one: look again.
                if self._slot.setdefault(0, me) == me:
                    self._owner, self._count = me, 1
                    self._forget(waiter)
                    return True
                if deadline is None:
                    woken = waiter.acquire()
                else:
                    left = deadline - time.monotonic()
                    woken = left > 0 and waiter.acquire(timeout=left)
            except BaseException:  # a signal's exception: no wake-up may be lost with it
                self._forget(waiter)
                raise
            if not woken:
                self._forget(waiter)
                if self._slot.setdefault(0, me) == me:
                    self._owner, self._count = me, 1
                    return True
                return False

    def _forget(self, waiter: t.Any) -> None:
        """Take `waiter` off the queue; if a release woke it already, wake the next one."""
        try:
            self._waiters.remove(waiter)
        except ValueError:
            self._wake()

    def _wake(self) -> None:
        if not self._slot:  # held: its release wakes the next waiter
            self._wake_one()

    def _wake_one(self) -> None:
        try:
            waiter = self._waiters.popleft()
        except IndexError:
            return
        waiter.release()

    def release(self) -> None:
        if self._owner != _ident():
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if self._count:
            return
        self._owner = None
        del self._slot[0]
        self._wake_one()

    def held(self) -> bool:
        """Whether the calling thread holds the lock."""
        return self._owner == _ident()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


RUN_LOCK = RunLock()
