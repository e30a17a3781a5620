"""A server that misbehaves: the tap stops naming the cause, never exits 0 with data wrong.

Every test runs the real CLI against the emulator made to misbehave as a server Stripe did
not write might (an endpoint it does not serve, pages out of newest-first order, no
`/v1/account`, fields the schemas lack, several streams failing at once), and asserts
the exit code, the records and the exact line a user reads.
"""

from __future__ import annotations

import json
import logging
import re
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tap_stripe_connect.api import StripeClient
from tap_stripe_connect.api.auth import StripeKeyAuthenticator
from tap_stripe_connect.api.reads import Kind, Read
from tap_stripe_connect.resources import REPORTS
from tap_stripe_connect.settings import Settings
from tests.catalogs import select_streams, tap_catalog
from tests.conftest import TapRun, run_tap
from tests.emulator import Emulator

SECRET = "sk_test_misbehaveK3y_Qp27x"
REQUEST_ID = r"\[Request-Id req_[A-Za-z0-9]+\]"


def emulator(objects: int = 40) -> Emulator:
    return Emulator(objects=objects, seed=7, api_keys={SECRET: None})


def run(emu: Emulator, tmp_path, streams: tuple[str, ...], **extra) -> TapRun:
    config = {
        "api_key": SECRET,
        "api_url": emu.url,
        "max_retries": 2,
        "max_retry_seconds": 5,
        "request_timeout": 5,
        "max_requests_per_second": 500,
        "max_requests_per_second_per_endpoint": 500,
        **extra,
    }
    return run_tap(
        config=config,
        catalog=json.loads(tap_catalog(SECRET, *streams)),
        tmp_path=tmp_path,
        timeout=120,
    )


def ids(result: TapRun, stream: str) -> list[str]:
    return [r["id"] for r in result.records(stream)]


def activated(result: TapRun, stream: str) -> bool:
    return any(m["type"] == "ACTIVATE_VERSION" and m["stream"] == stream for m in result.messages)


# -- 1. a 404 for an unknown URL is no "no data" --


def test_an_endpoint_the_server_does_not_serve_fails_the_stream_and_never_activates(tmp_path):
    with emulator() as emu:
        emu.unserve("GET /v1/customers/:id/payment_methods")
        result = run(emu, tmp_path, ("customers", "payment_methods"))
        customers = {o["id"] for o in emu.objects("customers")}
    assert result.returncode == 1
    assert re.fullmatch(
        r"tap-stripe-connect: error: Stripe does not serve the endpoint "
        r"GET /v1/customers/cus_\w+/payment_methods needed by stream 'payment_methods' "
        r"\(404: Unrecognized request URL\): check setting 'api_url', or deselect stream "
        rf"'payment_methods' if this server does not offer it\. {REQUEST_ID}",
        result.error_line,
    ), result.error_line
    assert ids(result, "payment_methods") == []
    # A target that hard-deletes on ACTIVATE_VERSION keeps its table.
    assert not activated(result, "payment_methods")
    assert set(ids(result, "customers")) == customers
    assert "Traceback" not in result.stderr


def test_a_parent_deleted_since_it_was_listed_is_still_skipped(tmp_path):
    # Stripe's `resource_missing` names an object, not an endpoint: that list is empty.
    with emulator() as emu:
        emu.inject(404, count=1, path_prefix="/v1/customers/cus_", should_retry=None)
        result = run(emu, tmp_path, ("payment_methods",))
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(
        r"Stream 'payment_methods': skipped the list of cus_\w+, gone since it was listed "
        r"\(no ACTIVATE_VERSION this run\): Stripe has no object at "
        r"GET /v1/customers/cus_\w+/payment_methods for stream 'payment_methods': No such "
        r"object \[Request-Id req_\w+\]",
        result.stderr,
    ), result.stderr[-2000:]
    # What was not read is not deleted from the target.
    assert not activated(result, "payment_methods")


# -- 2. every failing stream names its own cause --


def test_each_failing_stream_has_its_own_cause_in_the_log_the_summary_and_the_error(tmp_path):
    with emulator() as emu:
        emu.unserve("GET /v1/charges", "GET /v1/invoices")
        result = run(emu, tmp_path, ("charges", "customers", "invoices"))
        customers = {o["id"] for o in emu.objects("customers")}
    assert result.returncode == 1
    cause = (
        "Stripe does not serve the endpoint GET /v1/{0} needed by stream '{0}' (404: "
        "Unrecognized request URL): check setting 'api_url', or deselect stream '{0}' if "
        "this server does not offer it."
    )
    line = result.error_line
    assert line.startswith("tap-stripe-connect: error: 2 streams failed: "), line
    for stream in ("charges", "invoices"):
        assert f"'{stream}': {cause.format(stream)}" in line
        # The log line, and the summary table's line, for each stream.
        assert f"Stream '{stream}' failed: {cause.format(stream)}" in result.stderr
        assert f"  {stream}: {cause.format(stream)}" in result.stderr
    assert "2 stream(s) failed:" in result.stderr
    assert set(ids(result, "customers")) == customers


