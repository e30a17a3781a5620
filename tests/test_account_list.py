"""A platform's list of connected accounts at scale (`account_ids: ["*"]`): paged once per
run, new accounts synced from the start without re-reading the others, and accounts the
platform lost named once."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import requests

from tests.catalogs import select_streams
from tests.conftest import ROOT, run_tap
from tests.emulator.connect import PLATFORM_KEY, ConnectPlatform
from tests.platform_state import account_bookmarks

MANY = 1050  # more than ten pages of `GET /v1/accounts`


def settings_for(platform: ConnectPlatform, **extra) -> dict:
    return {
        "api_key": platform.platform_key,
        "api_url": platform.url,
        "account_ids": ["*"],
        "max_retry_seconds": 10,
        "progress_interval_seconds": 0,
        **extra,
    }


def catalog_of(platform: ConnectPlatform, tmp_path, streams: tuple[str, ...]) -> dict:
    discovered = run_tap("--discover", config=settings_for(platform), tmp_path=tmp_path)
    assert discovered.returncode == 0, discovered.stderr[-2000:]
    return select_streams(json.loads(discovered.stdout), streams)


def partitioned(state: dict, stream: str) -> dict[str, int]:
    return account_bookmarks(state, stream)


def test_thousands_of_accounts_then_new_ones_synced_without_rereading_the_old(tmp_path):
    with ConnectPlatform(accounts=MANY, objects=0) as platform:
        catalog = catalog_of(platform, tmp_path, ("customers",))
        first = run_tap(config=settings_for(platform), catalog=catalog, tmp_path=tmp_path)
        assert first.returncode == 0, first.stderr[-2000:]
        # The list is paged (100 a page) once per run, and every account is read.
        log = platform.requests_by_account()
        assert log[None].count(("GET", "/v1/accounts")) == MANY // 100 + 1
        old = set(platform.account_ids)
        assert {a for a in log if a} == old
        for account in old:
            assert log[account] == [("GET", "/v1/customers")], account
        state = first.last_state
        assert state is not None
        assert set(partitioned(state, "customers")) == old

        # New accounts connect; the next run lists them in full, the others incrementally.
        new = platform.add_accounts(30, objects=4)
        since = len(platform.api_requests)
        second = run_tap(
            config=settings_for(platform), catalog=catalog, state=state, tmp_path=tmp_path
        )
        assert second.returncode == 0, second.stderr[-2000:]
        log = platform.requests_by_account(since)
        assert log[None].count(("GET", "/v1/accounts")) == (MANY + 30) // 100 + 1
        for account in old:
            assert log[account] == [("GET", "/v1/events")], account
        for account in new:
            assert log[account] == [("GET", "/v1/customers")], account
        emitted = {(r["account_id"], r["id"]) for r in second.records("customers")}
        expected = {
            (account, customer["id"])
            for account in new
            for customer in platform.accounts[account].objects("customers")
        }
        assert emitted == expected
        assert expected
        after = second.last_state
        assert after is not None
        assert set(partitioned(after, "customers")) == old | set(new)


STREAMS = ("charges", "customers", "invoices", "subscriptions")


@pytest.fixture
def platform():
    with ConnectPlatform(accounts=4, objects=6, seed=400) as connect_platform:
        yield connect_platform


def test_an_account_that_left_the_platform_is_named_once_and_its_state_kept(platform, tmp_path):
    catalog = catalog_of(platform, tmp_path, STREAMS)
    first = run_tap(config=settings_for(platform), catalog=catalog, tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    state = first.last_state
    assert state is not None
    gone = platform.account_ids[1]
    platform.disconnect(gone)
    since = len(platform.api_requests)
    second = run_tap(config=settings_for(platform), catalog=catalog, state=state, tmp_path=tmp_path)
    # Not an error: it is no longer one of the platform's accounts ("*").
    assert second.returncode == 0, second.stderr[-2000:]
    named = [line for line in second.stderr.splitlines() if gone in line]
    assert len(named) == 1, named
    assert "no longer connected" in named[0]
    assert gone not in platform.requests_by_account(since)
    after = second.last_state
    assert after is not None
    for stream in STREAMS:
        assert partitioned(after, stream)[gone] == partitioned(state, stream)[gone]
        assert gone not in {r["account_id"] for r in second.records(stream)}


@pytest.mark.parametrize("status", [403, 401])
def test_an_account_the_platform_may_not_read_is_named_once_and_skipped(
    platform, tmp_path, status
):
    lost = platform.account_ids[2]
    if status == 403:
        platform.deauthorize(lost)  # Stripe's 403 `account_invalid`
    else:
        platform.accounts[lost].inject(
            401,
            count=1000,
            should_retry=None,
            body={
                "error": {
                    "type": "invalid_request_error",
                    "message": f"The provided key 'sk_test_****form' does not have access "
                    f"to account '{lost}' (or that account does not exist). Application "
                    "access may have been revoked.",
                }
            },
        )
    catalog = catalog_of(platform, tmp_path, STREAMS)
    asked = [*platform.account_ids[:2], lost]
    # One unit at a time: after the account's first refusal, no request is made for it.
    config = settings_for(platform, account_ids=asked, max_workers=1)
    run = run_tap(config=config, catalog=catalog, tmp_path=tmp_path)
    # Named explicitly and not synced: the run fails, naming it, once.
    assert run.returncode == 1
    assert "1 account(s) failed" in run.error_line
    assert lost in run.error_line
    assert f"may no longer read connected account {lost}" in run.error_line
    # (The summary's count of reads per account names it too: its one refused read.)
    logged = [ln for ln in run.stderr.splitlines()
              if lost in ln and "error:" not in ln and "Reads:" not in ln]
    assert len(logged) == 1, logged
    assert len(platform.requests_by_account()[lost]) == 1
    # The others completed.
    for stream in STREAMS:
        synced = {r["account_id"] for r in run.records(stream)}
        assert synced == set(asked[:2]), stream


def test_the_command_line_emulator_connects_more_accounts_while_it_runs():
    argv = [sys.executable, "-m", "tests.emulator", "--connect", "--port", "0",
            "--accounts", "3", "--objects", "0"]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = re.search(r"listening on (\S+)", proc.stdout.readline())
        assert url, "the emulator did not start"
        base = url.group(1)
        added = requests.post(f"{base}/_emulator/accounts?count=2", timeout=10).json()["added"]
        headers = {"Authorization": f"Bearer {PLATFORM_KEY}"}
        listed, after = [], None
        while True:
            params = {"limit": 2, **({"starting_after": after} if after else {})}
            page = requests.get(f"{base}/v1/accounts", params=params, headers=headers, timeout=10)
            body = page.json()
            listed += [a["id"] for a in body["data"]]
            if not body["has_more"]:
                break
            after = listed[-1]
        assert len(listed) == len(set(listed)) == 5
        assert listed[-2:] == added
        charges = requests.get(
            f"{base}/v1/charges", headers={**headers, "Stripe-Account": added[0]}, timeout=10
        )
        assert charges.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
