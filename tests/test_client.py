"""The Stripe client, against a mocked HTTP layer: paging, headers, retries, errors."""

from __future__ import annotations

import pytest

from tap_stripe_connect.errors import (
    StripeAPIError,
    StripeAuthError,
    StripePermissionError,
    TapError,
)
from tap_stripe_connect.tap import TapStripeConnect

API = "https://api.test.invalid"
KEY = "sk_test_client51Sup3rS3cretValue"
DATE = "Thu, 01 Jan 2026 00:00:00 GMT"


def make_tap(**config):
    # One worker: these tests script the exact sequence of responses.
    base = {"api_key": KEY, "api_url": API, "max_retry_seconds": 5, "max_workers": 1}
    # The account is known, so the client reads no `/v1/account` first.
    base["account_id"] = "acct_unit"
    base.update(config)
    return TapStripeConnect(config=base, validate_config=True)


def page(ids, *, has_more, created=1_700_000_000):
    return {
        "object": "list",
        "has_more": has_more,
        "url": "/v1/charges",
        "data": [{"id": i, "object": "charge", "created": created, "amount": 100} for i in ids],
    }


def ok(json_body, **headers):
    return {"json": json_body, "headers": {"Date": DATE, "Request-Id": "req_ok", **headers}}


def error(status, message, *, code=None, param=None, should_retry=None):
    headers = {"Request-Id": f"req_{status}", "Date": DATE}
    if should_retry is not None:
        headers["Stripe-Should-Retry"] = should_retry
    body = {"error": {"type": "invalid_request_error", "message": message}}
    if code:
        body["error"]["code"] = code
    if param:
        body["error"]["param"] = param
    return {"status_code": status, "json": body, "headers": headers}


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch):
    # Backoff waits are real sleeps; the retry logic is what is under test here.
    monkeypatch.setattr("time.sleep", lambda _s: None)


def records(tap, stream="charges"):
    return list(tap.streams[stream].get_records(None))


def test_pages_with_starting_after_until_has_more_is_false(stripe_http):
    stripe_http.get(
        f"{API}/v1/charges",
        [ok(page(["ch_3", "ch_2"], has_more=True)), ok(page(["ch_1"], has_more=False))],
    )
    got = records(make_tap())
    assert [r["id"] for r in got] == ["ch_3", "ch_2", "ch_1"]
    first, second = stripe_http.request_history
    assert first.qs["limit"] == ["100"]
    assert "starting_after" not in first.qs
    assert second.qs["starting_after"] == ["ch_2"]


def test_every_request_sends_auth_version_and_account(stripe_http):
    stripe_http.get(f"{API}/v1/charges", [ok(page(["ch_1"], has_more=False))])
    records(make_tap(account_id="acct_123", api_version="2024-06-20"))
    sent = stripe_http.last_request.headers
    assert sent["Authorization"] == f"Bearer {KEY}"
    assert sent["Stripe-Version"] == "2024-06-20"
    assert sent["Stripe-Account"] == "acct_123"


def test_start_date_becomes_created_gte(stripe_http):
    stripe_http.get(f"{API}/v1/charges", [ok(page([], has_more=False))])
    records(make_tap(start_date="2024-01-01T00:00:00Z"))
    assert stripe_http.last_request.qs["created[gte]"] == ["1704067200"]


def test_subscriptions_are_listed_with_status_all(stripe_http):
    stripe_http.get(f"{API}/v1/subscriptions", [ok(page([], has_more=False))])
    records(make_tap(), "subscriptions")
    assert stripe_http.last_request.qs["status"] == ["all"]


def test_unix_times_become_rfc3339_and_records_carry_updated(stripe_http):
    stripe_http.get(f"{API}/v1/charges", [ok(page(["ch_1"], has_more=False))])
    (record,) = records(make_tap())
    assert record["created"] == "2023-11-14T22:13:20Z"
    # Stripe's clock (the Date header, minus its one-second resolution), not this machine's.
    assert record["updated"] == "2025-12-31T23:59:59Z"


def test_a_repeated_cursor_stops_with_an_error(stripe_http):
    stripe_http.get(
        f"{API}/v1/charges",
        [
            ok(page(["ch_2", "ch_1"], has_more=True)),
            ok(page(["ch_0", "ch_1"], has_more=True)),
            ok(page(["ch_0", "ch_1"], has_more=True)),
        ],
    )
    with pytest.raises(StripeAPIError, match="same page cursor"):
        records(make_tap())


@pytest.mark.parametrize("status", [429, 409, 500, 503])
def test_transient_errors_are_retried(stripe_http, status):
    stripe_http.get(
        f"{API}/v1/charges",
        [error(status, "try again"), ok(page(["ch_1"], has_more=False))],
    )
    tap = make_tap()
    assert [r["id"] for r in records(tap)] == ["ch_1"]
    assert stripe_http.call_count == 2
    assert tap.retries_by_stream["charges"] == 1


