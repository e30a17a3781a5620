"""The Stripe client on its own, against the emulator over HTTP: what every read sends,
paging, the account, retries and budgets, and which stream each request is counted for."""

from __future__ import annotations

import collections
import logging

import pytest

from tap_stripe_connect.api import StripeClient, events_read, list_read, retrieve_read
from tap_stripe_connect.api.auth import StripeKeyAuthenticator
from tap_stripe_connect.api.reads import ACCOUNT
from tap_stripe_connect.errors import StripePermissionError, TapError
from tap_stripe_connect.resources import RESOURCES_BY_NAME
from tap_stripe_connect.settings import Settings
from tests.conftest import emulator_config
from tests.emulator import Emulator

CHARGES = RESOURCES_BY_NAME["charges"]


@pytest.fixture(scope="module")
def emu():
    with Emulator(objects=250, seed=61) as emulator:
        yield emulator


def client_for(emu: Emulator, **config) -> StripeClient:
    settings = Settings.from_config(emulator_config(emu, **config))
    client = StripeClient(
        settings, StripeKeyAuthenticator({"api_key": settings.api_key}), user_agent="t/1"
    )
    counted: collections.Counter = collections.Counter()
    client.on_request = lambda stream, *_: counted.update([stream])
    client.counted = counted  # type: ignore[attr-defined]
    return client


def test_a_list_is_paged_to_its_end_with_starting_after(emu):
    emu.clear_requests()
    client = client_for(emu)
    ids = [c["id"] for c in client.list(list_read(CHARGES))]
    assert sorted(ids) == sorted(c["id"] for c in emu.objects("charges"))
    assert len(ids) == len(set(ids))
    pages = [r for r in emu.requests if r.path == "/v1/charges"]
    assert len(pages) == -(-len(ids) // 100)
    assert all(r.query["limit"] == ["100"] for r in pages)
    assert "starting_after" not in pages[0].query
    assert [r.query["starting_after"][0] for r in pages[1:]] == [ids[99], ids[199]][
        : len(pages) - 1
    ]


def test_every_request_carries_auth_version_user_agent_and_account(emu):
    emu.clear_requests()
    client = client_for(emu, api_version="2024-06-20")
    client.first(list_read(CHARGES, account=emu.account_id))
    (request,) = emu.requests
    assert request.headers["Authorization"] == f"Bearer {emu.api_key}"
    assert request.headers["Stripe-Version"] == "2024-06-20"
    assert request.headers["Stripe-Account"] == emu.account_id
    assert request.headers["User-Agent"] == "t/1"
    assert request.query["limit"] == ["1"]


def test_created_bounds_and_list_parameters_are_sent_as_described(emu):
    emu.clear_requests()
    client = client_for(emu)
    created = sorted(c["created"] for c in emu.objects("subscriptions"))
    lower, upper = created[len(created) // 4], created[3 * len(created) // 4]
    got = list(client.list(list_read(RESOURCES_BY_NAME["subscriptions"], created=(lower, upper))))
    assert {s["id"] for s in got} == {
        s["id"] for s in emu.objects("subscriptions") if lower <= s["created"] < upper
    }
    query = emu.requests[0].query
    assert query["created[gte]"] == [str(lower)]
    assert query["created[lt]"] == [str(upper)]
    assert query["status"] == ["all"]


def test_retrieve_returns_the_object_or_none_when_stripe_has_none(emu):
    client = client_for(emu)
    charge = emu.objects("charges")[0]
    assert client.retrieve(retrieve_read(CHARGES, charge["id"]))["id"] == charge["id"]
    assert client.retrieve(retrieve_read(CHARGES, "ch_doesNotExist123")) is None


def test_the_account_read_sets_stripe_clock_and_counts_for_no_stream(emu):
    client = client_for(emu)
    assert client.clock.now() is None
    account = client.account()
    assert account["id"] == emu.account_id
    assert abs(client.clock.now() - emu.clock) <= 2
    assert client.counted == {None: 1}


def test_each_request_is_counted_for_the_stream_its_read_serves(emu):
    client = client_for(emu)
    subscriptions = RESOURCES_BY_NAME["subscriptions"]
    list(client.list(events_read(subscriptions, emu.clock - 3600)))
    invoice = emu.objects("invoices")[0]
    lines = RESOURCES_BY_NAME["invoice_line_items"]
    list(client.list(list_read(lines, parent_id=invoice["id"])))
    assert client.counted == {"subscriptions": 1, "invoice_line_items": 1}


def test_a_retriable_answer_is_retried_and_counted(emu, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda _s: None)
    client = client_for(emu)
    emu.inject(503, count=2, path_prefix="/v1/charges")
    assert client.first(list_read(CHARGES)) is not None
    assert client.retries_by_stream == {"charges": 2}


def test_giving_up_names_the_stream_the_request_id_and_the_settings(emu, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda _s: None)
    client = client_for(emu, max_retries=1)
    emu.inject(500, count=5, path_prefix="/v1/charges")
    with pytest.raises(TapError, match=r"Giving up on stream 'charges' after 2 tries.*Request-Id"):
        client.first(list_read(CHARGES))
    emu.clear_faults()


def test_a_permission_error_names_the_stream_and_the_permission(emu):
    key = "rk_test_apiClientNoCharges1"
    emu.api_keys[key] = {"customers"}
    client = client_for(emu, api_key=key)
    with pytest.raises(StripePermissionError, match=r"stream 'charges'.*'Charges' read"):
        client.first(list_read(CHARGES))


def test_each_account_has_its_own_budget(emu):
    client = client_for(emu, max_requests_per_second=7)
    own, other = client.limiter_for(None), client.limiter_for("acct_other")
    assert own is not other
    assert client.limiter_for(None) is own
    assert (own.global_rate, own.endpoint_rate) == (7, 25)


def test_the_account_read_is_described_once():
    assert ACCOUNT.path == "/v1/account"
    assert ACCOUNT.query() == []
    assert logging.getLogger("tap-stripe-connect")  # the client logs under the tap's name
