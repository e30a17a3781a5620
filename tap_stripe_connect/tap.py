"""The tap: its settings and its streams."""

from __future__ import annotations

import collections
import functools
import threading
import typing as t
from datetime import datetime, timezone

from singer_sdk import Tap
from singer_sdk import typing as th

from tap_stripe_connect.auth import StripeKeyAuthenticator, secrets_in
from tap_stripe_connect.client import StripeClock, StripeSession
from tap_stripe_connect.errors import ConfigError, register_secrets
from tap_stripe_connect.streams import stream_classes

if t.TYPE_CHECKING:
    import requests

DEFAULT_API_VERSION = "2024-06-20"


def parse_start_date(value: t.Any) -> int | None:
    """`start_date` as Unix seconds; a clear error names the setting when it is malformed."""
    if value in (None, ""):
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"Setting 'start_date' is not a date: {str(value)[:40]!r}. "
            "Use an ISO 8601 date or date-time such as 2024-01-01 or 2024-01-01T00:00:00Z."
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp())


class TapStripeConnect(Tap):
    """Stripe payments and billing data, kept equal to Stripe."""

    name = "tap-stripe-connect"

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_key",
            th.StringType,
            secret=True,
            title="API key",
            description=(
                "Stripe secret key (sk_...) or restricted key (rk_...) with read access to "
                "the selected streams."
            ),
        ),
        th.Property(
            "start_date",
            th.DateTimeType,
            title="Start date",
            description=(
                "Only objects created at or after this time are synced. Default: all history."
            ),
        ),
        th.Property(
            "api_url",
            th.StringType,
            default="https://api.stripe.com",
            title="API URL",
            description="Base URL of Stripe's API (change it only to use an emulator).",
        ),
        th.Property(
            "api_version",
            th.StringType,
            default=DEFAULT_API_VERSION,
            title="API version",
            description=(
                "Stripe API version sent as `Stripe-Version` on every request; the schemas "
                "are generated for 2024-06-20."
            ),
        ),
        th.Property(
            "account_id",
            th.StringType,
            title="Account ID",
            description=(
                "Connected account (acct_...) to read, sent as `Stripe-Account`. Default: "
                "the key's own account."
            ),
        ),
        th.Property(
            "event_lag_seconds",
            th.IntegerType,
            default=60,
            title="Event lag seconds",
            description=(
                "Incremental syncs re-read events this many seconds before the bookmark, "
                "because Stripe's event list is eventually consistent."
            ),
        ),
        th.Property(
            "request_timeout",
            th.IntegerType,
            default=60,
            title="Request timeout",
            description="Seconds to wait for one Stripe response before retrying.",
        ),
        th.Property(
            "max_retries",
            th.IntegerType,
            default=8,
            title="Max retries",
            description=(
                "Retries of one request after 429, 409, 5xx, timeouts and connection errors."
            ),
        ),
        th.Property(
            "max_retry_seconds",
            th.NumberType,
            default=300,
            title="Max retry seconds",
            description="Longest total time spent retrying one request before giving up.",
        ),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        register_secrets(secrets_in(self.config))
        self.clock = StripeClock()
        self.requests_by_stream: collections.Counter[str] = collections.Counter()
        self.retries_by_stream: collections.Counter[str] = collections.Counter()
        self._count_lock = threading.Lock()

    def discover_streams(self) -> list:
        return [cls(tap=self) for cls in stream_classes()]

    @functools.cached_property
    def start_timestamp(self) -> int | None:
        return parse_start_date(self.config.get("start_date"))

    @functools.cached_property
    def authenticator(self) -> StripeKeyAuthenticator:
        return StripeKeyAuthenticator(self.config)

    @functools.cached_property
    def requests_session(self) -> StripeSession:
        return StripeSession(on_request=self._on_request)

    @property
    def account_id(self) -> str | None:
        return t.cast("str | None", self.config.get("account_id"))

    def _on_request(self, request: requests.PreparedRequest) -> None:
        path = (request.path_url or "").split("?")[0]
        with self._count_lock:
            self.requests_by_stream[path] += 1

    def count_retry(self, stream_name: str) -> None:
        with self._count_lock:
            self.retries_by_stream[stream_name] += 1

    def sync_all(self) -> None:
        # Check the settings the SDK's JSON Schema cannot express before any request.
        _ = self.authenticator
        _ = self.start_timestamp
        super().sync_all()


if __name__ == "__main__":
    TapStripeConnect.cli()
