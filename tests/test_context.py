"""`Stripe-Context` and organization keys, and `account_list: v2` (Accounts v2), through the
CLI against the emulated platform (tests/emulator/context.py)."""

from __future__ import annotations

import json

import pytest
import requests

from tests.catalogs import select_streams
from tests.conftest import run_tap
from tests.emulator.connect import ConnectPlatform
from tests.emulator.context import ORGANIZATION_KEY, PLATFORM_ID
from tests.platform_state import account_bookmarks

STREAMS = ("customers", "invoices")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("catalog")
    discovered = run_tap("--discover", config={"api_key": "sk_test_x"}, tmp_path=tmp)
    assert discovered.returncode == 0, discovered.stderr[-2000:]
    return select_streams(json.loads(discovered.stdout), STREAMS)


@pytest.fixture
def platform():
    with ConnectPlatform(accounts=3, objects=4, seed=700) as connect_platform:
        yield connect_platform


def settings(platform: ConnectPlatform, **extra) -> dict:
    return {
        "api_url": platform.url,
        "max_retry_seconds": 5,
        "progress_interval_seconds": 0,
        **extra,
    }


def expected(platform: ConnectPlatform, accounts, stream: str) -> set[tuple[str, str]]:
    """(account, id) of every object of `stream` the emulator holds for `accounts`."""
    return {
        (account, obj["id"])
        for account in accounts
        for obj in platform.accounts[account].objects(stream)
    }


def emitted(run, stream: str) -> set[tuple[str, str]]:
    return {(r["account_id"], r["id"]) for r in run.records(stream)}


def test_an_organization_key_reads_every_connected_account_through_stripe_context(
    platform, catalog, tmp_path
):
    config = settings(
        platform, api_key=ORGANIZATION_KEY, account_id=PLATFORM_ID, account_ids=["*"]
    )
    run = run_tap(config=config, catalog=catalog, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    # `account_header: auto` chose Stripe-Context: no request without it, none with
    # Stripe-Account (the emulator refuses those as Stripe does, and the run would fail).
    sent = platform.account_headers
    assert sent
    assert all(context and account is None for account, context in sent), sent
    contexts = {context for _, context in sent}
    assert contexts == {PLATFORM_ID} | {f"{PLATFORM_ID}/{a}" for a in platform.account_ids}
    # Records carry the addressed account (the path's last element), and every object.
    for stream in STREAMS:
        assert emitted(run, stream) == expected(platform, platform.account_ids, stream)
        assert expected(platform, platform.account_ids, stream)
    # Partitions are keyed by the entries of `account_ids` (relative to `account_id`),
    # as under Stripe-Account: switching the header keeps the state.
    state = run.last_state
    assert state is not None
    keyed = set(account_bookmarks(state, "customers"))
    assert keyed == set(platform.account_ids)


def test_context_paths_in_account_ids_address_their_last_account(platform, catalog, tmp_path):
    first, second = platform.account_ids[:2]
    paths = [f"{PLATFORM_ID}/{first}", f"{PLATFORM_ID}/{second}"]
    config = settings(platform, api_key=ORGANIZATION_KEY, account_ids=paths)
    run = run_tap(config=config, catalog=catalog, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert {context for _, context in platform.account_headers} == set(paths)
    assert emitted(run, "customers") == expected(platform, [first, second], "customers")


def test_a_platform_key_may_send_stripe_context_instead_of_stripe_account(
    platform, catalog, tmp_path
):
    account = platform.account_ids[2]
    config = settings(
        platform,
        api_key=platform.platform_key,
        account_header="Stripe-Context",
        account_id=account,
    )
    run = run_tap(config=config, catalog=catalog, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert set(platform.account_headers) == {(None, account)}
    assert emitted(run, "invoices") == expected(platform, [account], "invoices")


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"account_header": "Stripe-Account", "account_id": PLATFORM_ID}, "'account_header'"),
        ({"account_ids": ["*"]}, "'account_id'"),
        ({}, "'account_id'"),
    ],
)
def test_an_organization_key_without_a_context_is_one_clear_line(
    platform, tmp_path, extra, named
):
    run = run_tap(config=settings(platform, api_key=ORGANIZATION_KEY, **extra), tmp_path=tmp_path)
    assert run.returncode == 1
    assert named in run.error_line, run.stderr[-2000:]
    assert "sk_org_" in run.error_line
    assert ORGANIZATION_KEY not in run.stderr
    assert not platform.api_requests


def test_stripe_account_cannot_carry_a_context_path(platform, tmp_path):
    config = settings(
        platform, api_key=platform.platform_key, account_ids=[f"{PLATFORM_ID}/acct_x"]
    )
    run = run_tap(config=config, tmp_path=tmp_path)
    assert run.returncode == 1
    assert "setting 'account_header' to Stripe-Context" in run.error_line


