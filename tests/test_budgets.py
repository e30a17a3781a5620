"""The client's budgets, counted by the limiters' own grant times on an injected clock.

`max_requests_per_second_total` caps a whole run across accounts: a request takes its
place in the total and in its account's budget at the same instant, when it is sent, so
the cap holds where the requests go out. A thread waiting for a budget holds no place
among the requests in flight (`max_workers`): another account's request goes meanwhile.

Threads run on virtual time: a sleep moves time only once every thread sleeps, waits for
a place in flight, or is done; a send takes no time. Nothing depends on the machine's speed.
"""

from __future__ import annotations

import bisect
import threading

import requests

from tap_stripe_connect.api import StripeClient, list_read
from tap_stripe_connect.api.auth import build_authenticator
from tap_stripe_connect.resources import RESOURCES_BY_NAME
from tap_stripe_connect.settings import Settings

CHARGES = RESOURCES_BY_NAME["charges"]
BODY = b'{"object": "list", "url": "/v1/charges", "has_more": false, "data": []}'


class VirtualTime:
    """A clock that threads share; `sleep` returns once time reaches its end."""

    def __init__(self, threads: int) -> None:
        self.now = 1000.0
        self._cond = threading.Condition()
        self._live = threads
        self._idle = 0  # threads asleep or waiting for a place in flight
        self._wakes: list[float] = []

    def clock(self) -> float:
        return self.now

    def _advance(self) -> None:
        # Caller holds the condition. Every live thread idle: time goes to the next wake.
        if self._live and self._idle >= self._live and self._wakes:
            self.now = max(self.now, min(self._wakes))
            self._cond.notify_all()

    def sleep(self, seconds: float) -> None:
        with self._cond:
            until = self.now + max(0.0, seconds)
            self._wakes.append(until)
            self._idle += 1
            self._advance()
            while self.now < until:
                self._cond.wait()
            self._idle -= 1
            self._wakes.remove(until)

    def blocked(self, acquire) -> bool:
        """A blocking wait on a real lock, counted as idle meanwhile."""
        if acquire(blocking=False):
            return True
        with self._cond:
            self._idle += 1
            self._advance()
        try:
            return acquire()
        finally:
            with self._cond:
                self._idle -= 1

    def release_notice(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def done(self) -> None:
        with self._cond:
            self._live -= 1
            self._advance()


class Slots:
    """`max_workers` places in flight, whose waits the virtual clock sees."""

    def __init__(self, count: int, time: VirtualTime) -> None:
        self._sem = threading.Semaphore(count)
        self._time = time

    def acquire(self, blocking: bool = True) -> bool:
        if not blocking:
            return self._sem.acquire(blocking=False)
        return self._time.blocked(self._sem.acquire)

    def release(self) -> None:
        self._sem.release()

    def __enter__(self) -> Slots:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def client_on(time: VirtualTime, sent: list[tuple[float, str]], **config) -> StripeClient:
    settings = Settings.from_config({"api_key": "sk_test_budgets", **config})
    client = StripeClient(
        settings, build_authenticator({"api_key": "sk_test_budgets"}), budget_clock=time.clock
    )
    client.stop.wait = time.sleep  # type: ignore[method-assign]  # the budgets' sleeps
    if client.total_limiter is not None:  # made before: its clock and sleep set here
        client.total_limiter._clock, client.total_limiter._sleep = time.clock, time.sleep
    client.in_flight = Slots(settings.max_workers, time)  # type: ignore[assignment]
    lock = threading.Lock()

    def send(request: requests.PreparedRequest, **_: object) -> requests.Response:
        with lock:
            sent.append((time.now, request.headers.get("Stripe-Account", "")))
        response = requests.Response()
        response.status_code = 200
        response.request = request
        response.headers["Request-Id"] = "req_budgets"
        response._content, response._content_consumed = BODY, True
        return response

    client.wire.send = send  # type: ignore[method-assign]
    return client


def run_threads(time: VirtualTime, work: list) -> None:
    def body(fn) -> None:
        try:
            fn()
        finally:
            time.done()

    threads = [threading.Thread(target=body, args=(fn,), daemon=True) for fn in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), "a thread never finished: virtual time stalled"


def most_in_one_second(times: list[float]) -> int:
    times = sorted(times)
    return max(
        (i + 1 - bisect.bisect_right(times, at - 1.0) for i, at in enumerate(times)), default=0
    )


def test_the_runs_total_cap_holds_where_requests_go_out():
    """Two accounts under a total of 10/s: one with a small budget of its own (4/s),
    whose requests wait for it, the other with room. A request counted in the total
    before it waited for its account's budget would go out later than counted, next to
    the other account's: more than 10 in a second."""
    threads, each = 8, 12
    time = VirtualTime(threads)
    sent: list[tuple[float, str]] = []
    client = client_on(
        time, sent, max_requests_per_second_total=10, max_requests_per_second=40,
        max_workers=threads,
    )
    client.limiter_for("acct_slow").global_rate = 4

    def requests_of(account: str):
        def go() -> None:
            for _ in range(each):
                client.call(list_read(CHARGES, account=account))

        return go

    run_threads(time, [requests_of("acct_slow" if i % 2 else "acct_fast") for i in range(threads)])
    assert len(sent) == threads * each
    # The limiters' own grants: every request counted in the total when its account's
    # budget let it through, and the total never more than 10 in a second.
    total = client.total_limiter
    assert total is not None
    granted = [grant.at for grant in total._global]
    assert most_in_one_second(granted) <= 10
    at_send = [at for at, _ in sent]
    assert most_in_one_second(at_send) <= 10, most_in_one_second(at_send)
    slow = [at for at, account in sent if account == "acct_slow"]
    assert most_in_one_second(slow) <= 4


def test_a_thread_waiting_for_a_budget_holds_no_place_in_flight():
    """One place in flight (`max_workers: 1`); one account's budget used up for a second.
    The other account's requests go out meanwhile, not after the wait."""
    time = VirtualTime(2)
    sent: list[tuple[float, str]] = []
    client = client_on(time, sent, max_requests_per_second=40, max_workers=1)
    waiting = client.limiter_for("acct_waits")
    waiting.global_rate = 1
    client.call(list_read(CHARGES, account="acct_waits"))  # its budget: used for 1 s
    start = time.now
    sent.clear()
    done = threading.Event()

    def waits() -> None:
        client.call(list_read(CHARGES, account="acct_waits"))

    def goes() -> None:
        # Once the other thread waits for its budget (virtual time stands still until
        # this thread waits too).
        while not waiting._queued[None]:
            threading.Event().wait(0.01)
        for _ in range(5):
            client.call(list_read(CHARGES, account="acct_goes"))
        done.set()

    run_threads(time, [waits, goes])
    assert done.is_set()
    goes_at = [at for at, account in sent if account == "acct_goes"]
    waits_at = [at for at, account in sent if account == "acct_waits"]
    assert waits_at[0] >= start + 1.0
    # Every request of the other account went out before the waiting one's budget freed.
    assert max(goes_at) < waits_at[0], (goes_at, waits_at)
