"""The Stripe emulator behaves like Stripe's API v1, over real HTTP."""

from __future__ import annotations

import email.utils
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import openapi
from tests.emulator import EVENT_RETENTION, Emulator

ROOT = Path(__file__).resolve().parent.parent
TOP_LEVEL = ("charges", "customers", "invoices", "subscriptions")


def client(emu: Emulator, key: str | None = None) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key or emu.api_key}"
    return session


def get(emu: Emulator, path: str, key: str | None = None, **params: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {key or emu.api_key}"}
    return requests.get(emu.url + path, params=params, headers=headers, timeout=10)


def page_all(session: requests.Session, url: str, **params: Any) -> list[dict]:
    out: list[dict] = []
    while True:
        body = session.get(url, params=params, timeout=10).json()
        out.extend(body["data"])
        if not body["has_more"]:
            return out
        params["starting_after"] = body["data"][-1]["id"]


def assert_error(response: requests.Response, status: int, param: str | None = None,
                 code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Request-Id"].startswith("req_")
    error = response.json()["error"]
    assert error["type"]
    assert error["message"]
    if param is not None:
        assert error.get("param") == param
    if code is not None:
        assert error.get("code") == code
    return error


@pytest.fixture(scope="module")
def emu():
    """Read-only tests share one emulator."""
    with Emulator(objects=120, seed=7) as emulator:
        yield emulator


@pytest.fixture
def fresh():
    """Tests that change data or settings get their own small emulator."""
    with Emulator(objects=20, seed=11) as emulator:
        yield emulator


# -- lists, paging, filters ---------------------------------------------------------------


def test_list_shape_and_headers(emu):
    response = get(emu, "/v1/charges")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert body["url"] == "/v1/charges"
    assert body["has_more"] is True
    assert len(body["data"]) == 10
    headers = response.headers
    assert headers["Content-Type"] == "application/json"
    assert headers["Request-Id"].startswith("req_")
    assert headers["Stripe-Version"] == "2024-06-20"
    assert int(headers["Content-Length"]) == len(response.content)
    date = email.utils.parsedate_to_datetime(headers["Date"]).timestamp()
    assert abs(date - emu.clock) <= 1
    echoed = requests.get(emu.url + "/v1/customers", timeout=10, headers={
        "Authorization": f"Bearer {emu.api_key}", "Stripe-Version": "2023-10-16"})
    assert echoed.headers["Stripe-Version"] == "2023-10-16"
    charge = body["data"][0]
    assert charge["object"] == "charge"
    assert charge["id"].startswith("ch_")
    assert isinstance(charge["amount"], int)
    assert charge["livemode"] is False
    assert isinstance(charge["billing_details"], dict)
    assert charge["customer"] is None or charge["customer"].startswith("cus_")


@pytest.mark.parametrize("stream", [*TOP_LEVEL, "events"])
def test_paging_newest_first_covers_every_object_once(emu, stream):
    params = {"limit": 7, **({"status": "all"} if stream == "subscriptions" else {})}
    seen = page_all(client(emu), f"{emu.url}/v1/{stream}", **params)
    ids = [o["id"] for o in seen]
    assert len(ids) == len(set(ids))
    assert ids == [o["id"] for o in emu.objects(stream)]
    keys = [(o["created"], o["id"]) for o in seen]
    assert keys == sorted(keys, reverse=True)  # created desc, then id desc
    if stream != "events":
        assert len(ids) == 120
    # ending_before walks back towards the newest, pages still newest first.
    session, back = client(emu), []
    cursor = ids[-1]
    while True:
        body = session.get(f"{emu.url}/v1/{stream}", timeout=10,
                           params={**params, "ending_before": cursor}).json()
        back = body["data"] + back
        if not body["has_more"]:
            break
        cursor = body["data"][0]["id"]
    assert [o["id"] for o in back] == ids[:-1]


def test_objects_share_created_seconds_and_ties_break_by_id(emu):
    ties = 0
    for stream in TOP_LEVEL:
        objs = emu.objects(stream)
        for a, b in itertools.pairwise(objs):
            if a["created"] == b["created"]:
                ties += 1
                assert a["id"] > b["id"]
    assert ties > 0


def test_created_filters(emu):
    objs = emu.objects("charges")
    pivot = objs[40]["created"]
    session = client(emu)
    cases = {
        "created[gte]": lambda c: c >= pivot,
        "created[gt]": lambda c: c > pivot,
        "created[lt]": lambda c: c < pivot,
        "created[lte]": lambda c: c <= pivot,
        "created": lambda c: c == pivot,
    }
    for param, keep in cases.items():
        got = page_all(session, emu.url + "/v1/charges", limit=100, **{param: pivot})
        assert [o["id"] for o in got] == [o["id"] for o in objs if keep(o["created"])], param
    window = page_all(session, emu.url + "/v1/charges", limit=100,
                      **{"created[gte]": pivot - 86400 * 30, "created[lt]": pivot})
    assert [o["id"] for o in window] == [
        o["id"] for o in objs if pivot - 86400 * 30 <= o["created"] < pivot
    ]


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"limit": 0}, "limit", "parameter_invalid_integer"),
        ({"limit": 101}, "limit", "parameter_invalid_integer"),
        ({"limit": "ten"}, "limit", "parameter_invalid_integer"),
        ({"created[gte]": "yesterday"}, "created[gte]", "parameter_invalid_integer"),
        ({"created": "1.5"}, "created", "parameter_invalid_integer"),
        ({"created[after]": 1}, "created[after]", "parameter_unknown"),
        ({"colour": "red"}, "colour", "parameter_unknown"),
        ({"starting_after": "ch_nope"}, "starting_after", "resource_missing"),
        ({"ending_before": "ch_nope"}, "ending_before", "resource_missing"),
        ({"starting_after": ""}, "starting_after", "parameter_invalid_empty"),
    ],
)
def test_bad_list_parameters_are_400_with_param(emu, params, param, code):
    error = assert_error(get(emu, "/v1/charges", **params), 400, param=param, code=code)
    if code == "parameter_unknown":
        assert error["message"] == f"Received unknown parameter: {param}"
    if code == "resource_missing":
        assert error["message"] == "No such charge: 'ch_nope'"


