"""The CLI end to end against the emulator over HTTP: what a Meltano user sees."""

from __future__ import annotations

import json
import socket
from collections import Counter

import jsonschema
import pytest

from tests.conftest import emulator_config, run_tap
from tests.emulator import Emulator

CORE = ("charges", "customers", "invoices", "subscriptions")


def test_about_lists_settings_and_marks_secrets(tmp_path):
    run = run_tap("--about", "--format=json", tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr
    about = json.loads(run.stdout)
    settings = about["settings"]["properties"]
    for name in ("api_key", "start_date", "api_url", "api_version", "account_id"):
        assert name in settings
    assert settings["api_key"].get("secret") is True
    assert settings["api_version"]["default"] == "2024-06-20"


def test_discover_lists_the_core_streams_with_id_keys(tmp_path):
    run = run_tap("--discover", tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr
    catalog = json.loads(run.stdout)
    streams = {s["tap_stream_id"]: s for s in catalog["streams"]}
    for name in (*CORE, "invoice_line_items", "subscription_items"):
        assert name in streams
        assert streams[name]["key_properties"] == ["account_id", "id"]


@pytest.fixture(scope="module")
def big_emulator():
    with Emulator(objects=5000, seed=5) as emu:
        yield emu


def test_full_sync_emits_every_object_exactly_once_with_valid_records(big_emulator, tmp_path):
    run = run_tap(config=emulator_config(big_emulator), tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    schemas = run.schemas()
    for stream in CORE:
        expected = {o["id"] for o in big_emulator.objects(stream)}
        assert len(expected) == 5000
        emitted = Counter(r["id"] for r in run.records(stream))
        assert set(emitted) == expected, stream
        assert max(emitted.values()) == 1, f"{stream} emitted an object twice"
        validator = jsonschema.Draft7Validator(schemas[stream])
        for record in run.records(stream)[:300]:
            validator.validate(record)
    # Every line of every invoice, including those past the 10 Stripe embeds.
    expected_lines = {line["id"] for line in big_emulator.objects("invoice_line_items")}
    emitted_lines = Counter(r["id"] for r in run.records("invoice_line_items"))
    assert set(emitted_lines) == expected_lines
    assert max(emitted_lines.values()) == 1
    assert run.last_state["bookmarks"]["charges"]["replication_key_value"]


def test_config_from_environment_variables(emulator, tmp_path):
    env = {
        "TAP_STRIPE_CONNECT_API_KEY": emulator.api_key,
        "TAP_STRIPE_CONNECT_API_URL": emulator.url,
    }
    run = run_tap("--config", "ENV", env=env, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(run.records("customers")) == len(emulator.objects("customers"))


def test_catalog_selects_streams(emulator, tmp_path):
    config = emulator_config(emulator)
    catalog = json.loads(run_tap("--discover", config=config, tmp_path=tmp_path).stdout)
    for entry in catalog["streams"]:
        for md in entry["metadata"]:
            if md["breadcrumb"] == []:
                md["metadata"]["selected"] = entry["tap_stream_id"] == "customers"
    before = len(emulator.requests)  # the module's emulator: earlier tests' requests too
    run = run_tap(config=config, catalog=catalog, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert {m["stream"] for m in run.messages if m["type"] == "RECORD"} == {"customers"}
    paths = {r.path for r in emulator.requests[before:]}
    assert "/v1/customers" in paths
    # Nothing of an unselected stream is read: only customers, and what every run reads.
    assert {p for p in paths if not p.startswith(("/v1/customers", "/v1/events"))} <= {
        "/v1/account"
    }, paths


def assert_one_clear_line(run, *, must_mention, secret):
    assert run.returncode != 0
    assert run.error_line, run.stderr[-2000:]
    for word in must_mention:
        assert word in run.error_line, run.error_line
    assert secret not in run.stdout
    assert secret not in run.stderr
    assert "Traceback" not in run.stderr
    assert not run.records()


def test_bad_key_ends_with_one_clear_line(emulator, tmp_path):
    bad = "sk_test_thisKeyDoesNotExist9876"
    run = run_tap(config=emulator_config(emulator, api_key=bad), tmp_path=tmp_path)
    assert_one_clear_line(run, must_mention=["'api_key'", "Request-Id req_"], secret=bad)
    assert "9876" not in run.stderr


def test_publishable_key_is_refused_before_any_request(emulator, tmp_path):
    pk = "pk_test_publishableKey12345"
    before = len(emulator.requests)
    run = run_tap(config=emulator_config(emulator, api_key=pk), tmp_path=tmp_path)
    assert_one_clear_line(run, must_mention=["'api_key'", "publishable"], secret=pk)
    assert len(emulator.requests) == before


def test_restricted_key_without_a_stream_names_it(tmp_path):
    rk = "rk_test_noInvoicesAllowed4242"
    with Emulator(objects=20, seed=2, api_keys={rk: {"charges", "customers"}}) as emu:
        run = run_tap(config=emulator_config(emu, api_key=rk), tmp_path=tmp_path)
    assert run.returncode != 0
    assert "stream 'invoices'" in run.error_line or "stream 'subscriptions'" in run.error_line
    assert "permission" in run.error_line
    assert rk not in run.stdout + run.stderr
    assert "4242" not in run.stderr


def test_bad_start_date_names_the_setting(emulator, tmp_path):
    run = run_tap(config=emulator_config(emulator, start_date="yesterday-ish"), tmp_path=tmp_path)
    assert_one_clear_line(run, must_mention=["start_date"], secret=emulator.api_key)


def test_unreachable_api_url_names_the_setting(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = {
        "api_key": "sk_test_unreachable55",
        "api_url": f"http://127.0.0.1:{port}",
        "max_retries": 1,
        "max_retry_seconds": 2,
    }
    run = run_tap(config=config, tmp_path=tmp_path)
    assert_one_clear_line(
        run, must_mention=["'api_url'", f"127.0.0.1:{port}"], secret="unreachable55"
    )
