"""The rate limiter: never more than the set rates in any one second, globally or per
endpoint, as Stripe counts them; slower after a 429, then back (issue 7)."""

from __future__ import annotations

import bisect
import collections
import heapq
import json
import random
import threading
import time

import pytest

from tap_stripe_connect.api.limiter import (
    MAX_MARGIN,
    SLACK,
    WINDOW,
    Grant,
    RateLimiter,
    endpoint_of,
)
from tests.conftest import emulator_config, run_tap
from tests.decisions import entries as read_decisions
from tests.emulator import Emulator

CORE = ("charges", "customers", "invoices", "subscriptions")


def most_in_one_second(times: list[float]) -> int:
    """The most of `times` in any half-open window (t - 1 s, t], as Stripe counts."""
    times = sorted(times)
    return max(
        (i + 1 - bisect.bisect_right(times, at - WINDOW) for i, at in enumerate(times)),
        default=0,
    )


class Simulation:
    """One thread driving a limiter on a fake clock: `sleep` moves time forward.

    Each granted request gets a latency; its response is handed back (`on_response`)
    when the fake clock passes it. Stripe counts the request when it arrives: at
    `grant + latency` (the emulator answers right after counting).
    """

    def __init__(self, latency: tuple[float, float], seed: int = 7) -> None:
        self.now = 1000.0
        self.rng = random.Random(seed)
        self.latency = latency
        self.pending: list[tuple[float, int, Grant]] = []
        self.limiter: RateLimiter | None = None
        self.grants: list[tuple[str, Grant, float]] = []  # endpoint, grant, counted at

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.advance(self.now + seconds)

    def advance(self, until: float) -> None:
        while self.pending and self.pending[0][0] <= until:
            at, _, grant = heapq.heappop(self.pending)
            self.now = max(self.now, at)
            assert self.limiter is not None
            self.limiter.on_response(grant)
        self.now = max(self.now, until)

    def request(self, endpoint: str) -> None:
        assert self.limiter is not None
        grant = self.limiter.acquire(endpoint)
        assert grant.at == self.now
        took = self.rng.uniform(*self.latency)
        heapq.heappush(self.pending, (self.now + took, len(self.grants), grant))
        self.grants.append((endpoint, grant, self.now + took))

    def counted(self, endpoint: str | None = None) -> list[float]:
        return [c for e, _, c in self.grants if endpoint in (None, e)]

    def granted(self, endpoint: str | None = None) -> list[float]:
        return [g.at for e, g, _ in self.grants if endpoint in (None, e)]


def simulate(
    global_rate: float,
    endpoint_rate: float,
    latency: tuple[float, float],
    requests: int,
    endpoints: tuple[str, ...] = CORE,
) -> Simulation:
    """`requests` requests, to each endpoint in turn, each sent as soon as allowed."""
    sim = Simulation(latency)
    sim.limiter = RateLimiter(global_rate, endpoint_rate, clock=sim.clock, sleep=sim.sleep)
    for i in range(requests):
        sim.request(f"GET /v1/{endpoints[i % len(endpoints)]}")
    return sim


@pytest.mark.parametrize(
    ("global_rate", "endpoint_rate", "latency"),
    [
        (25, 25, (0.070, 0.130)),  # test mode, scenario B of the benchmark
        (90, 25, (0.200, 0.300)),  # live mode, scenario C
        (40, 15, (0.001, 0.002)),  # a fast local API
        (25, 10, (0.050, 0.250)),  # latency that varies a lot (up to MAX_MARGIN)
    ],
)
def test_never_more_than_the_rates_in_any_second(global_rate, endpoint_rate, latency):
    sim = simulate(global_rate, endpoint_rate, latency, requests=1500)
    # Where the limiter counts (when requests are let through) ...
    assert most_in_one_second(sim.granted()) <= global_rate
    # ... and where Stripe counts (on arrival, after a latency that varies): no 429.
    assert most_in_one_second(sim.counted()) <= global_rate
    for endpoint in {e for e, _, _ in sim.grants}:
        assert most_in_one_second(sim.granted(endpoint)) <= endpoint_rate
        assert most_in_one_second(sim.counted(endpoint)) <= endpoint_rate


@pytest.mark.parametrize(
    ("global_rate", "endpoint_rate", "latency", "at_least"),
    [
        (25, 25, (0.070, 0.130), 0.94),
        (90, 25, (0.200, 0.300), 0.90),
        (40, 15, (0.001, 0.002), 0.98),
    ],
)
def test_uses_the_budget_fully(global_rate, endpoint_rate, latency, at_least):
    sim = simulate(global_rate, endpoint_rate, latency, requests=1500)
    budget = min(global_rate, endpoint_rate * len(CORE))
    times = sim.granted()
    rate = (len(times) - 1) / (times[-1] - times[0])
    # The margin for latency that varies costs a few percent, no more.
    assert rate >= at_least * budget, f"{rate:.1f} requests/s of {budget}"