def test_subscriptions_hide_canceled_unless_status_all(emu):
    session = client(emu)
    default = page_all(session, emu.url + "/v1/subscriptions", limit=100)
    everything = page_all(session, emu.url + "/v1/subscriptions", limit=100, status="all")
    canceled = page_all(session, emu.url + "/v1/subscriptions", limit=100, status="canceled")
    assert canceled
    assert all(s["status"] == "canceled" for s in canceled)
    assert all(s["status"] != "canceled" for s in default)
    assert len(default) + len(canceled) == len(everything) == 120
    assert_error(get(emu, "/v1/subscriptions", status="gone"), 400, param="status")


def test_embedded_lines_cap_at_ten_and_the_lines_endpoint_pages_all(emu):
    invoice = next(i for i in emu.objects("invoices") if i["lines"]["total_count"] == 40)
    lines = invoice["lines"]
    assert len(lines["data"]) == 10
    assert lines["has_more"] is True
    assert lines["url"] == f"/v1/invoices/{invoice['id']}/lines"
    session = client(emu)
    every = page_all(session, emu.url + lines["url"], limit=100)
    assert len(every) == 40
    assert [x["id"] for x in every[:10]] == [x["id"] for x in lines["data"]]
    rest = page_all(session, emu.url + lines["url"], limit=7,
                    starting_after=lines["data"][-1]["id"])
    assert [x["id"] for x in rest] == [x["id"] for x in every[10:]]
    assert all(x["object"] == "line_item" and x["id"].startswith("il_") for x in every)
    small = next(i for i in emu.objects("invoices") if i["lines"]["total_count"] <= 10)
    assert small["lines"]["has_more"] is False
    assert_error(get(emu, "/v1/invoices/in_missing/lines"), 404, code="resource_missing")


