"""Client-side rate limiting for one Stripe account, shared by every worker.

Stripe limits reads per account (100 requests/s live, 25 test mode) and per endpoint
(25 requests/s for each named operation such as `GET /v1/charges`). Requests wait here
until both budgets have room, counted over a sliding one-second window, so a run uses
the budget fully without tripping Stripe's limiter. A 429 means our view of the budget is
too generous (other clients share the account): the rate backs off and then recovers.

Stripe counts a request when it arrives, some time after it is sent, and that delay
varies: two requests sent 1.0 s apart can arrive 0.95 s apart, and the second is refused.
So a request holds its place in the window for one second after the latest moment Stripe
can have counted it: after its response, it holds it for one second plus how much slower
its response was than the fastest recent one; before, for one second plus the recent
spread of response times (`margin`); at most `MAX_MARGIN` more either way. With 100+-30 ms
of latency, 25 requests then go out per ~1.03 s instead of 1.0 s, and none is refused.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import re
import threading
import time
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable

WINDOW = 1.0  # seconds: Stripe's limits are per second.
MAX_MARGIN = 0.25  # seconds added to the window at most, however much latency varies.
# Response times the margin and the fastest response are taken from: several seconds'
# worth, since the latest few after a burst are its slowest ones.
SPREAD_SAMPLES = 500
# The part of the fastest response that may come after Stripe counted the request
# (serving the page, sending it back, a busy thread taking a while to read it).
SLACK = 0.02
# Seconds: a median response this slow means a sync mostly waits for Stripe (a page of
# 100 objects takes ~10 ms of CPU here; Stripe's responses take 200-500 ms).
SLOW_RESPONSE = 0.05
# Ids in paths (`/v1/invoices/in_123/lines`) name one endpoint, whatever the id. An id has
# a digit or a capital after its prefix; resource names (`balance_transactions`) have none.
_ID_SEGMENT = re.compile(r"/(?:[a-z]+_)+(?=[a-z]*[A-Z0-9])[A-Za-z0-9]{6,}(?=/|$)")


def endpoint_of(method: str, path: str) -> str:
    """`GET /v1/invoices/:id/lines`: the unit Stripe's per-endpoint limit counts."""
    return f"{method} {_ID_SEGMENT.sub('/:id', path.split('?', maxsplit=1)[0])}"


class Grant:
    """One request's place in the budget, taken at `at`."""

    __slots__ = ("_limiter", "also", "at", "took")

    def __init__(self, at: float, limiter: RateLimiter | None = None) -> None:
        self.at = at
        self.took: float | None = None  # seconds from `at` to the response, once back
        self._limiter = limiter
        #: The same request's place in another budget (the run's total), taken with it.
        self.also: Grant | None = None

    def responded(self) -> None:
        """The response (its headers) is back."""
        if self._limiter is not None:
            self._limiter.on_response(self)
        if self.also is not None:
            self.also.responded()

    def held_until(self, margin: float, fastest: float) -> float:
        """When the place is free: a second after Stripe can last have counted it."""
        if self.took is None:
            return self.at + WINDOW + margin
        # Judged against the fastest response now known, not when this one came back:
        # the first responses of a run do not know yet how fast a response can be.
        return self.at + WINDOW + min(MAX_MARGIN, max(0.0, self.took - fastest + SLACK))