def test_the_emulator_refuses_an_organization_key_as_stripe_does(platform):
    def get(headers: dict) -> requests.Response:
        return requests.get(
            f"{platform.url}/v1/customers",
            headers={"Authorization": f"Bearer {ORGANIZATION_KEY}", **headers},
            timeout=10,
        )

    missing_context = get({"Stripe-Version": "2024-06-20"})
    assert missing_context.status_code == 400
    assert "Stripe-Context header" in missing_context.json()["error"]["message"]
    account = platform.account_ids[0]
    missing_version = get({"Stripe-Context": f"{PLATFORM_ID}/{account}"})
    assert missing_version.status_code == 400
    assert "Stripe-Version" in missing_version.json()["error"]["message"]
    both = get({"Stripe-Context": f"{PLATFORM_ID}/{account}", "Stripe-Version": "2024-06-20"})
    assert both.status_code == 200


# -- Accounts v2 -------------------------------------------------------------------------


def test_account_list_v2_lists_accounts_created_through_accounts_v2(catalog, tmp_path):
    # More than a page of `GET /v2/core/accounts` (the tap asks 100 a page).
    with ConnectPlatform(accounts=2, objects=2, seed=720) as platform:
        merchants = platform.add_accounts(99, objects=1, v2=("merchant", "customer"))
        recipients = platform.add_accounts(2, objects=1, v2=("recipient",))
        customers = platform.add_accounts(3, objects=1, v2=("customer",))
        synced = [*platform.account_ids[:2], *merchants, *recipients]

        # The v1 list does not hold the accounts created through Accounts v2.
        v1 = run_tap(
            config=settings(platform, api_key=platform.platform_key, account_ids=["*"]),
            catalog=select_streams(catalog, ("customers",)),
            tmp_path=tmp_path,
        )
        assert v1.returncode == 0, v1.stderr[-2000:]
        assert {a for a, _ in emitted(v1, "customers")} == set(platform.account_ids[:2])

        since = len(platform.api_requests)
        run = run_tap(
            config=settings(
                platform, api_key=platform.platform_key, account_ids=["*"], account_list="v2"
            ),
            catalog=select_streams(catalog, ("customers",)),
            tmp_path=tmp_path,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        log = platform.requests_by_account(since)
        # Two pages, the second one from the first's next_page_url; no v1 list.
        assert log[None].count(("GET", "/v2/core/accounts")) == 2
        assert ("GET", "/v1/accounts") not in log[None]
        assert emitted(run, "customers") == expected(platform, synced, "customers")
        # Customer-only accounts have no data of their own: no request is made for them.
        assert not set(customers) & set(log)
        assert "3 account(s) with only the customer configuration" in run.stderr


def test_billing_objects_keep_the_account_that_is_their_customer(tmp_path):
    """API 2025-12-15 and later: an Account acting as customer is `customer_account`,
    declared in the schemas (targets keep it) and carried by the records."""
    streams = ("subscriptions", "invoices")
    with ConnectPlatform(accounts=1, objects=6, seed=730) as platform:
        emulator = platform.accounts[platform.account_ids[0]]
        payer = "acct_1PaysAsCustomer0"
        changed = {}
        for stream in streams:
            for obj in emulator.objects(stream)[:2]:
                emulator.update(stream, obj["id"], {"customer": None, "customer_account": payer})
                changed[(stream, obj["id"])] = payer
        assert len(changed) == 4
        config = settings(
            platform,
            api_key=platform.platform_key,
            account_id=emulator.account_id,
            api_version="2026-10-28.endive",
        )
        discovered = run_tap("--discover", config=config, tmp_path=tmp_path)
        catalog = select_streams(json.loads(discovered.stdout), streams)
        run = run_tap(config=config, catalog=catalog, tmp_path=tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
        assert "customer_account" not in run.stderr  # not named as an undeclared field
        for stream in streams:
            assert "customer_account" in run.schemas()[stream]["properties"]
            records = run.records(stream)
            assert len(records) == len(emulator.objects(stream))
            for record in records:
                assert record.get("customer_account") == changed.get((stream, record["id"]))
                if (stream, record["id"]) in changed:
                    assert record["customer"] is None


@pytest.mark.parametrize(
    ("following", "message"),
    [
        ("https://elsewhere.example/v2/core/accounts?page=p2", "cannot be followed"),
        ("/v2/core/accounts?page=p1", "same page cursor twice"),
    ],
)
def test_a_v2_next_page_elsewhere_or_seen_before_stops_the_listing(
    stripe_http, following, message
):
    """The key goes with every request: a next page on another host is not followed, and
    a list that names a page again would never end."""
    from tap_stripe_connect.api import StripeClient
    from tap_stripe_connect.api.auth import StripeKeyAuthenticator
    from tap_stripe_connect.api.reads import v2_accounts_read
    from tap_stripe_connect.errors import StripeAPIError
    from tap_stripe_connect.settings import Settings

    api = "https://api.stripe.test"
    first = {"data": [{"id": "acct_1"}], "next_page_url": "/v2/core/accounts?page=p1"}
    again = {"data": [{"id": "acct_2"}], "next_page_url": following}
    stripe_http.get(f"{api}/v2/core/accounts?limit=100", json=first)
    stripe_http.get(f"{api}/v2/core/accounts?page=p1", json=again)
    settings = Settings.from_config({"api_key": "sk_test_x", "api_url": api, "max_retries": 0})
    client = StripeClient(settings, StripeKeyAuthenticator({"api_key": "sk_test_x"}))
    with pytest.raises(StripeAPIError, match=message):
        list(client.list(v2_accounts_read()))
    assert all(r.hostname == "api.stripe.test" for r in stripe_http.request_history)