# -- 3. messages name what was requested and what is missing --


def test_a_missing_events_endpoint_is_named_as_an_endpoint_of_the_stream(tmp_path):
    with emulator() as emu:
        first = run(emu, tmp_path, ("charges",))
        assert first.returncode == 0, first.stderr[-2000:]
        emu.unserve("GET /v1/events")
        result = run_tap(
            config={"api_key": SECRET, "api_url": emu.url, "max_retries": 1},
            catalog=json.loads(tap_catalog(SECRET, "charges")),
            state=first.last_state,
            tmp_path=tmp_path,
            timeout=120,
        )
    assert result.returncode == 1
    assert re.fullmatch(
        r"tap-stripe-connect: error: Stripe does not serve the endpoint GET /v1/events "
        r"needed by stream 'charges' \(404: Unrecognized request URL\).*" + REQUEST_ID,
        result.error_line,
    ), result.error_line
    assert "no such" not in result.stderr.lower()


# -- 4. GET /v1/account is not required when `account_id` is set --


def test_without_v1_account_setting_account_id_is_enough(tmp_path):
    with emulator() as emu:
        emu.unserve("GET /v1/account")
        result = run(emu, tmp_path, ("customers",), account_id=emu.account_id)
        customers = sorted(o["id"] for o in emu.objects("customers"))
        account = emu.account_id
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(ids(result, "customers")) == customers
    assert {r["account_id"] for r in result.records("customers")} == {account}
    assert "Stripe does not serve the endpoint GET /v1/account needed by the start-up " in (
        result.stderr
    )


def test_without_v1_account_and_account_id_the_user_is_told_to_set_it(tmp_path):
    with emulator() as emu:
        emu.unserve("GET /v1/account")
        result = run(emu, tmp_path, ("customers",))
    assert result.returncode == 1
    assert result.error_line == (
        "tap-stripe-connect: error: Could not tell which Stripe account the credential "
        "belongs to (it may not read GET /v1/account, or the server does not serve it): "
        "set setting 'account_id' to its id (acct_...)."
    )
    assert result.records() == []


# -- 5. lists out of newest-first order --


def test_a_list_out_of_newest_first_order_stops_with_an_error_and_no_duplicates(tmp_path):
    with emulator(objects=250) as emu:
        emu.scramble_order("customers")
        result = run(emu, tmp_path, ("customers",))
    assert result.returncode == 1
    assert re.fullmatch(
        r"tap-stripe-connect: error: Stripe listed GET /v1/customers out of its newest-first "
        r"order for stream 'customers' \(cus_\w+, created \d+, came after cus_\w+, created "
        r"\d+\); the tap relies on that order to read each object once, so it stops here "
        r"\(nothing past the last STATE is lost\)\. Run the tap again later\. " + REQUEST_ID,
        result.error_line,
    ), result.error_line
    emitted = ids(result, "customers")
    assert len(emitted) == len(set(emitted))
    assert not activated(result, "customers")


# -- 6. fields the schema lacks --

UNDECLARED = {"source": {"id": "card_123", "object": "card"}, "trace_id": "tr_9"}


def test_undeclared_fields_are_named_once_per_stream(tmp_path):
    with emulator() as emu:
        emu.add_undeclared("charges", **UNDECLARED)
        result = run(emu, tmp_path, ("charges", "customers"))
        charges = len(emu.objects("charges"))
    assert result.returncode == 0, result.stderr[-2000:]
    warning = (
        "Stream 'charges': Stripe sent fields the schema lacks (dropped; set setting "
        "'keep_undeclared_fields' to keep them in column '_sdc_extra'): source, trace_id."
    )
    assert result.stderr.count(warning) == 1, result.stderr[-3000:]
    assert "Stream 'customers': Stripe sent fields" not in result.stderr
    assert len(result.records("charges")) == charges
    assert "_sdc_extra" not in result.schemas()["charges"]["properties"]