class RateLimiter:
    """A two-level sliding-window limiter: global and per endpoint."""

    def __init__(
        self,
        global_rate: float,
        endpoint_rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.global_rate = global_rate
        self.endpoint_rate = endpoint_rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._global: collections.deque[Grant] = collections.deque()
        self._endpoints: dict[str, collections.deque[Grant]] = collections.defaultdict(
            collections.deque
        )
        # Multiplier on both rates, lowered on 429s and restored over time.
        self._factor = 1.0
        self._factor_at = 0.0
        self.throttled = 0
        # When a request last had to wait, globally and per endpoint; how many wait now.
        self._waited: dict[str | None, float] = {}
        self._queued: collections.Counter[str | None] = collections.Counter()
        self._durations: collections.deque[float] = collections.deque()  # oldest first
        self._ordered: list[float] = []  # the same, fastest first
        self.margin = 0.0
        self._typical = 0.0  # median response time

    def _limit(self, rate: float) -> int:
        return max(1, int(rate * self._factor))

    def _recover(self, now: float) -> None:
        # Additive recovery: back to the full rate about ten seconds after the last 429.
        if self._factor < 1.0:
            self._factor = min(1.0, self._factor + (now - self._factor_at) * 0.05)
            self._factor_at = now

    def _wait(self, window: collections.deque[Grant], limit: int, now: float) -> float:
        """Seconds until fewer than `limit` requests hold a place; 0 if they do now."""
        while window and window[0].at <= now - WINDOW - MAX_MARGIN:
            window.popleft()
        if len(window) < limit:
            return 0.0
        ordered = self._ordered
        # The fastest of n responses is on average 1/(n+1) of their spread slower than
        # the fastest possible one: few responses into a run, that gap is a few ms.
        fastest = ordered[0] - self.margin / len(ordered) if ordered else 0.0
        held = sorted(
            until for grant in window if (until := grant.held_until(self.margin, fastest)) > now
        )
        if len(held) < limit:
            return 0.0
        return held[len(held) - limit] - now

    def acquire(
        self,
        endpoint: str,
        *,
        also: RateLimiter | None = None,
        slot: threading.Semaphore | None = None,
        check: Callable[[], None] | None = None,
    ) -> Grant:
        """Block until one request to `endpoint` fits both budgets, then count it.

        Call `responded()` on the result when the response is back: the sooner the
        response, the sooner the place is free again.

        `also`: another limiter whose global budget the request must fit too (the cap on
        a run's total across accounts). Both places are taken at the same instant, once
        both have room: a place taken in one while waiting for the other would count the
        request earlier than it is sent, and let more through in a second than either
        allows. `slot`: a place among the requests in flight, taken once both budgets have
        room and kept by the caller until its response is read; it is never held while
        waiting for a budget, so a waiting thread keeps no other request from going out.
        `check`: called before each try (it raises to give up, e.g. when the run stops).
        """
        queued = False
        try:
            while True:
                if check is not None:
                    check()
                if slot is not None:
                    slot.acquire()
                granted = None
                with self._lock, (also._lock if also is not None else contextlib.nullcontext()):
                    now = self._clock()
                    wait = self._room(endpoint, now)
                    if also is not None:
                        wait = max(wait, also._room(None, now))
                    if wait <= 0:
                        granted = self._take(endpoint, now)
                        if also is not None:
                            granted.also = also._take(None, now)
                    elif not queued:
                        queued = True
                        self._queued[None] += 1
                        self._queued[endpoint] += 1
                if granted is not None:
                    return granted
                if slot is not None:
                    slot.release()
                self._sleep(wait)
        finally:
            if queued:
                with self._lock:
                    self._queued[None] -= 1
                    self._queued[endpoint] -= 1

    def _room(self, endpoint: str | None, now: float) -> float:
        """Seconds until a request to `endpoint` (None: any) fits; the caller holds the lock."""
        self._recover(now)
        wait = self._wait(self._global, self._limit(self.global_rate), now)
        if wait > 0:
            self._waited[None] = now
        if endpoint is not None:
            endpoint_wait = self._wait(
                self._endpoints[endpoint], self._limit(self.endpoint_rate), now
            )
            if endpoint_wait > 0:
                self._waited[endpoint] = now
            wait = max(wait, endpoint_wait)
        return wait

    def _take(self, endpoint: str | None, now: float) -> Grant:
        """Count one request at `now`; the caller holds the lock."""
        grant = Grant(now, self)
        self._global.append(grant)
        if endpoint is not None:
            self._endpoints[endpoint].append(grant)
        return grant

    def on_response(self, grant: Grant) -> None:
        """The response to the request that took `grant` is back."""
        with self._lock:
            # Timed from the grant, not from when the request went out: a thread that
            # sends a little after its grant makes Stripe count it later too. And to the
            # headers, not the end of the body: a big page can take a while to read.
            grant.took = self._clock() - grant.at
            ordered = self._ordered
            if len(self._durations) >= SPREAD_SAMPLES:
                del ordered[bisect.bisect_left(ordered, self._durations.popleft())]
            self._durations.append(grant.took)
            bisect.insort(ordered, grant.took)
            # The 5% slowest and fastest are left out: one response that waited for a
            # busy thread would otherwise slow every request for a while. The rest is
            # widened by 10% to stand for the whole range again.
            trim = len(ordered) // 20
            self.margin = min(MAX_MARGIN, (ordered[-1 - trim] - ordered[trim]) * 1.1)
            self._typical = ordered[len(ordered) // 2]

    @property
    def responses_slow(self) -> bool:
        """Whether responses take long enough that a sync mostly waits for them."""
        return self._typical >= SLOW_RESPONSE

    def saturated(self, endpoint: str | None, within: float = 0.1) -> bool:
        """Whether either budget of `endpoint` (None: the global one) is used up, or about to be.

        Used up: requests had to wait for it in the last `within` seconds (longer kept
        the last windows of a run from splitting well after the other streams had ended
        and left the budget free: ~10% of a run). About to be: the requests in flight or
        waiting for the budget already fill it (Little's law: a budget of r per second,
        with responses taking d seconds, keeps r x d requests in flight), which holds from
        a run's first responses, before anything had to wait. More `created` windows
        would then add partial pages, not speed.
        """
        with self._lock:
            now = self._clock()
            if any(now - self._waited.get(key, -WINDOW * 10) < within for key in (None, endpoint)):
                return True
            for key, window, rate in (
                (None, self._global, self.global_rate),
                (endpoint, self._endpoints.get(endpoint or ""), self.endpoint_rate),
            ):
                if window and self._typical:
                    in_flight = sum(1 for grant in window if grant.took is None)
                    if in_flight + self._queued[key] >= self._limit(rate) * self._typical:
                        return True
            return False

    def on_throttled(self) -> None:
        """Stripe answered 429: slow down (multiplicative decrease)."""
        with self._lock:
            self.throttled += 1
            self._factor = max(0.2, self._factor * 0.7)
            self._factor_at = self._clock()
