"""singer-sdk's standard tap tests, run against the emulator over HTTP."""

from __future__ import annotations

import pytest
from singer_sdk.testing import get_tap_test_class

from tap_stripe_connect.tap import TapStripeConnect
from tests.emulator import DEFAULT_KEY, Emulator

# The SDK builds the test class (and a tap, to list the streams) at import time, from
# this dict; its tests read the dict when they run. The emulator starts only then
# (`emulator_url`), so collecting the suite starts no server.
_CONFIG = {"api_key": DEFAULT_KEY, "api_url": "http://127.0.0.1:9", "max_retry_seconds": 10}

#: The SDK's attribute tests warn "No records were available to test" when every value of
#: a field is null, and so test nothing; the suite makes that warning an error, except for
#: these fields, null in every object of a full sync for a reason.
NO_VALUES_EXPECTED = {
    "test_tap_stream_attribute_is_datetime[accounts._sdc_deleted_at]": (
        "set only by a deletion event, and a first sync reads no events"
    ),
    "test_tap_stream_attribute_is_numeric[balance_transactions.exchange_rate]": (
        "the emulator's balance transactions are all in the account's own currency"
    ),
}


@pytest.fixture(scope="module", autouse=True)
def emulator_url():
    with Emulator(objects=30, seed=3) as emu:
        assert emu.api_key == _CONFIG["api_key"]
        _CONFIG["api_url"] = emu.url
        yield emu.url


def _every_stream_selected() -> dict:
    """The catalog with every stream selected: the SDK's tests read each stream, and some
    (`payment_methods`, a request per customer) are not selected by default."""
    catalog = TapStripeConnect(config=_CONFIG).catalog_dict
    for entry in catalog["streams"]:
        for metadata in entry["metadata"]:
            if metadata["breadcrumb"] == []:
                metadata["metadata"]["selected"] = True
    return catalog


TestTapStripeConnect = get_tap_test_class(
    tap_class=TapStripeConnect,
    config=_CONFIG,
    catalog=_every_stream_selected(),
)


def test_the_sdk_tests_read_the_emulator_started_for_them(emulator_url):
    assert _CONFIG["api_url"] == emulator_url
