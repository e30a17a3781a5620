"""Bad settings, STATE and catalogs: one clear line, a non-zero exit, nothing on stdout.

Every case runs the real CLI. Each must end with exactly one `tap-stripe-connect: error:`
line that names what is wrong (the setting, STATE entry or stream), no traceback, no
Singer message on stdout, and no request to Stripe. `no_secret_leaks` (conftest) checks
every output for the key; a secret given with the wrong type is checked here too.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import TapRun, record_output, run_tap
from tests.emulator import Emulator
from tests.test_faults import ALL, SECRET, core_catalog


@pytest.fixture(scope="module")
def emu():
    with Emulator(objects=20, seed=3, api_keys={SECRET: None}) as emulator:
        yield emulator


def base(emu: Emulator, **extra) -> dict:
    return {"api_key": SECRET, "api_url": emu.url, "max_retry_seconds": 2, **extra}


def assert_refused(emu: Emulator, result: TapRun, *words: str) -> None:
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("tap-stripe-connect:")]
    assert result.returncode != 0
    assert len(errors) == 1, result.stderr[-2000:]
    for word in words:
        assert word in errors[0], errors[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == "", result.stdout[:500]
    assert not emu.requests, "a request was sent despite the bad input"


@pytest.fixture(autouse=True)
def _fresh_log(emu):
    emu.clear_requests()


BAD_SETTINGS = {
    "wrong_type": ({"max_retries": "many"}, ["'max_retries'", "an integer", "a string"]),
    "wrong_type_number": ({"max_retry_seconds": [5]}, ["'max_retry_seconds'", "a number"]),
    "bad_date": ({"start_date": "2024-13-45"}, ["'start_date'", "not a date"]),
    "not_a_date_at_all": ({"start_date": "yesterday-ish"}, ["'start_date'"]),
    "date_of_wrong_type": ({"start_date": 20240101}, ["'start_date'", "a string"]),
    "typo": ({"api_kye": "x"}, ["unknown setting 'api_kye'", "did you mean 'api_key'"]),
    "unknown": ({"colour": "blue"}, ["unknown setting 'colour'"]),
    "zero_timeout": ({"request_timeout": 0}, ["'request_timeout'", "more than 0"]),
    "negative_retries": ({"max_retries": -1}, ["'max_retries'", "at least 0"]),
    "no_workers": ({"max_workers": 0}, ["'max_workers'", "at least 1"]),
    "short_event_lag": (
        {"event_lag_seconds": 2},
        ["'event_lag_seconds'", "at least 5, not 2", "eventually consistent"],
    ),
    "plain_http": ({"api_url": "http://api.stripe.com"}, ["'api_url'", "https"]),
    "not_a_url": ({"api_url": "api.stripe.com"}, ["'api_url'", "URL"]),
    "empty_key": ({"api_key": ""}, ["'api_key'", "empty"]),
    "blank_key": ({"api_key": "   "}, ["'api_key'", "empty"]),
    "publishable_key": ({"api_key": "pk_test_publishable0123456789"}, ["'api_key'", "publishable"]),
    "not_a_key": ({"api_key": "hello-this-is-no-key"}, ["'api_key'"]),
    "several": (
        {"max_retries": "x", "api_kye": "y", "request_timeout": -5},
        ["'max_retries'", "'api_kye'", "'request_timeout'"],
    ),
}


@pytest.mark.parametrize("case", BAD_SETTINGS)
def test_bad_settings_end_with_one_line_naming_the_setting(emu, tmp_path, case):
    settings, words = BAD_SETTINGS[case]
    result = run_tap(config=base(emu, **settings), tmp_path=tmp_path)
    assert_refused(emu, result, "error:", *words)


def test_a_secret_of_the_wrong_type_is_not_repeated(emu, tmp_path):
    secret = 4242424242424242
    result = run_tap(config=base(emu, api_key=secret), tmp_path=tmp_path)
    assert_refused(emu, result, "'api_key'", "a string", "not an integer")
    assert str(secret) not in result.stderr


def test_a_missing_key_is_named(emu, tmp_path):
    config = base(emu)
    del config["api_key"]
    result = run_tap(config=config, tmp_path=tmp_path)
    assert_refused(emu, result, "'api_key'")


def test_settings_singer_sdk_adds_are_accepted(emu, tmp_path):
    extra = {
        "stream_maps": {},
        "stream_map_config": {},
        "flattening_enabled": False,
        "flattening_max_depth": 1,
        "faker_config": {"seed": 1},
    }
    result = run_tap(
        config=base(emu, **extra), catalog=json.loads(core_catalog()), tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert {m["stream"] for m in result.messages if m["type"] == "RECORD"} <= set(ALL)


def test_discovery_warns_about_an_unknown_setting_but_works(emu, tmp_path):
    result = run_tap("--discover", config=base(emu, api_kye="x"), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "unknown setting 'api_kye'" in result.stderr
    assert json.loads(result.stdout)["streams"]


BAD_STATES = {
    "list": ([1, 2], ["STATE", "a list", "not a JSON object"]),
    "string": ("bookmarks", ["STATE", "a string"]),
    "bookmarks_list": ({"bookmarks": []}, ["'bookmarks'", "a list"]),
    "stream_not_object": ({"bookmarks": {"charges": 5}}, ["bookmarks.charges", "an integer"]),
    "bookmark_not_a_date": (
        {"bookmarks": {"charges": {"replication_key": "updated", "replication_key_value": "x"}}},
        ["bookmarks.charges.replication_key_value", "not a date-time"],
    ),
    "bookmark_a_number": (
        {"bookmarks": {"customers": {"replication_key_value": 1700000000}}},
        ["bookmarks.customers.replication_key_value", "an integer"],
    ),
    "table_version_text": (
        {"bookmarks": {"customers": {"table_version": "v1"}}},
        ["bookmarks.customers.table_version"],
    ),
    "listing_bad": (
        {"bookmarks": {"charges": {"listing": {"started": 5, "done": [[3]]}}}},
        ["bookmarks.charges.listing.done"],
    ),
    "listing_no_start": (
        {"bookmarks": {"charges": {"listing": {"done": []}}}},
        ["bookmarks.charges.listing.started"],
    ),
    "partitions_not_list": (
        {"bookmarks": {"charges": {"partitions": {}}}},
        ["bookmarks.charges.partitions"],
    ),
    "partition_bad_date": (
        {
            "bookmarks": {
                "charges": {
                    "partitions": [
                        {"context": {"account_id": "acct_1"}, "replication_key_value": "soon"}
                    ]
                }
            }
        },
        ["bookmarks.charges.partitions[0].replication_key_value"],
    ),
    "account_row_not_times": (
        {"accounts": {"streams": ["charges"], "bookmarks": {"acct_1": ["2026-01-01", 0]}}},
        ["accounts.bookmarks.acct_1", "Unix times"],
    ),
    "account_row_longer_than_streams": (
        {"accounts": {"streams": ["charges"], "bookmarks": {"acct_1": [1767225600, 0, 0]}}},
        ["accounts.bookmarks.acct_1", "1 streams"],
    ),
    "account_listing_bad": (
        {"accounts": {"units": {"acct_1": {"charges": {"listing": {"done": []}}}}}},
        ["accounts.units.acct_1.charges.listing.started"],
    ),
    "quiet_accounts_not_object": (
        {"accounts": {"streams": [], "bookmarks": {}, "quiet": ["acct_1"]}},
        ["accounts.quiet", "not an object"],
    ),
}


@pytest.mark.parametrize("case", BAD_STATES)
def test_a_malformed_state_ends_with_one_line_naming_the_entry(emu, tmp_path, case):
    state, words = BAD_STATES[case]
    (tmp_path / "state.json").write_text(json.dumps(state))
    result = run_tap("--state", str(tmp_path / "state.json"), config=base(emu), tmp_path=tmp_path)
    assert_refused(emu, result, *words, "--state")


@pytest.mark.parametrize(
    ("flag", "name"), [("--state", "STATE"), ("--catalog", "catalog"), ("--config", "settings")]
)
@pytest.mark.parametrize("content", ["not json at all", '{"cut": "short', ""])
def test_a_file_that_is_not_json_ends_with_one_line_naming_it(emu, tmp_path, flag, name, content):
    path = tmp_path / "input.json"
    path.write_text(content)
    args = [flag, str(path)]
    config = None if flag == "--config" else base(emu)
    result = run_tap(*args, config=config, tmp_path=tmp_path)
    record_output(base(emu), None, result.stdout, result.stderr)
    assert_refused(emu, result, f"The {name} file", str(path), "not valid JSON")


def test_a_missing_state_file_is_named(emu, tmp_path):
    missing = tmp_path / "nowhere" / "state.json"
    result = run_tap("--state", str(missing), config=base(emu), tmp_path=tmp_path)
    assert_refused(emu, result, "STATE", str(missing))


def catalog_selecting(*names: str) -> dict:
    catalog = json.loads(core_catalog())
    for name in names:
        catalog["streams"].append(
            {
                "tap_stream_id": name,
                "stream": name,
                "schema": {"type": "object", "properties": {}},
                "metadata": [{"breadcrumb": [], "metadata": {"selected": True}}],
            }
        )
    return catalog


def test_a_catalog_selecting_unknown_streams_names_them(emu, tmp_path):
    result = run_tap(
        config=base(emu), catalog=catalog_selecting("charge", "refundz"), tmp_path=tmp_path
    )
    assert_refused(emu, result, "'charge'", "'refundz'", "--discover")


def test_an_unknown_stream_the_catalog_does_not_select_is_ignored(emu, tmp_path):
    catalog = catalog_selecting("old_stream")
    catalog["streams"][-1]["metadata"][0]["metadata"]["selected"] = False
    result = run_tap(config=base(emu), catalog=catalog, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize(
    "catalog",
    [{"streams": {}}, {"streams": [5]}, {"streams": [{"metadata": []}]}, {"entries": []}],
)
def test_a_catalog_of_the_wrong_shape_ends_with_one_line(emu, tmp_path, catalog):
    result = run_tap(config=base(emu), catalog=catalog, tmp_path=tmp_path)
    assert_refused(emu, result, "atalog", "--discover")