def test_keep_undeclared_fields_declares_and_fills_an_extra_json_column(tmp_path):
    with emulator() as emu:
        emu.add_undeclared("charges", **UNDECLARED)
        discovered = run_tap(
            "--discover",
            config={"api_key": SECRET, "api_url": emu.url, "keep_undeclared_fields": True},
            tmp_path=tmp_path,
        )
        catalog = json.loads(discovered.stdout)
        reports = {report.name for report in REPORTS}  # Stripe's reports: fixed columns
        for entry in catalog["streams"]:
            extra = entry["schema"]["properties"].get("_sdc_extra")
            if entry["tap_stream_id"] in reports:
                assert extra is None
            else:
                assert extra == {"type": ["object", "null"]}
        select_streams(catalog, ("charges", "customers"))
        result = run_tap(
            config={"api_key": SECRET, "api_url": emu.url, "keep_undeclared_fields": True},
            catalog=catalog,
            tmp_path=tmp_path,
            timeout=120,
        )
        charges = len(emu.objects("charges"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "kept in column '_sdc_extra'): source, trace_id." in result.stderr
    records = result.records("charges")
    assert len(records) == charges
    assert all(r["_sdc_extra"] == UNDECLARED for r in records)
    assert all("trace_id" not in r for r in records)
    assert all(r["_sdc_extra"] is None for r in result.records("customers"))
    assert "_sdc_extra" in result.schemas()["charges"]["properties"]


# -- 8. the connection pool holds every worker's connection --


def test_the_connection_pool_holds_max_workers_connections(caplog):
    with emulator(objects=5) as emu:
        emu.set_latency(150)
        settings_ = Settings.from_config({"api_key": SECRET, "api_url": emu.url, "max_workers": 24})
        client = StripeClient(settings_, StripeKeyAuthenticator({"api_key": SECRET}))
        read = Read(Kind.ACCOUNT, "/v1/account", object="account")
        with caplog.at_level(logging.WARNING, logger="urllib3"):
            threads = [threading.Thread(target=client.call, args=(read,)) for _ in range(24)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            threads = [threading.Thread(target=client.call, args=(read,)) for _ in range(24)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        served = emu.request_count("/v1/account")
    assert served == 48
    assert not [r for r in caplog.records if "Connection pool is full" in r.getMessage()]


# -- the property: every object exactly once and exit 0, or non-zero naming the cause --

#: What the emulator can do to a sync of customers (with their payment methods).
ANSWERS = st.sampled_from(
    [
        ("ok", None),
        ("retriable", 503),
        ("throttled", 429),
        ("unknown_url", "GET /v1/customers/:id/payment_methods"),
        ("unknown_url", "GET /v1/customers"),
        ("out_of_order", "customers"),
        ("undeclared", "customers"),
        ("truncated", 200),
        ("rejected", 400),
    ]
)


def misbehave(emu: Emulator, answers: list[tuple[str, object]]) -> None:
    for kind, arg in answers:
        if kind in ("retriable", "throttled"):
            emu.inject(int(t_arg(arg)), count=2, path_prefix="/v1/customers")
        elif kind == "unknown_url":
            emu.unserve(str(arg))
        elif kind == "out_of_order":
            emu.scramble_order(str(arg))
        elif kind == "undeclared":
            emu.add_undeclared(str(arg), surprise="yes")
        elif kind == "truncated":
            emu.inject(200, count=1, path_prefix="/v1/customers", truncated=True)
        elif kind == "rejected":
            emu.inject(400, count=1, path_prefix="/v1/customers", should_retry=False)


def t_arg(value: object) -> int:
    return int(str(value))


@pytest.fixture(scope="module")
def shared_emulator():
    with emulator(objects=120) as emu:
        yield emu


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(ANSWERS, max_size=3))
def test_any_answer_sequence_gives_every_object_once_or_an_error_naming_the_cause(
    shared_emulator, tmp_path_factory, answers
):
    emu = shared_emulator
    emu.clear_faults()
    misbehave(emu, answers)
    try:
        result = run(emu, tmp_path_factory.mktemp("run"), ("customers", "payment_methods"))
    finally:
        emu.clear_faults()
    if result.returncode == 0:
        for stream in ("customers", "payment_methods"):
            emitted = ids(result, stream)
            assert len(emitted) == len(set(emitted)), stream
        assert sorted(ids(result, "customers")) == sorted(o["id"] for o in emu.objects("customers"))
        assert sorted(ids(result, "payment_methods")) == sorted(
            o["id"] for o in emu.objects("payment_methods")
        )
    else:
        assert result.error_line.startswith("tap-stripe-connect: error: "), result.stderr[-2000:]
        assert "Request-Id" in result.error_line or "setting" in result.error_line
        assert "Traceback" not in result.stderr


def test_a_failing_account_check_is_named_as_the_start_up_check_not_a_stream(tmp_path):
    with emulator(objects=5) as emu:
        emu.inject(503, count=50, path_prefix="/v1/account")
        result = run(emu, tmp_path, ("customers",), max_retries=1)
    assert result.returncode == 1
    assert re.fullmatch(
        r"tap-stripe-connect: error: Giving up on the start-up account check after 2 tries in "
        r"[\d.]+s: Stripe answered 503 \(.*\) for GET /v1/account, Request-Id req_\w+\. .*",
        result.error_line,
    ), result.error_line
    assert "stream 'account'" not in result.stderr