def test_subscription_items_need_a_subscription_and_page_beyond_the_embedded_ten(emu):
    sub = next(s for s in emu.objects("subscriptions") if s["items"]["total_count"] > 10)
    assert len(sub["items"]["data"]) == 10
    assert sub["items"]["has_more"] is True
    assert sub["items"]["data"][0]["price"]["object"] == "price"
    items = page_all(client(emu), emu.url + "/v1/subscription_items", subscription=sub["id"],
                     limit=5)
    assert len(items) == sub["items"]["total_count"]
    assert all(i["subscription"] == sub["id"] and i["id"].startswith("si_") for i in items)
    assert_error(get(emu, "/v1/subscription_items"), 400, param="subscription",
                 code="parameter_missing")


def test_retrieve_every_resource_and_404s(emu):
    for stream in (*TOP_LEVEL, "events"):
        obj = emu.objects(stream)[5]
        response = get(emu, f"/v1/{stream}/{obj['id']}")
        assert response.status_code == 200
        assert response.json() == obj
        error = assert_error(get(emu, f"/v1/{stream}/x_missing"), 404, param="id",
                             code="resource_missing")
        assert "x_missing" in error["message"]
    item = emu.objects("subscription_items")[0]
    assert get(emu, f"/v1/subscription_items/{item['id']}").json() == item
    account = get(emu, "/v1/account").json()
    assert account["object"] == "account"
    assert account["id"].startswith("acct_")
    assert account["settings"]["dashboard"]["display_name"]
    assert account["charges_enabled"] is True
    assert_error(get(emu, "/v1/widgets"), 404)


def test_expand_customer_on_lists_and_retrieve(emu):
    charge = next(c for c in emu.objects("charges") if c["customer"])
    got = get(emu, f"/v1/charges/{charge['id']}", **{"expand[]": "customer"}).json()
    assert got["customer"]["object"] == "customer"
    listed = get(emu, "/v1/invoices", limit=3, **{"expand[]": "data.customer"}).json()
    assert all(isinstance(i["customer"], dict) for i in listed["data"])


# -- auth -----------------------------------------------------------------------------------


def test_authentication_errors(emu):
    missing = requests.get(emu.url + "/v1/charges", timeout=10)
    assert "did not provide an API key" in assert_error(missing, 401)["message"]
    bad = get(emu, "/v1/charges", key="sk_test_51Nope0000abcd")
    assert assert_error(bad, 401)["message"] == "Invalid API Key provided: sk_test_****abcd"
    publishable = get(emu, "/v1/charges", key="pk_test_12345678")
    assert "publishable API key" in assert_error(publishable, 401)["message"]
    basic = requests.get(emu.url + "/v1/charges", auth=(emu.api_key, ""), timeout=10)
    assert basic.status_code == 200
    headers = {"Authorization": f"Bearer {emu.api_key}", "Stripe-Account": emu.account_id}
    assert requests.get(emu.url + "/v1/charges", headers=headers, timeout=10).ok
    headers["Stripe-Account"] = "acct_1Other"
    other = requests.get(emu.url + "/v1/charges", headers=headers, timeout=10)
    assert_error(other, 403, code="account_invalid")


def test_restricted_key_permissions():
    keys = {"sk_test_emulator": None, "rk_test_invoicesonly1234": {"invoices"}}
    with Emulator(objects=5, seed=2, api_keys=keys) as emu:
        key = "rk_test_invoicesonly1234"
        denied = assert_error(get(emu, "/v1/charges", key=key), 403)
        assert denied["message"] == (
            "The provided key 'rk_test_****1234' does not have the required permissions for "
            f"this endpoint on account '{emu.account_id}'. Having the 'rak_charge_read' "
            "permission would allow this request to continue."
        )
        assert "rak_subscription_read" in assert_error(
            get(emu, "/v1/subscriptions", key=key), 403)["message"]
        invoice = emu.objects("invoices")[0]["id"]
        assert get(emu, "/v1/invoices", key=key).status_code == 200
        assert get(emu, f"/v1/invoices/{invoice}/lines", key=key).status_code == 200
        assert get(emu, "/v1/account", key=key).status_code == 200


