"""Faults from Stripe: retried within bounds, then one clear error; nothing lost or leaked.

Every test runs the real CLI against the emulator over HTTP, with a catalog of the core
streams. A run either ends with the warehouse equal to the emulator's objects, or with one
clear error line naming the request, after which a run from the last STATE makes the
warehouse equal again: never a silent gap. `no_secret_leaks` (conftest) checks every
output of every run for the key. Interruptions (SIGKILL, a revoked key) are in
`test_interruptions.py`.
"""

from __future__ import annotations

import json
import random
import re
import time
import typing as t

import pytest

from tap_stripe_connect.tap import TapStripeConnect
from tests.catalogs import tap_catalog
from tests.conftest import ROOT, TapRun, run_tap
from tests.emulator import Emulator
from tests.warehouse import Warehouse, assert_equal_to_stripe

CORE = ("charges", "customers", "invoices", "subscriptions")
ALL = (*CORE, "invoice_line_items", "subscription_items")
LISTS = tuple(f"/v1/{s}" for s in CORE)
# The emulator's only key: distinctive, so that any trace of it in output is found.
SECRET = "sk_test_faultsK3ep5ecret_Zq81w"


def core_catalog() -> str:
    """The tap's catalog with the core streams (and their children) selected."""
    return tap_catalog(SECRET, *ALL)


def config(emu: Emulator, **extra) -> dict:
    return {
        "api_key": SECRET,
        "api_url": emu.url,
        "max_retries": 8,
        "max_retry_seconds": 30,
        "request_timeout": 5,
        # The emulator has no rate limit unless a test sets one.
        "max_requests_per_second": 500,
        "max_requests_per_second_per_endpoint": 500,
        **extra,
    }


def run(emu: Emulator, tmp_path, state=None, **extra) -> TapRun:
    return run_tap(
        config=config(emu, **extra),
        state=state,
        catalog=json.loads(core_catalog()),
        tmp_path=tmp_path,
        timeout=120,
    )


