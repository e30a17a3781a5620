"""The settings: their schema, every default, and one typed, frozen view of them.

Every default lives in `DEFAULTS`, which the JSON Schema the SDK validates with and
`Settings` both read; every date the tap reads (settings, bookmarks) is parsed by
`parse_time`, and every time it writes is formatted by `format_time`.
"""

from __future__ import annotations

import functools
import hashlib
import time
import typing as t
from dataclasses import dataclass
from datetime import datetime, timezone

from singer_sdk import typing as th

from tap_stripe_connect.errors import ConfigError
from tap_stripe_connect.versions import API_VERSIONS, DEFAULT_API_VERSION

#: Hosts plain http may be used with (a local emulator): credentials go over https elsewhere.
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

# Stripe's read limits: per account (test mode; live mode, less room for the account's
# other clients) and per endpoint.
TEST_RATE, LIVE_RATE, ENDPOINT_RATE = 25, 90, 25

DEFAULTS: dict[str, t.Any] = {
    "api_url": "https://api.stripe.com",
    # Each version offered has its schemas (`versions.py`); existing warehouses have this one.
    "api_version": DEFAULT_API_VERSION,
    "oauth_url": "https://connect.stripe.com",
    "event_lag_seconds": 60,
    # A day: longer than a schedule's period, so that an hourly run of a quiet account is
    # one read (its events), not three (docs/platforms.md, "Reads").
    "quiet_account_interval_seconds": 86400,
    "quiet_account_events_interval_seconds": 0,
    "request_timeout": 60,
    "max_retries": 8,
    "max_retry_seconds": 300,
    "max_workers": 32,
    # A platform run's units start 32 at once, then more while the CPU has room (see
    # sync/scheduler.py): ~30 keep it busy at 30 ms a response, ~250 at 300 ms.
    "max_workers_platform": 256,
    "max_requests_per_second_per_endpoint": ENDPOINT_RATE,
    "progress_interval_seconds": 10,
    "skip_unreadable_streams": False,
    "keep_undeclared_fields": False,
    "account_header": "auto",
    "account_list": "v1",
    "report_timeout_seconds": 3600,
    "report_runs_per_account": False,
}