def test_margin_follows_how_much_latency_varies():
    steady = simulate(25, 25, (0.100, 0.101), requests=300).limiter
    varying = simulate(25, 25, (0.050, 0.150), requests=300).limiter
    assert steady is not None
    assert varying is not None
    assert steady.margin < 0.01
    assert 0.08 < varying.margin <= MAX_MARGIN


def test_one_endpoint_cannot_take_another_endpoints_budget():
    sim = Simulation((0.01, 0.02))
    sim.limiter = RateLimiter(100, 10, clock=sim.clock, sleep=sim.sleep)
    for _ in range(200):
        sim.request("GET /v1/charges")
    started = sim.now
    for _ in range(10):  # the charges budget is spent: customers still go at once
        sim.request("GET /v1/customers")
    assert sim.now - started < 0.01


def test_throttled_slows_down_then_recovers():
    sim = Simulation((0.01, 0.01))
    limiter = sim.limiter = RateLimiter(20, 20, clock=sim.clock, sleep=sim.sleep)
    for _ in range(100):
        sim.request("GET /v1/charges")
    full = most_in_one_second(sim.granted())
    assert full == 20
    limiter.on_throttled()
    throttled_at = sim.now
    assert limiter.throttled == 1
    sim.grants.clear()
    for _ in range(30):
        sim.request("GET /v1/charges")
    # 70% of 20 in the second after the 429 (places taken before it count too) ...
    assert len([at for at in sim.granted() if at <= throttled_at + WINDOW]) <= 14
    # ... and slower than the full rate for a while.
    assert sim.now - throttled_at > 30 / 20
    sim.advance(sim.now + 15)  # quiet for a while: back to the full rate
    sim.grants.clear()
    for _ in range(100):
        sim.request("GET /v1/charges")
    assert most_in_one_second(sim.granted()) == 20


def test_repeated_throttling_never_stops_requests():
    sim = Simulation((0.01, 0.01))
    limiter = sim.limiter = RateLimiter(25, 25, clock=sim.clock, sleep=sim.sleep)
    for _ in range(50):
        limiter.on_throttled()
    for _ in range(20):
        sim.request("GET /v1/charges")
    assert most_in_one_second(sim.granted()) >= 1
    assert sim.now - 1000.0 < 20  # slowed to a floor, not stopped


def test_saturated_when_requests_in_flight_fill_the_budget():
    sim = Simulation((0.10, 0.10))
    limiter = sim.limiter = RateLimiter(25, 25, clock=sim.clock, sleep=sim.sleep)
    assert not limiter.saturated("GET /v1/charges")
    sim.request("GET /v1/charges")
    sim.advance(sim.now + 0.2)  # one response back: it took 0.1 s
    assert not limiter.saturated("GET /v1/charges")
    for _ in range(3):  # 3 in flight at 0.1 s each: 30/s, more than the 25 allowed
        sim.request("GET /v1/charges")
    assert limiter.saturated("GET /v1/charges")
    assert limiter.saturated("GET /v1/customers")  # the global budget is full too


def test_requests_waiting_for_the_budget_count_as_demand():
    """A request asleep in `acquire` is neither in flight nor a fresh wait: still demand."""
    now = [0.0]
    asleep, wake = threading.Event(), threading.Event()

    def sleep(seconds: float) -> None:  # the waiting request's sleep, released by the test
        asleep.set()
        wake.wait(timeout=10)
        now[0] += seconds

    limiter = RateLimiter(2, 2, clock=lambda: now[0], sleep=sleep)
    first = limiter.acquire("GET /v1/charges")
    now[0] = 0.25
    limiter.on_response(first)  # responses take ~0.25 s: the budget keeps 0.5 in flight
    limiter.on_response(limiter.acquire("GET /v1/charges"))
    now[0] = 0.40
    assert not limiter.saturated("GET /v1/charges")  # nothing in flight, nothing waits
    waiting = threading.Thread(
        target=lambda: limiter.on_response(limiter.acquire("GET /v1/charges"))
    )
    waiting.start()  # the budget's 2 places are held: it sleeps
    assert asleep.wait(timeout=10)
    now[0] = 0.55  # longer than `saturated` remembers a wait
    assert waiting.is_alive()
    assert limiter.saturated("GET /v1/charges")
    assert limiter.saturated("GET /v1/customers")  # the global budget: the same request
    wake.set()
    waiting.join(timeout=10)
    assert not waiting.is_alive()
    assert not limiter.saturated("GET /v1/customers", within=0)  # served: demand gone