def sync(emu: Emulator, tmp_path, state=None, **extra) -> TapRun:
    result = run(emu, tmp_path, state, **extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def mutate(emu: Emulator, rng: random.Random, *, updates=40, creates=20, deletes=6, cancels=4):
    """A round of changes to the core streams: updates, creates, deletes, cancellations."""
    ids = {s: [o["id"] for o in emu.objects(s)] for s in CORE}
    for i in range(updates):
        stream = CORE[i % 4]
        emu.update(stream, rng.choice(ids[stream]), {"metadata": {"round": str(rng.random())}})
    for i in range(creates):
        emu.create(CORE[i % 4])
    for _ in range(deletes):
        emu.delete("customers", rng.choice([o["id"] for o in emu.objects("customers")]))
    live = [
        o["id"]
        for o in emu.objects("subscriptions")
        if o["status"] in ("active", "trialing", "past_due", "unpaid")
    ]
    for sub_id in rng.sample(live, min(cancels, len(live))):
        emu.cancel_subscription(sub_id)


def emulator(objects: int = 150, seed: int = 31) -> Emulator:
    return Emulator(objects=objects, seed=seed, api_keys={SECRET: None})


def assert_one_clear_error(result: TapRun, *words: str) -> None:
    assert result.returncode != 0
    line = result.error_line
    assert line, result.stderr[-2000:]
    for word in words:
        assert word in line, line
    assert "Traceback" not in result.stderr
    assert SECRET[-6:] not in result.stderr


# -- transient faults are retried; the data is exact ------------------------------------------


def _random_5xx(emu: Emulator) -> None:
    emu.set_fail_rate(0.1)


def _each_read(count: int = 1, **fault) -> t.Callable[[Emulator], None]:
    """The first `count` reads of every list (and of the events) get the fault."""

    def inject(emu: Emulator) -> None:
        for path in (*LISTS, "/v1/events"):
            emu.inject(count=count, path_prefix=path, **fault)

    return inject


TRANSIENT = {
    "random_500_503": _random_5xx,
    "bursts_of_429": _each_read(count=2, status=429),
    "connection_resets": _each_read(status=200, reset_connection=True),
    "stalls_past_the_timeout": _each_read(status=200, stall_seconds=2),
    "truncated_200": _each_read(status=200, truncated=True),
    "non_json_200": _each_read(status=200, body="<html><body>502 Bad Gateway</body></html>"),
    "409_lock_timeout": _each_read(status=409),
}


@pytest.mark.parametrize("fault", TRANSIENT)
def test_transient_faults_are_retried_and_full_and_incremental_syncs_stay_exact(fault, tmp_path):
    with emulator() as emu:
        warehouse = Warehouse()
        TRANSIENT[fault](emu)
        first = sync(emu, tmp_path, request_timeout=1)
        faulty = [r for r in emu.requests if r.fault in ("injected", "random")]
        assert faulty, "the fault never happened"
        assert "Retrying stream" in first.stderr
        warehouse.apply(first)
        assert_equal_to_stripe(warehouse, emu, ALL)

        mutate(emu, random.Random(7))
        emu.clear_faults()
        emu.clear_requests()
        TRANSIENT[fault](emu)
        second = sync(emu, tmp_path, state=first.last_state, request_timeout=1)
        assert emu.request_count("/v1/events"), "the incremental sync read no events"
        if fault != "random_500_503":  # a handful of requests may all draw no failure
            assert [r for r in emu.requests if r.fault == "injected"]
        warehouse.apply(second)
        assert_equal_to_stripe(warehouse, emu, ALL)


# -- persistent faults end with one clear line, in bounded time -------------------------------


PERSISTENT = {
    # name: (inject keyword arguments, words the error line must hold)
    "503": ({"status": 503}, ["Stripe answered 503", "Request-Id req_"]),
    "429": ({"status": 429}, ["Stripe answered 429", "Request-Id req_"]),
    "409": ({"status": 409}, ["Stripe answered 409", "Request-Id req_"]),
    "reset": ({"status": 200, "reset_connection": True}, ["connection broke", "Request-Id req_"]),
    "stall": ({"status": 200, "stall_seconds": 3}, ["did not answer", "'request_timeout'"]),
    "not_json": ({"status": 200, "body": "<html>oops</html>"}, ["unreadable", "Request-Id req_"]),
}


@pytest.mark.parametrize("fault", PERSISTENT)
def test_a_fault_that_persists_ends_with_a_clear_error_and_a_resumable_state(fault, tmp_path):
    inject, words = PERSISTENT[fault]
    with emulator(objects=60) as emu:
        emu.inject(count=10_000, path_prefix="/v1/invoices", **inject)
        started = time.monotonic()
        failed = run(emu, tmp_path, max_retries=2, max_retry_seconds=1.5, request_timeout=1)
        elapsed = time.monotonic() - started
        assert_one_clear_error(failed, "stream 'invoices'", "GET /v1/invoices", *words)
        # 1 try + at most 2 retries, within max_retry_seconds (+ one request timeout).
        tries = re.search(r"after (\d+) tries in ([\d.]+)s", failed.error_line)
        assert tries, failed.error_line
        assert 2 <= int(tries[1]) <= 3
        assert float(tries[2]) <= 1.5 + 1 + 0.5
        assert elapsed < 1.5 + 1 + 10, f"the run took {elapsed:.0f}s"
        # The other streams completed and said so in STATE; invoices has no bookmark.
        bookmarks = failed.last_state["bookmarks"]
        assert bookmarks["charges"]["replication_key_value"]
        assert not bookmarks.get("invoices", {}).get("replication_key_value")

        emu.clear_faults()
        warehouse = Warehouse()
        warehouse.apply(failed)
        resumed = sync(emu, tmp_path, state=failed.last_state)
        warehouse.apply(resumed)
        assert_equal_to_stripe(warehouse, emu, ALL)


def test_should_retry_false_is_not_retried(tmp_path):
    with emulator(objects=60) as emu:
        emu.inject(503, 1, "/v1/customers", should_retry=False)
        failed = run(emu, tmp_path)
        assert_one_clear_error(failed, "stream 'customers'", "GET /v1/customers", "Request-Id")
        assert emu.request_count("/v1/customers") == 1
        assert "Retrying stream 'customers'" not in failed.stderr

        warehouse = Warehouse()
        warehouse.apply(failed)
        warehouse.apply(sync(emu, tmp_path, state=failed.last_state))
        assert_equal_to_stripe(warehouse, emu, ALL)


# -- TLS -------------------------------------------------------------------------------------------


def test_tls_verification_is_never_disabled():
    package = ROOT / "tap_stripe_connect"
    for path in package.rglob("*.py"):
        text = path.read_text()
        for needle in ("verify=False", "verify = False", "CERT_NONE", "check_hostname = False"):
            assert needle not in text, f"{path.name} disables TLS verification ({needle})"
    tap = TapStripeConnect(config={"api_key": SECRET}, validate_config=False, setup_mapper=False)
    assert tap.client.session.verify is True
