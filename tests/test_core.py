"""singer-sdk's standard tap tests, run against the emulator over HTTP."""

from __future__ import annotations

import atexit

from singer_sdk.testing import get_tap_test_class

from tap_stripe_connect.tap import TapStripeConnect
from tests.emulator import Emulator

# The SDK builds the test class at import time, so the emulator starts here too.
_EMULATOR = Emulator(objects=30, seed=3)
_EMULATOR.start()
atexit.register(_EMULATOR.stop)

_CONFIG = {"api_key": _EMULATOR.api_key, "api_url": _EMULATOR.url, "max_retry_seconds": 10}


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