def test_stripe_should_retry_false_is_not_retried(stripe_http):
    stripe_http.get(f"{API}/v1/charges", [error(500, "do not", should_retry="false")])
    with pytest.raises(StripeAPIError):
        records(make_tap())
    assert stripe_http.call_count == 1


def test_a_redirect_is_an_error_and_the_key_is_not_sent_on(stripe_http):
    """Stripe's API does not redirect: an answer that does is not followed with the key."""
    elsewhere = "https://elsewhere.test.invalid/v1/charges"
    stripe_http.get(
        f"{API}/v1/charges",
        [{"status_code": 302, "headers": {"Location": elsewhere, "Date": DATE}, "text": ""}],
    )
    stripe_http.get(elsewhere, [ok(page(["ch_1"], has_more=False))])
    with pytest.raises(StripeAPIError, match="302") as failed:
        records(make_tap())
    assert [r.hostname for r in stripe_http.request_history] == ["api.test.invalid"]
    assert KEY not in str(failed.value)


def test_stripe_should_retry_true_retries_a_4xx(stripe_http):
    stripe_http.get(
        f"{API}/v1/charges",
        [error(400, "lock timeout", should_retry="true"), ok(page(["ch_1"], has_more=False))],
    )
    assert len(records(make_tap())) == 1


def test_a_truncated_body_is_retried(stripe_http):
    stripe_http.get(
        f"{API}/v1/charges",
        [
            {"text": '{"object": "list", "data": [', "headers": {"Date": DATE}},
            ok(page(["ch_1"], has_more=False)),
        ],
    )
    assert len(records(make_tap())) == 1


def test_retries_give_up_with_a_clear_error(stripe_http):
    stripe_http.get(f"{API}/v1/charges", [error(503, "down")] * 20)
    with pytest.raises(TapError, match=r"Giving up on stream 'charges'.*Request-Id req_503"):
        records(make_tap(max_retries=2))
    assert stripe_http.call_count == 3


def test_401_names_the_setting_and_request_id_without_the_key(stripe_http):
    stripe_http.get(
        f"{API}/v1/charges",
        [error(401, f"Invalid API Key provided: {KEY[:8]}****{KEY[-4:]}")],
    )
    with pytest.raises(StripeAuthError) as caught:
        records(make_tap())
    message = str(caught.value)
    assert "'api_key'" in message
    assert "req_401" in message
    assert KEY[-4:] not in message
    assert "\n" not in message


def test_403_names_the_stream_and_the_permission(stripe_http):
    stripe_http.get(
        f"{API}/v1/invoices",
        [error(403, "The provided key 'rk_test_****abcd' does not have the required permissions")],
    )
    with pytest.raises(StripePermissionError) as caught:
        records(make_tap(api_key="rk_test_restricted123"), "invoices")
    message = str(caught.value)
    assert "stream 'invoices'" in message
    assert "'Invoices' read permission" in message
    assert "rk_test_" not in message


def test_400_names_the_parameter(stripe_http):
    stripe_http.get(
        f"{API}/v1/charges",
        [error(400, "Invalid integer: abc", code="parameter_invalid_integer", param="created")],
    )
    with pytest.raises(StripeAPIError, match=r"parameter 'created'.*Check setting 'start_date'"):
        records(make_tap())


def test_connection_errors_end_with_the_api_url_setting(stripe_http):
    import requests

    stripe_http.get(f"{API}/v1/charges", exc=requests.exceptions.ConnectionError("refused"))
    with pytest.raises(TapError, match=r"Could not reach Stripe at .*setting 'api_url'"):
        records(make_tap(max_retries=1))


def test_a_dispute_event_refetches_the_charge_it_names(stripe_http):
    dispute_event = {
        "id": "evt_2",
        "object": "event",
        "type": "charge.dispute.created",
        "created": 1_767_225_000,
        "api_version": "2024-06-20",
        "data": {"object": {"id": "dp_1", "object": "dispute", "charge": "ch_9"}},
    }
    stripe_http.get(
        f"{API}/v1/events",
        [ok({"object": "list", "has_more": False, "url": "/v1/events", "data": [dispute_event]})],
    )
    charge = {"id": "ch_9", "object": "charge", "created": 1_700_000_000, "disputed": True}
    stripe_http.get(f"{API}/v1/charges/ch_9", [ok(charge)])
    tap = make_tap()
    stream = tap.streams["charges"]
    state = stream.get_context_state(None)
    state["replication_key"] = "updated"
    state["replication_key_value"] = "2025-12-31T00:00:00Z"
    (record,) = records(tap)
    assert record["id"] == "ch_9"
    assert record["disputed"] is True
    assert record["updated"] == "2025-12-31T23:50:00Z"  # the event time
    events_request = stripe_http.request_history[0]
    assert "charge.dispute.created" in events_request.qs["types[]"]