def parse_time(value: str) -> int:
    """An ISO 8601 date or date-time (`Z` or an offset; UTC when it has none) -> Unix
    seconds. ValueError when it is not one."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp())


# Formatting times was ~10% of a sync's CPU. `gmtime` + `strftime` is ~2.5x faster than
# `datetime.fromtimestamp(...).strftime(...)`, and times recur within a page (an invoice's
# lines share its period, items their price's `created`): this bounded cache answers ~70%
# of the times of invoices and subscriptions.
@functools.lru_cache(maxsize=4096)
def format_time(seconds: int) -> str:
    """Unix seconds -> `2026-01-01T00:00:00Z` (RFC 3339, UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def is_time(value: t.Any) -> bool:
    """Whether `value` is a string `parse_time` reads."""
    if not isinstance(value, str):
        return False
    try:
        parse_time(value)
    except ValueError:
        return False
    return True


def parse_start_date(value: t.Any) -> int | None:
    """`start_date` as Unix seconds; a clear error names the setting when it is malformed."""
    if value in (None, ""):
        return None
    try:
        return parse_time(str(value))
    except ValueError:
        raise ConfigError(
            f"Setting 'start_date' is not a date: {str(value)[:40]!r}. "
            "Use an ISO 8601 date or date-time such as 2024-01-01 or 2024-01-01T00:00:00Z."
        ) from None


@dataclass(frozen=True)
class AccountShard:
    """`account_shard` "k/N": this run syncs the connected accounts of shard k of N.

    An account's shard is its id's SHA-256 modulo N (not Python's `hash()`, which is
    salted per process): it never moves while N is unchanged, whatever machine or run
    computes it, and the N shards are disjoint and hold every account between them.
    """

    index: int
    count: int

    @classmethod
    def parse(cls, value: t.Any) -> AccountShard:
        """ "3/16" -> AccountShard(3, 16); ValueError (a phrase naming the setting) else."""
        text = str(value).strip()
        index, slash, count = text.partition("/")
        if not (slash and index.strip().isdigit() and count.strip().isdigit()):
            raise ValueError(
                f"setting 'account_shard' must look like \"k/N\" (e.g. \"3/16\": shard 3 "
                f"of 16), not {text[:40]!r}"
            )
        shard = cls(int(index), int(count))
        if shard.count < 1:
            raise ValueError(
                f"setting 'account_shard' has {shard.count} shards: N must be 1 or more"
            )
        if not 1 <= shard.index <= shard.count:
            raise ValueError(
                f"setting 'account_shard' names shard {shard.index} of {shard.count}: shards "
                f"are numbered from 1, so k must be between 1 and {shard.count}"
            )
        return shard

    def holds(self, account_id: str) -> bool:
        return shard_of(account_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(account_id: str, count: int) -> int:
    """The shard (1..count) an account belongs to: stable across runs and machines."""
    digest = hashlib.sha256(account_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def parse_account_shard(value: t.Any) -> AccountShard | None:
    """`account_shard`, or None when unset; a clear error names the setting."""
    if value in (None, ""):
        return None
    try:
        return AccountShard.parse(value)
    except ValueError as exc:
        raise ConfigError(f"Invalid settings: {exc}.") from None


CONFIG_SCHEMA: dict[str, t.Any] = th.PropertiesList(
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
        default=DEFAULTS["api_url"],
        title="API URL",
        description="Base URL of Stripe's API (change it only to use an emulator).",
    ),
    th.Property(
        "api_version",
        th.StringType,
        default=DEFAULTS["api_version"],
        allowed_values=list(API_VERSIONS),
        title="API version",
        description=(
            "Stripe API version sent as `Stripe-Version` on every request, with the "
            "schemas generated for it: 2024-06-20 (default) or 2026-10-28.endive. "
            "Changing it changes columns: see the docs, How incremental sync works, API versions."
        ),
    ),
    th.Property(
        "account_id",
        th.StringType,
        title="Account ID",
        description=(
            "Connected account (acct_...) to read, sent as `Stripe-Account` (or as "
            "`Stripe-Context`, see `account_header`). Default: the key's own account."
        ),
    ),
    th.Property(
        "account_ids",
        th.ArrayType(th.StringType),
        title="Account IDs",
        description=(
            "Platforms: connected accounts (acct_...) to sync with the platform's key, "
            'each as its own partition; ["*"] syncs every connected account.'
        ),
    ),
    th.Property(
        "account_header",
        th.StringType,
        default=DEFAULTS["account_header"],
        allowed_values=["auto", "Stripe-Account", "Stripe-Context"],
        title="Account header",
        description=(
            "The header that addresses `account_id` and `account_ids`: Stripe-Account, or "
            "Stripe-Context, whose values may be paths (acct_parent/acct_child; "
            "`account_id` is then the context `account_ids` are relative to). auto "
            "(default): Stripe-Context for organization keys (sk_org_...), else "
            "Stripe-Account."
        ),
    ),
    th.Property(
        "account_list",
        th.StringType,
        default=DEFAULTS["account_list"],
        allowed_values=["v1", "v2"],
        title="Account list",
        description=(
            'Platforms, `account_ids: ["*"]`: list the connected accounts with GET '
            "/v1/accounts (v1, default) or GET /v2/core/accounts (v2: accounts created "
            "through Accounts v2; those with a merchant or recipient configuration are "
            "synced)."
        ),
    ),
    th.Property(
        "account_shard",
        th.StringType,
        title="Account shard",
        description=(
            'Platforms: "k/N" syncs only shard k (1 to N) of the accounts of `account_ids`, '
            "an account's shard being a stable hash of its id. Run the N shards as N "
            "processes or machines, each with its own state. Default: every account."
        ),
    ),
    th.Property(
        "client_id",
        th.StringType,
        title="Client ID",
        description=(
            "Stripe Connect: the platform's OAuth client id (ca_...); Stripe Apps: the "
            "app's client id (ca_...)."
        ),
    ),
    th.Property(
        "client_secret",
        th.StringType,
        secret=True,
        title="Client secret",
        description=(
            "Stripe Connect: the platform's secret key; Stripe Apps: the app's secret key. "
            "Used to exchange and refresh tokens."
        ),
    ),
    th.Property(
        "refresh_token",
        th.StringType,
        secret=True,
        title="Refresh token",
        description="Stripe Connect: the connected account's refresh token.",
    ),
    th.Property(
        "access_token",
        th.StringType,
        secret=True,
        title="Access token",
        description="Stripe Connect: a ready access token of the connected account.",
    ),
    th.Property(
        "credentials_file",
        th.StringType,
        title="Credentials file",
        description=(
            "Stripe Connect and Stripe Apps: JSON file written by `tap-stripe-connect "
            "connect` (its flow, account, tokens); a refresh token Stripe rotates is saved "
            "back here (mode 0600, under a lock). Default: "
            "~/.config/tap-stripe-connect/credentials.json ($XDG_CONFIG_HOME if set)."
        ),
    ),
    th.Property(
        "oauth_flow",
        th.StringType,
        allowed_values=["connect", "stripe_app"],
        title="OAuth flow",
        description=(
            "How `tap-stripe-connect connect` connects an account, and how a run refreshes "
            "its token: 'connect' (classic Stripe Connect OAuth, the default) or "
            "'stripe_app' (a Stripe App's OAuth 2.0 install link; 'client_id' is the app's "
            "ca_..., 'client_secret' its secret key). Default: the flow the credentials "
            "file records, else 'connect'."
        ),
    ),
    th.Property(
        "app_install_url",
        th.StringType,
        title="App install URL",
        description=(
            "Stripe Apps: the app's OAuth install link for test mode "
            "(https://marketplace.stripe.com/oauth/v2/chnlink_.../authorize). Default: the "
            "published app's link, https://marketplace.stripe.com/oauth/v2/authorize."
        ),
    ),
    th.Property(
        "oauth_url",
        th.StringType,
        default=DEFAULTS["oauth_url"],
        title="OAuth URL",
        description="Stripe Connect's OAuth base URL (change it only to use an emulator).",
    ),
    th.Property(
        "event_lag_seconds",
        th.IntegerType,
        default=DEFAULTS["event_lag_seconds"],
        title="Event lag seconds",
        description=(
            "Incremental syncs re-read events this many seconds before the bookmark, "
            "because Stripe's event list is eventually consistent."
        ),
    ),
    th.Property(
        "quiet_account_interval_seconds",
        th.IntegerType,
        default=DEFAULTS["quiet_account_interval_seconds"],
        title="Quiet account interval seconds",
        description=(
            "Stripe sends no event when a balance transaction or a Checkout Session is "
            "created: incremental syncs list those created since the last listing. In an "
            "account with no event at all since then, that listing waits until it is this "
            "many seconds old (Stripe's clock), so a run with nothing new costs one request "
            "per account when this is longer than the schedule's period; such objects then "
            "arrive up to this late (default: a day). 0: list on every run."
        ),
    ),
    th.Property(
        "quiet_account_events_interval_seconds",
        th.IntegerType,
        default=DEFAULTS["quiet_account_events_interval_seconds"],
        title="Quiet account events interval seconds",
        description=(
            "Platforms (`account_ids`): read a quiet connected account's events at most "
            "this often, a busy one's on every run. Quiet: its last events read found no "
            "event. Its events read (one request) then waits until its oldest bookmark is "
            "this many seconds old by Stripe's clock, and its bookmarks stay put, so nothing "
            "is lost: a change in a quiet account arrives up to this late, and the first "
            "event read makes the account busy (read every run) again. Stripe allots "
            "reads by transactions: hourly runs of 10,000 quiet accounts at one read each are "
            "7.2 million reads a month; with 21600 (6 hours) and "
            "quiet_account_interval_seconds 86400, 1.8 million. At most 604800 (7 days: "
            "Stripe keeps events 30 days). 0 (default): every account every run."
        ),
    ),
    th.Property(
        "request_timeout",
        th.IntegerType,
        default=DEFAULTS["request_timeout"],
        title="Request timeout",
        description="Seconds to wait for one Stripe response before retrying.",
    ),
    th.Property(
        "max_retries",
        th.IntegerType,
        default=DEFAULTS["max_retries"],
        title="Max retries",
        description=("Retries of one request after 429, 409, 5xx, timeouts and connection errors."),
    ),
    th.Property(
        "max_retry_seconds",
        th.NumberType,
        default=DEFAULTS["max_retry_seconds"],
        title="Max retry seconds",
        description="Longest total time spent retrying one request before giving up.",
    ),
    th.Property(
        "max_workers",
        th.IntegerType,
        title="Max workers",
        description=(
            "Requests in flight at once, across streams, `created` windows and child "
            "lists. 1 reads everything sequentially. Default: 32; with `account_ids` "
            "(a platform), 256, of which 32 start at once and the rest only while the "
            "CPU has room (Stripe's slower answers leave it idle)."
        ),
    ),
    th.Property(
        "max_requests_per_second",
        th.NumberType,
        title="Max requests per second",
        description=(
            "The account's request budget. Default: 25 for test-mode keys, 90 for live "
            "keys (Stripe allows 25 and 100; 90 leaves room for the account's other "
            "clients: set 100 when the tap is the only one)."
        ),
    ),
    th.Property(
        "max_requests_per_second_per_endpoint",
        th.NumberType,
        default=DEFAULTS["max_requests_per_second_per_endpoint"],
        title="Max requests per second per endpoint",
        description="Budget for each endpoint, such as GET /v1/charges (Stripe allows 25).",
    ),
    th.Property(
        "max_requests_per_second_total",
        th.NumberType,
        title="Max requests per second in total",
        description=(
            "A cap on the requests of a whole run, across every connected account (each "
            "account also keeps its own budget). Off by default: Stripe counts its limits "
            "per account; set it when the platform's requests for its connected accounts "
            "must stay under one figure."
        ),
    ),
    th.Property(
        "progress_interval_seconds",
        th.NumberType,
        default=DEFAULTS["progress_interval_seconds"],
        title="Progress interval seconds",
        description=(
            "Seconds between progress lines (per stream: records so far, records/s, "
            "requests, retries). 0 turns them off; the summary table at the end stays."
        ),
    ),
    th.Property(
        "skip_unreadable_streams",
        th.BooleanType,
        default=DEFAULTS["skip_unreadable_streams"],
        title="Skip unreadable streams",
        description=(
            "Restricted keys (rk_...) are checked before a sync: by default a selected "
            "stream the key may not read stops the run, naming every such stream and "
            "the permission it needs. True skips those streams, with a warning each."
        ),
    ),
    th.Property(
        "report_timeout_seconds",
        th.IntegerType,
        default=DEFAULTS["report_timeout_seconds"],
        title="Report timeout seconds",
        description=(
            "How long the report streams wait for one of Stripe's report runs to finish "
            "(Stripe computes reports in seconds to minutes). A run still pending then ends "
            "the sync with an error; the next sync resumes at the last interval loaded."
        ),
    ),
    th.Property(
        "report_runs_per_account",
        th.BooleanType,
        default=DEFAULTS["report_runs_per_account"],
        title="Report runs per account",
        description=(
            "A platform's report_balance_summary needs one of Stripe's report runs per "
            "connected account and report interval (about 3 requests each, on the "
            "platform's own rate limit: hours for thousands of accounts' history). False: "
            "in a platform run the stream is skipped with a warning and its bookmark stays; "
            "true: the runs are made (the platform's reconciliation needs them). Single "
            "accounts always run it."
        ),
    ),
    th.Property(
        "keep_undeclared_fields",
        th.BooleanType,
        default=DEFAULTS["keep_undeclared_fields"],
        title="Keep undeclared fields",
        description=(
            "Fields Stripe sends that the stream's schema lacks (a newer API version, a "
            "new feature) are named in a warning once per stream; targets drop them. True "
            "adds a JSON column `_sdc_extra` to every stream's schema (at discovery) that "
            "holds them."
        ),
    ),
).to_dict()


def default_workers(config: t.Mapping[str, t.Any]) -> int:
    """`max_workers` when not set: a platform's runs have far more units to overlap."""
    return DEFAULTS["max_workers_platform" if config.get("account_ids") else "max_workers"]


@dataclass(frozen=True)
class Settings:
    """The settings a run reads, with their defaults, typed once."""

    api_key: str
    api_url: str
    api_version: str
    account_id: str | None
    account_ids: tuple[str, ...]
    #: Only the connected accounts of this shard are synced (None: every one).
    account_shard: AccountShard | None
    #: The header that addresses accounts: "auto", "Stripe-Account" or "Stripe-Context"
    #: (the client resolves "auto", see api/context.py).
    account_header: str
    #: The list `account_ids: ["*"]` reads: "v1" (`/v1/accounts`) or "v2" (`/v2/core/accounts`).
    account_list: str
    start_timestamp: int | None
    event_lag_seconds: int
    #: How old a listing of objects created without an event may grow in a quiet account.
    quiet_account_interval_seconds: int
    #: How long a quiet connected account's events read may wait (0: read every run).
    quiet_account_events_interval_seconds: int
    request_timeout: int
    max_retries: int
    max_retry_seconds: float
    max_workers: int
    max_requests_per_second: float | None
    max_requests_per_second_per_endpoint: float
    #: A cap across every account of a run (None: each account's own budget only).
    max_requests_per_second_total: float | None
    progress_interval_seconds: float
    skip_unreadable_streams: bool
    report_timeout_seconds: float = DEFAULTS["report_timeout_seconds"]
    #: A platform's reports of one account each (report_balance_summary): run, or skip.
    report_runs_per_account: bool = DEFAULTS["report_runs_per_account"]

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any]) -> Settings:
        def get(name: str) -> t.Any:
            value = config.get(name)
            return DEFAULTS.get(name) if value is None else value

        rate = config.get("max_requests_per_second")
        return cls(
            api_key=str(config.get("api_key") or ""),
            api_url=str(get("api_url")).rstrip("/"),
            api_version=str(get("api_version")),
            account_id=str(config["account_id"]) if config.get("account_id") else None,
            account_ids=tuple(str(a) for a in config.get("account_ids") or ()),
            account_shard=parse_account_shard(config.get("account_shard")),
            account_header=str(get("account_header")),
            account_list=str(get("account_list")),
            start_timestamp=parse_start_date(config.get("start_date")),
            event_lag_seconds=int(get("event_lag_seconds")),
            quiet_account_interval_seconds=int(get("quiet_account_interval_seconds")),
            quiet_account_events_interval_seconds=int(
                get("quiet_account_events_interval_seconds")
            ),
            request_timeout=int(get("request_timeout")),
            max_retries=int(get("max_retries")),
            max_retry_seconds=float(get("max_retry_seconds")),
            # 0 is refused by the settings check; a None that slipped through is the default.
            max_workers=max(1, int(config.get("max_workers") or default_workers(config))),
            max_requests_per_second=float(rate) if rate else None,
            max_requests_per_second_per_endpoint=float(
                config.get("max_requests_per_second_per_endpoint") or ENDPOINT_RATE
            ),
            max_requests_per_second_total=(
                float(total) if (total := config.get("max_requests_per_second_total")) else None
            ),
            progress_interval_seconds=float(get("progress_interval_seconds")),
            skip_unreadable_streams=bool(get("skip_unreadable_streams")),
            report_timeout_seconds=float(get("report_timeout_seconds")),
            report_runs_per_account=bool(get("report_runs_per_account")),
        )

    @property
    def live(self) -> bool:
        """Live keys have a larger rate budget than test-mode keys."""
        return "_live_" in self.api_key

    @property
    def restricted(self) -> bool:
        return self.api_key.startswith("rk_")

    def account_rate(self, livemode: bool = False) -> float:
        """The request budget of one account (Stripe counts per account)."""
        if self.max_requests_per_second:
            return self.max_requests_per_second
        return float(LIVE_RATE if self.live or livemode else TEST_RATE)
