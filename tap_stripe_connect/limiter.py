"""Client-side rate limiting for one Stripe account, shared by every worker.

Stripe limits reads per account (100 requests/s live, 25 test mode) and per endpoint
(25 requests/s for each named operation such as `GET /v1/charges`). Requests wait here
until both budgets have room, counted over a sliding one-second window, so a run uses
the budget fully without tripping Stripe's limiter. A 429 means our view of the budget is
too generous (other clients share the account): the rate backs off and then recovers.
"""

from __future__ import annotations

import collections
import re
import threading
import time
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Callable

WINDOW = 1.0  # seconds: Stripe's limits are per second.
# Ids in paths (`/v1/invoices/in_123/lines`) name one endpoint, whatever the id.
_ID_SEGMENT = re.compile(r"/(?:[a-z]+_)+[A-Za-z0-9]{6,}(?=/|$)")


def endpoint_of(method: str, path: str) -> str:
    """`GET /v1/invoices/:id/lines`: the unit Stripe's per-endpoint limit counts."""
    return f"{method} {_ID_SEGMENT.sub('/:id', path.split('?', maxsplit=1)[0])}"


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
        self._global: collections.deque[float] = collections.deque()
        self._endpoints: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        # Multiplier on both rates, lowered on 429s and restored over time.
        self._factor = 1.0
        self._factor_at = 0.0
        self.throttled = 0
        # When a request last had to wait, globally and per endpoint.
        self._waited: dict[str | None, float] = {}

    def _limit(self, rate: float) -> int:
        return max(1, int(rate * self._factor))

    def _recover(self, now: float) -> None:
        # Additive recovery: back to the full rate about ten seconds after the last 429.
        if self._factor < 1.0:
            self._factor = min(1.0, self._factor + (now - self._factor_at) * 0.05)
            self._factor_at = now

    @staticmethod
    def _wait(window: collections.deque[float], limit: int, now: float) -> float:
        while window and window[0] <= now - WINDOW:
            window.popleft()
        if len(window) < limit:
            return 0.0
        return window[-limit] + WINDOW - now

    def acquire(self, endpoint: str) -> None:
        """Block until one request to `endpoint` fits both budgets, then count it."""
        while True:
            with self._lock:
                now = self._clock()
                self._recover(now)
                per_endpoint = self._endpoints[endpoint]
                global_wait = self._wait(self._global, self._limit(self.global_rate), now)
                endpoint_wait = self._wait(per_endpoint, self._limit(self.endpoint_rate), now)
                if global_wait > 0:
                    self._waited[None] = now
                if endpoint_wait > 0:
                    self._waited[endpoint] = now
                wait = max(global_wait, endpoint_wait)
                if wait <= 0:
                    self._global.append(now)
                    per_endpoint.append(now)
                    return
            self._sleep(wait)

    def saturated(self, endpoint: str, within: float = 0.5) -> bool:
        """Whether requests to `endpoint` recently had to wait for either budget."""
        with self._lock:
            now = self._clock()
            return any(
                now - self._waited.get(key, -WINDOW * 10) < within for key in (None, endpoint)
            )

    def on_throttled(self) -> None:
        """Stripe answered 429: slow down (multiplicative decrease)."""
        with self._lock:
            self.throttled += 1
            self._factor = max(0.2, self._factor * 0.7)
            self._factor_at = self._clock()