# -- mutations and events ---------------------------------------------------------------------


def test_mutations_emit_stripe_events(fresh):
    emu = fresh
    start = emu.clock
    customer = emu.objects("customers")[0]
    updated = emu.update("customers", customer["id"], {"email": "new@example.com"})
    assert updated["email"] == "new@example.com"
    assert emu.clock >= start + 1

    draft = emu.create("invoices", customer=customer["id"], lines=2)
    assert draft["status"] == "draft"
    assert draft["created"] >= start
    paid = emu.pay_invoice(draft["id"])
    assert paid["status"] == "paid"
    assert paid["status_transitions"]["paid_at"]
    charge = next(c for c in emu.objects("charges")
                  if c["status"] == "succeeded" and not c["amount_refunded"])
    refunded = emu.refund_charge(charge["id"])
    assert refunded["refunded"] is True
    assert refunded["amount_refunded"] == charge["amount"]
    sub = next(s for s in emu.objects("subscriptions") if s["status"] == "active")
    canceled = emu.cancel_subscription(sub["id"])
    assert canceled["canceled_at"] == canceled["ended_at"]

    events = page_all(client(emu), emu.url + "/v1/events", limit=100,
                      **{"created[gte]": start})
    types = [e["type"] for e in reversed(events)]  # oldest first
    assert types == ["customer.updated", "invoice.created", "invoice.finalized",
                     "invoice.paid", "invoice.updated", "charge.refunded",
                     "customer.subscription.deleted"]
    by_type = {e["type"]: e for e in events}
    first = by_type["customer.updated"]
    assert first["object"] == "event"
    assert first["id"].startswith("evt_")
    assert first["api_version"] == "2024-06-20"
    assert first["data"]["object"]["email"] == "new@example.com"
    assert first["data"]["previous_attributes"] == {"email": customer["email"]}
    assert first["request"]["id"].startswith("req_")
    assert first["pending_webhooks"] == 0
    assert by_type["invoice.updated"]["data"]["previous_attributes"]["status"] == "draft"
    assert by_type["charge.refunded"]["data"]["previous_attributes"] == {
        "amount_refunded": 0, "refunded": False}
    assert by_type["customer.subscription.deleted"]["data"]["object"]["status"] == "canceled"
    # created times strictly follow mutation order
    created = [e["created"] for e in reversed(events)]
    assert created == sorted(created)

    # A canceled subscription still exists; retrieve works.
    assert get(emu, f"/v1/subscriptions/{sub['id']}").json()["status"] == "canceled"

    session = client(emu)
    only = page_all(session, emu.url + "/v1/events", limit=100,
                    **{"types[]": ["invoice.paid", "charge.refunded"]})
    assert sorted(e["type"] for e in only) == ["charge.refunded", "invoice.paid"]
    wildcard = page_all(session, emu.url + "/v1/events", limit=100, type="customer.*",
                        **{"created[gte]": start})
    assert {e["type"] for e in wildcard} == {"customer.updated",
                                             "customer.subscription.deleted"}
    assert_error(get(emu, "/v1/events", **{"types[]": [f"t{i}" for i in range(21)]}), 400,
                 param="types")