def test_many_threads_never_exceed_the_rates():
    """Real threads and the real clock: counted where the limiter lets them through."""
    limiter = RateLimiter(40, 15)
    granted: dict[str, list[float]] = collections.defaultdict(list)
    lock = threading.Lock()

    def work(endpoint: str) -> None:
        for _ in range(4):  # a number of requests, not a time: 64 in all
            grant = limiter.acquire(endpoint)
            with lock:
                granted[endpoint].append(grant.at)
            time.sleep(0.002)
            limiter.on_response(grant)

    threads = [threading.Thread(target=work, args=(f"GET /v1/{CORE[i % 4]}",)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [at for times in granted.values() for at in times]
    assert len(every) == 64
    assert most_in_one_second(every) <= 40
    assert max(most_in_one_second(times) for times in granted.values()) <= 15


def test_endpoint_of_maps_ids_to_a_placeholder():
    assert endpoint_of("GET", "/v1/charges") == "GET /v1/charges"
    assert endpoint_of("GET", "/v1/charges?limit=100&created[gte]=5") == "GET /v1/charges"
    assert endpoint_of("GET", "/v1/customers/cus_NffrFeUfNV2Hib") == "GET /v1/customers/:id"
    assert (
        endpoint_of("GET", "/v1/invoices/in_1BUcXYuuiKgFhuYc/lines") == "GET /v1/invoices/:id/lines"
    )
    assert endpoint_of("GET", "/v1/invoices/in_1MtHbELkdIwHu7ixl4OzzPMv/lines") == endpoint_of(
        "GET", "/v1/invoices/in_1BUcXYuuiKgFhuYc/lines"
    )
    assert endpoint_of("GET", "/v1/accounts/acct_1032D82eZvKYlo2C") == "GET /v1/accounts/:id"
    assert endpoint_of("GET", "/v1/test_helpers/test_clocks/clock_1Mr3ZLDjnhvxOOWE") == (
        "GET /v1/test_helpers/test_clocks/:id"
    )
    # Resource names with underscores are not ids: each is its own endpoint.
    for name in (
        "subscription_items",
        "balance_transactions",
        "payment_intents",
        "subscription_schedules",
        "invoice_items",
    ):
        assert endpoint_of("GET", f"/v1/{name}") == f"GET /v1/{name}"
    assert (
        endpoint_of("GET", "/v1/customers/cus_NffrFeUfNV2Hib/balance_transactions")
        == "GET /v1/customers/:id/balance_transactions"
    )


def test_the_tap_keeps_to_the_emulators_limits(tmp_path):
    """A real sync under the emulator's limits: every grant of the tap's budgets (on the
    limiter's own clock, `tests.decisions`) within them, every object read once."""
    decisions = tmp_path / "decisions.jsonl"
    with Emulator(
        objects=1200, seed=3, latency=(20, 10), rate_limit=20, endpoint_rate_limit=8
    ) as emu:
        catalog = core_catalog(emu, tmp_path)
        config = emulator_config(
            emu, max_requests_per_second=20, max_requests_per_second_per_endpoint=8
        )
        run = run_tap(
            config=config,
            catalog=catalog,
            tmp_path=tmp_path,
            module="tests.decisions",
            env={"TAP_TEST_DECISIONS": str(decisions)},
        )
        assert run.returncode == 0, run.stderr[-2000:]
    for name in CORE:
        assert len({r["id"] for r in run.records(name)}) == len(run.records(name)) == 1200
    grants = [entry for entry in read_decisions(decisions) if "grant" in entry]
    assert most_in_one_second([g["at"] for g in grants]) <= 20
    by_endpoint: dict[str, list[float]] = collections.defaultdict(list)
    for grant in grants:
        by_endpoint[grant["endpoint"]].append(grant["at"])
    assert set(by_endpoint) >= {f"GET /v1/{name}" for name in CORE}
    assert max(most_in_one_second(times) for times in by_endpoint.values()) <= 8


def core_catalog(emu: Emulator, tmp_path) -> dict:
    """The discovered catalog with only the four core streams selected."""
    found = run_tap("--discover", config=emulator_config(emu), tmp_path=tmp_path)
    catalog = json.loads(found.stdout)
    for entry in catalog["streams"]:
        for metadata in entry["metadata"]:
            if metadata["breadcrumb"] == []:
                metadata["metadata"]["selected"] = entry["tap_stream_id"] in CORE
    return catalog


def test_a_place_is_held_a_second_past_the_latest_moment_it_can_have_been_counted():
    now = [0.0]
    limiter = RateLimiter(2, 2, clock=lambda: now[0], sleep=lambda s: None)
    fast = limiter.acquire("GET /v1/charges")
    slow = limiter.acquire("GET /v1/charges")
    now[0] = 0.05
    limiter.on_response(fast)
    now[0] = 0.15
    limiter.on_response(slow)
    # `slow` may have arrived up to 0.1 s later than `fast`: its place is held that much
    # longer (plus a little slack), `fast`'s for exactly a second and the slack.
    assert fast.held_until(limiter.margin, 0.05) == pytest.approx(1 + SLACK)
    assert slow.held_until(limiter.margin, 0.05) == pytest.approx(1.1 + SLACK)
    # In flight: held for a second plus the spread of recent response times.
    pending = Grant(2.0)
    assert pending.held_until(0.07, 0.05) == pytest.approx(3.07)