def test_deletes(fresh):
    emu = fresh
    customer = emu.create("customers", name="Gone Soon")
    sub = emu.create("subscriptions", customer=customer["id"])
    draft = emu.create("invoices", customer=customer["id"])
    emu.delete("invoices", draft["id"])
    assert_error(get(emu, f"/v1/invoices/{draft['id']}"), 404, param="id")
    emu.delete("customers", customer["id"])
    assert customer["id"] not in {c["id"] for c in emu.objects("customers")}
    # Stripe answers a retrieve of a deleted customer with a stub.
    assert get(emu, f"/v1/customers/{customer['id']}").json() == {
        "id": customer["id"], "object": "customer", "deleted": True}
    events = get(emu, "/v1/events", limit=4).json()["data"]
    assert [e["type"] for e in events] == [
        "customer.deleted", "customer.subscription.deleted", "invoice.deleted",
        "invoice.created"]
    assert events[0]["data"]["object"]["deleted"] is True
    assert events[0]["data"]["object"]["name"] == "Gone Soon"
    assert events[2]["data"]["object"]["deleted"] is True
    assert emu.get("subscriptions", sub["id"])["status"] == "canceled"
    open_invoice = next(i for i in emu.objects("invoices") if i["status"] == "paid")
    with pytest.raises(ValueError, match="draft"):
        emu.delete("invoices", open_invoice["id"])


def test_add_invoice_lines_crosses_the_embedded_cap(fresh):
    emu = fresh
    invoice = next(i for i in emu.objects("invoices") if i["lines"]["total_count"] <= 3)
    updated = emu.add_invoice_lines(invoice["id"], 12)
    total = invoice["lines"]["total_count"] + 12
    assert updated["lines"]["total_count"] == total
    assert updated["lines"]["has_more"] is True
    lines = page_all(client(emu), f"{emu.url}/v1/invoices/{invoice['id']}/lines", limit=100)
    assert len(lines) == total
    assert updated["total"] == sum(line["amount"] for line in lines)


def test_event_retention_and_api_version(fresh):
    emu = fresh
    initial = emu.objects("events")
    assert initial, "some generated objects fall in the last 30 days"
    assert all(e["created"] >= emu.clock - EVENT_RETENTION for e in initial)
    oldest = initial[-1]
    emu.set_event_api_version("2023-10-16")
    emu.update("customers", emu.objects("customers")[0]["id"], {"metadata": {"k": "v"}})
    emu.advance(EVENT_RETENTION - (emu.clock - oldest["created"]) + 5)
    listed = get(emu, "/v1/events", limit=100).json()["data"]
    assert oldest["id"] not in {e["id"] for e in listed}
    assert listed[0]["api_version"] == "2023-10-16"
    assert_error(get(emu, "/v1/events", starting_after=oldest["id"]), 400,
                 param="starting_after")
    assert_error(get(emu, f"/v1/events/{oldest['id']}"), 404)


# -- faults, limits, latency ----------------------------------------------------------------


def test_rate_limits_answer_429_with_should_retry():
    now = [100.0]  # the clock the emulator counts requests on: still, then a second on
    with Emulator(objects=5, seed=3, rate_limit=5, limit_clock=lambda: now[0]) as emu:
        session = client(emu)
        statuses = [session.get(emu.url + "/v1/customers", timeout=10) for _ in range(8)]
        assert [r.status_code for r in statuses] == [200] * 5 + [429] * 3
        limited = statuses[5:]
        error = assert_error(limited[0], 429, code="rate_limit")
        assert error["type"] == "invalid_request_error"
        assert limited[0].headers["Stripe-Should-Retry"] == "true"
        assert emu.rate_limited == len(limited)
        assert emu.request_count(status=429) == len(limited)
        emu.set_rate_limit(None, 3)  # per endpoint: another endpoint has its own window
        now[0] += 1.0
        codes = [session.get(emu.url + "/v1/charges", timeout=10).status_code
                 for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        assert session.get(emu.url + "/v1/invoices", timeout=10).status_code == 200
        now[0] += 1.0  # a second later the window is free again
        assert session.get(emu.url + "/v1/charges", timeout=10).status_code == 200


def test_injected_faults(fresh):
    emu = fresh
    session = client(emu)
    url = emu.url + "/v1/charges"
    emu.inject(503, count=2)
    for _ in range(2):
        response = session.get(url, timeout=10)
        assert_error(response, 503)
        assert response.headers["Stripe-Should-Retry"] == "true"
        assert response.json()["error"]["type"] == "api_error"
    assert session.get(url, timeout=10).status_code == 200

    emu.inject(409, path_prefix="/v1/invoices")
    assert session.get(url, timeout=10).status_code == 200  # other path: untouched
    assert_error(session.get(emu.url + "/v1/invoices", timeout=10), 409, code="lock_timeout")

    emu.inject(400, should_retry=False, body={"error": {"type": "invalid_request_error",
                                                        "message": "custom"}})
    response = session.get(url, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "custom"
    assert response.headers["Stripe-Should-Retry"] == "false"

    emu.inject(200, truncated=True)
    response = session.get(url, timeout=10)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)

    emu.inject(200, body="<html>Bad gateway</html>")
    assert session.get(url, timeout=10).text == "<html>Bad gateway</html>"

    emu.inject(200, reset_connection=True)
    with pytest.raises(requests.exceptions.RequestException):
        session.get(url, timeout=10)

    emu.inject(200, stall_seconds=1.0)
    with pytest.raises(requests.exceptions.Timeout):
        requests.get(url, headers=session.headers, timeout=0.2)
    assert session.get(url, timeout=10).status_code == 200  # other requests are not held up
    deadline = time.monotonic() + 60  # the stalled request is logged once it has answered
    while sum(1 for r in emu.requests if r.fault == "injected") < 8:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert emu.request_count(path_prefix="/v1/invoices") == 1


def test_random_failures_and_latency():
    with Emulator(objects=5, seed=4, fail_rate=1.0) as emu:
        response = get(emu, "/v1/charges")
        assert response.status_code in (500, 503)
        assert response.headers["Stripe-Should-Retry"] == "true"
        emu.set_fail_rate(0)
        emu.set_latency(150, 0)
        # Latency does not serialise requests: the four wait out their latency together
        # (each waits, up to 10 s, for the others to be waiting too).
        together = threading.Barrier(4, timeout=10)
        delays: list[float] = []

        def wait(seconds: float) -> None:
            delays.append(seconds)
            together.wait()

        emu.latency_wait = wait
        statuses: list[int] = []
        threads = [
            threading.Thread(target=lambda: statuses.append(get(emu, "/v1/customers").status_code))
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not together.broken
        assert statuses == [200] * 4
        assert delays == [0.150] * 4


def test_keep_alive_and_request_log(emu):
    session = client(emu)
    before = emu.request_count(path_prefix="/v1/customers")
    for _ in range(3):
        response = session.get(emu.url + "/v1/customers", params={"limit": 1}, timeout=10)
        assert response.headers["Connection"] == "keep-alive"
    assert emu.request_count(path_prefix="/v1/customers") == before + 3
    record = emu.requests[-1]
    assert record.method == "GET"
    assert record.path == "/v1/customers"
    assert record.query == {"limit": ["1"]}
    assert record.status == 200
    assert record.headers["Authorization"] == f"Bearer {emu.api_key}"


# -- determinism, conformance, control API, CLI ---------------------------------------------


def test_same_seed_gives_identical_data():
    a, b, c = (Emulator(objects=40, seed=s) for s in (5, 5, 6))
    for stream in (*TOP_LEVEL, "invoice_line_items", "subscription_items", "events"):
        assert json.dumps(a.objects(stream)) == json.dumps(b.objects(stream))
    assert a.objects("charges") != c.objects("charges")


def _strict_schemas() -> dict:
    """OpenAPI component schemas as JSON Schema, with unknown properties forbidden."""

    def convert(node: object) -> object:
        if isinstance(node, list):
            return [convert(x) for x in node]
        if not isinstance(node, dict):
            return node
        out: dict = {}
        for key, value in node.items():
            if key == "properties":
                out[key] = {k: convert(v) for k, v in value.items()}
            elif key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties"):
                out[key] = convert(value)
            elif key in ("type", "enum", "required", "$ref"):
                out[key] = value
        if "properties" in node and "additionalProperties" not in node:
            out["additionalProperties"] = False
            if {"data", "has_more", "object", "url"} <= set(node["properties"]):
                out["properties"]["total_count"] = {"type": "integer"}  # Stripe sends it
        if node.get("nullable"):
            out = {"anyOf": [out, {"type": "null"}]}
        return out

    return {k: convert(v) for k, v in openapi.spec()["components"]["schemas"].items()}


def test_objects_match_the_2024_06_20_spec(fresh):
    jsonschema = pytest.importorskip("jsonschema")
    root = {"components": {"schemas": _strict_schemas()}}

    def validator(name: str):
        return jsonschema.Draft202012Validator({**root, "$ref": f"#/components/schemas/{name}"})

    emu = fresh
    emu.update("customers", emu.objects("customers")[0]["id"], {"description": "vip"})
    emu.create("invoices", status="open", lines=12)
    emu.create("subscriptions", items=2)
    emu.create("charges")
    names = {"charges": "charge", "customers": "customer", "invoices": "invoice",
             "subscriptions": "subscription", "invoice_line_items": "line_item",
             "subscription_items": "subscription_item", "events": "event"}
    for stream, name in names.items():
        check = validator(name)
        for obj in emu.objects(stream)[:25]:
            errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in
                      check.iter_errors(obj)]
            assert not errors, (stream, obj["id"], errors[:3])
    for event in emu.objects("events")[:25]:
        obj = event["data"]["object"]
        errors = list(validator(obj["object"]).iter_errors(obj))
        assert not errors, (event["type"], errors[0].message[:200])
    assert not list(validator("account").iter_errors(get(emu, "/v1/account").json()))


def test_control_endpoints_drive_the_emulator_over_http(fresh):
    emu = fresh
    state = requests.get(emu.url + "/_emulator/state", timeout=10).json()["result"]
    assert state["counts"]["charges"] == 20
    assert state["api_key"] == emu.api_key
    customer = emu.objects("customers")[0]["id"]
    response = requests.post(emu.url + "/_emulator/update", timeout=10, json={
        "stream": "customers", "id": customer, "changes": {"name": "Over HTTP"}})
    assert response.json()["result"]["name"] == "Over HTTP"
    created = requests.post(emu.url + "/_emulator/create", timeout=10,
                            json={"stream": "charges", "amount": 1234}).json()["result"]
    assert created["amount"] == 1234
    assert requests.post(emu.url + "/_emulator/advance", timeout=10,
                         json={"seconds": 60}).json()["result"] >= state["clock"] + 60
    requests.post(emu.url + "/_emulator/inject", timeout=10, json={"status": 500})
    assert get(emu, "/v1/charges").status_code == 500
    bad = requests.post(emu.url + "/_emulator/pay_invoice", timeout=10, json={"id": "in_x"})
    assert bad.status_code == 400
    assert "No such invoice" in bad.json()["error"]["message"]
    assert get(emu, f"/v1/customers/{customer}").json()["name"] == "Over HTTP"
    # control calls are not part of the request log
    assert all(not r.path.startswith("/_emulator") for r in emu.requests)


def test_cli_serves_until_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", "--port", "0", "--objects", "10",
         "--seed", "7", "--latency", "5,2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("Stripe emulator listening on http://127.0.0.1:")
        assert line.endswith("(key sk_test_emulator)")
        url = line.split(" on ")[1].split(" ")[0]
        response = requests.get(url + "/v1/customers", timeout=10,
                                headers={"Authorization": "Bearer sk_test_emulator"})
        assert response.status_code == 200
        assert len(response.json()["data"]) == 10
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
