"""The tap: its settings and its streams."""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import re
import threading
import typing as t
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timezone

from singer_sdk import Tap
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError

from tap_stripe_connect.auth import (
    StripeKeyAuthenticator,
    StripeOAuthAuthenticator,
    build_authenticator,
    is_live_key,
    secrets_in,
)
from tap_stripe_connect.client import StripeClock, StripeSession
from tap_stripe_connect.concurrency import STRIPE_EPOCH, CpuLoad, LockedStateWriter, LockedWriter
from tap_stripe_connect.errors import (
    ConfigError,
    StripePermissionError,
    TapError,
    install_redaction,
    register_secrets,
)
from tap_stripe_connect.inputs import check_catalog, check_state, config_problems
from tap_stripe_connect.limiter import RateLimiter, endpoint_of
from tap_stripe_connect.permissions import check_permissions
from tap_stripe_connect.progress import DEFAULT_INTERVAL as DEFAULT_PROGRESS_INTERVAL
from tap_stripe_connect.progress import Progress
from tap_stripe_connect.streams import probe, stream_classes
from tap_stripe_connect.versions import API_VERSIONS, DEFAULT_API_VERSION, unsupported

if t.TYPE_CHECKING:
    from collections.abc import Iterator

    import requests
    from singer_sdk.streams import Stream

# Stripe's read limits: per account (test mode, live mode) and per endpoint.
TEST_RATE, LIVE_RATE, ENDPOINT_RATE = 25.0, 90.0, 25.0
# Share of a CPU a sync must have used over the last 50 ms for no other stream to start.
STREAM_START_BUSY = 0.5


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


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Run CPython's cycle collector less often while a sync lasts; undone at the end.

    A sync allocates trees of dicts and lists (parsed pages) that hold no reference
    cycles, yet with the default threshold (a collection every 700 allocations) the
    collector ran ~600 times in a 20,000-record sync and took ~18% of its CPU, mostly
    walking the catalog, schemas and modules again. Those are frozen (left out of
    collections), and young objects are collected every 20,000 allocations instead.
    """
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(20_000, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


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
            allowed_values=list(API_VERSIONS),
            title="API version",
            description=(
                "Stripe API version sent as `Stripe-Version` on every request, with the "
                "schemas generated for it: 2024-06-20 (default) or 2026-10-28.endive. "
                "Changing it changes columns: see the README's API versions."
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
            "account_ids",
            th.ArrayType(th.StringType),
            title="Account IDs",
            description=(
                "Platforms: connected accounts (acct_...) to sync with the platform's key, "
                'each as its own partition; ["*"] syncs every connected account.'
            ),
        ),
        th.Property(
            "client_id",
            th.StringType,
            title="Client ID",
            description="Stripe Connect: the platform's OAuth client id (ca_...).",
        ),
        th.Property(
            "client_secret",
            th.StringType,
            secret=True,
            title="Client secret",
            description="Stripe Connect: the platform's secret key, used to refresh tokens.",
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
                "Stripe Connect: JSON file written by `tap-stripe-connect connect`; a refresh "
                "token Stripe rotates is saved back here (mode 0600)."
            ),
        ),
        th.Property(
            "oauth_url",
            th.StringType,
            default="https://connect.stripe.com",
            title="OAuth URL",
            description="Stripe Connect's OAuth base URL (change it only to use an emulator).",
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
        th.Property(
            "max_workers",
            th.IntegerType,
            default=32,
            title="Max workers",
            description=(
                "Requests in flight at once, across streams, `created` windows and child "
                "lists. 1 reads everything sequentially."
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
            default=25,
            title="Max requests per second per endpoint",
            description="Budget for each endpoint, such as GET /v1/charges (Stripe allows 25).",
        ),
        th.Property(
            "progress_interval_seconds",
            th.NumberType,
            default=DEFAULT_PROGRESS_INTERVAL,
            title="Progress interval seconds",
            description=(
                "Seconds between progress lines (per stream: records so far, records/s, "
                "requests, retries). 0 turns them off; the summary table at the end stays."
            ),
        ),
        th.Property(
            "skip_unreadable_streams",
            th.BooleanType,
            default=False,
            title="Skip unreadable streams",
            description=(
                "Restricted keys (rk_...) are checked before a sync: by default a selected "
                "stream the key may not read stops the run, naming every such stream and "
                "the permission it needs. True skips those streams, with a warning each."
            ),
        ),
    ).to_dict()

    message_writer_class = LockedWriter

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        if isinstance(kwargs.get("catalog"), dict):
            check_catalog(kwargs["catalog"], [t.cast("t.Any", c).name for c in stream_classes()])
        super().__init__(*args, **kwargs)
        register_secrets(secrets_in(self.config))
        # The SDK has configured its log handlers by now; filter them too.
        install_redaction()
        self.clock = StripeClock()
        self.requests_by_endpoint: collections.Counter[str] = collections.Counter()
        self.retries_by_stream: collections.Counter[str] = collections.Counter()
        self._count_lock = threading.Lock()
        self._locked_state_writer = LockedStateWriter(self.message_writer)
        self.account: dict | None = None
        self.failed_accounts: dict[str, str] = {}
        self._primed = False
        self._limiters: dict[str | None, RateLimiter] = {}
        self.stream_may_start = False  # see `_sync_streams`
        self.streams_started = False  # whether a stream began (a failure has state to keep)

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """The SDK's check (which also fills in defaults), with one line naming each bad
        setting, unknown settings included, and never a secret's value."""
        register_secrets(secrets_in(self._config))
        self.append_builtin_config(self.config_jsonschema)
        problems = config_problems(self._config, self.config_jsonschema)
        if problems and raise_errors:
            raise ConfigError(f"Invalid settings: {'; '.join(problems)}.")
        for problem in problems:
            self.logger.warning("Invalid setting: %s", problem)
        try:
            return super()._validate_config(raise_errors=raise_errors) or problems
        except ConfigValidationError as exc:
            raise ConfigError(f"Invalid settings: {'; '.join(exc.errors)}.") from None

    def load_state(self, state: dict[str, t.Any]) -> None:
        """A STATE this tap cannot resume from ends the run before anything is written."""
        check_state(state)
        super().load_state(state)

    def discover_streams(self) -> list:
        # Each API version has its own schemas: records are converted and typed by them.
        api_version = str(self.config.get("api_version") or DEFAULT_API_VERSION)
        if api_version not in API_VERSIONS:  # --discover lets the SDK skip validation
            raise ConfigError(f"Invalid settings: {unsupported(api_version)}.")
        return [cls(tap=self) for cls in stream_classes(api_version)]

    @functools.cached_property
    def start_timestamp(self) -> int | None:
        return parse_start_date(self.config.get("start_date"))

    @functools.cached_property
    def authenticator(self) -> StripeKeyAuthenticator | StripeOAuthAuthenticator:
        return build_authenticator(self.config)

    @functools.cached_property
    def requests_session(self) -> StripeSession:
        return StripeSession(self._before_send, self.in_flight)

    @property
    def account_id(self) -> str | None:
        """The account records come from, unless a partition names one."""
        if configured := self.config.get("account_id"):
            return str(configured)
        if oauth_account := getattr(self.authenticator, "account_id", None):
            return str(oauth_account)
        if not self._primed:
            # A stream synced on its own (SDK tests, dry runs) still needs its account.
            self.prime_clock()
        return (self.account or {}).get("id")

    @functools.cached_property
    def connected_accounts(self) -> list[str] | None:
        """The partitions of a platform sync: `account_ids`, with "*" for all of them."""
        wanted = self.config.get("account_ids")
        if not wanted:
            return None
        if "*" in wanted:
            listed = [a["id"] for a in probe(self, "/v1/accounts").request_records(None)]
            extra = [a for a in wanted if a != "*" and a not in listed]
            return listed + extra
        return list(dict.fromkeys(wanted))

    def report_account_failure(self, account_id: str, error: Exception) -> None:
        """One account failed: the others go on; the run fails at the end."""
        with self._count_lock:
            self.failed_accounts.setdefault(account_id, str(error))
        self.logger.error("Account %s failed and is skipped: %s", account_id, error)

    @property
    def max_workers(self) -> int:
        return max(1, int(self.config.get("max_workers") or 32))

    @property
    def window_workers(self) -> int:
        """Workers for one stream's `created` windows, sharing `max_workers` across streams."""
        return max(1, self.max_workers // max(1, getattr(self, "parallel_streams", 1)))

    @property
    def limiter(self) -> RateLimiter:
        """The limiter of the credential's own account."""
        return self.limiter_for(None)

    def limiter_for(self, account_id: str | None) -> RateLimiter:
        """Stripe's budgets are per account: each connected account has its own."""
        with self._count_lock:
            limiter = self._limiters.get(account_id)
            if limiter is None:
                live = is_live_key(str(self.config.get("api_key") or "")) or bool(
                    (self.account or {}).get("livemode")
                )
                limiter = self._limiters[account_id] = RateLimiter(
                    float(
                        self.config.get("max_requests_per_second")
                        or (LIVE_RATE if live else TEST_RATE)
                    ),
                    float(self.config.get("max_requests_per_second_per_endpoint") or ENDPOINT_RATE),
                )
            return limiter

    def earliest_created(self, context: t.Mapping[str, t.Any] | None = None) -> int:
        """The earliest `created` an account's objects plausibly carry (for estimates only).

        The account's own creation when the credential's account is read (a connected
        account's is when it was connected: older objects are still listed); else 2010.
        """
        created = (self.account or {}).get("created")
        if (context or {}).get("account_id") or not isinstance(created, int):
            return STRIPE_EPOCH
        return created

    @functools.cached_property
    def cpu_load(self) -> CpuLoad:
        """How busy the sync keeps a CPU (see `cpu_bound`)."""
        return CpuLoad(0.25)

    def cpu_bound(self, limiter: RateLimiter) -> bool:
        """Whether more `created` windows would only compete for the CPU.

        With fast responses and a busy CPU, another window adds thread switches and a
        partial page, not speed. With slow ones, a window split now is answered after
        a response time, when the CPU has caught up: waiting for the CPU to be idle left
        the last windows of a run to page alone (~10% of a run with 250 ms responses).
        """
        return not limiter.responses_slow and self.cpu_load.busy()

    @functools.cached_property
    def in_flight(self) -> threading.Semaphore:
        return threading.Semaphore(self.max_workers)

    @functools.cached_property
    def background(self) -> ThreadPoolExecutor:
        """Workers for child lists fetched ahead of their parent's record."""
        return ThreadPoolExecutor(self.max_workers, thread_name_prefix="children")

    @property
    def state_writer(self) -> LockedStateWriter:
        return self._locked_state_writer

    def _before_send(self, request: requests.PreparedRequest) -> None:
        path = (request.path_url or "").split("?")[0]
        # The grant goes back to the limiter with the response (see `validate_response`).
        request.limiter_grant = self.limiter_for(  # type: ignore[attr-defined]
            request.headers.get("Stripe-Account")
        ).acquire(endpoint_of(request.method or "GET", path))
        with self._count_lock:
            self.requests_by_endpoint[endpoint_of(request.method or "GET", path)] += 1
        self.progress.observe_request(request.method or "GET", request.url or "")

    def prime_clock(self) -> None:
        """Learn Stripe's time and the account behind the credential from one request."""
        self._primed = True
        try:
            self.account = next(iter(probe(self, "/v1/account").request_records(None)))
        except StripePermissionError as exc:
            # Restricted keys often may not read the account; Stripe names it in the error.
            found = re.search(r"on account '(acct_[A-Za-z0-9]+)'", str(exc))
            self.account = {"id": found.group(1)} if found else None

    def count_retry(self, stream_name: str) -> None:
        with self._count_lock:
            self.retries_by_stream[stream_name] += 1
        self.progress.observe_retry(stream_name)

    @functools.cached_property
    def progress(self) -> Progress:
        """Progress lines while the run lasts and the summary table at its end."""
        progress = Progress(self.logger, self.config.get("progress_interval_seconds"))
        if isinstance(self.message_writer, LockedWriter):
            self.message_writer.observer = progress.observe_message
        return progress

    # The SDK marks `sync_all` final and syncs streams one at a time; running them in
    # parallel is the point of this override (see concurrency.py).
    def sync_all(self) -> None:  # type: ignore[misc]
        """Sync, with progress lines while it runs and a summary table at the end."""
        self.progress.start()
        failed = True
        try:
            with fewer_collections():
                self._sync_all()
            failed = False
        finally:
            self._flush_records(failed)
            self.progress.stop(failed=failed)

    def _flush_records(self, failed: bool) -> None:
        """Write the records threads collected and have not written yet (`LockedWriter`).

        After a failure, also the state as it is: listings write STATE at most once a
        second (see `StripeStream.checkpoint`), and what they completed since then is
        written, so the next run need not read it again.
        """
        writer = self.message_writer
        try:
            if isinstance(writer, LockedWriter):
                writer.flush()
            if failed and self.streams_started:
                self.state_writer.write_state(self.state)
        except OSError:
            if not failed:  # after a failure, its own error says more
                raise

    def _sync_all(self) -> None:
        """Sync the selected streams, several at once, through one writer.

        The SDK's `sync_all` runs streams one after another; this runs the same steps
        (progress-marker reset, `Stream.sync`, `finalize_state_progress_markers`) for
        several top-level streams in parallel. Children sync inside their parent.
        """
        # Check the settings the SDK's JSON Schema cannot express before any request.
        _ = self.authenticator
        _ = self.start_timestamp
        self._reset_state_progress_markers()
        self._set_compatible_replication_methods()
        if self.state:
            self.state_writer.write_state(self.state)
        self.prime_clock()
        if not self.connected_accounts and not self.account_id:
            raise ConfigError(
                "Could not tell which Stripe account the credential belongs to (it may not "
                "read the account): set setting 'account_id' to its id (acct_...)."
            )
        # Restricted keys: every selected stream readable before any starts (or skipped).
        check_permissions(self)
        streams = [
            stream
            for stream in self.streams.values()
            if (stream.selected or stream.has_selected_descendents)
            and not stream.parent_stream_type
        ]
        parallel = self.parallel_streams = min(len(streams), max(1, self.max_workers // 4)) or 1
        try:
            self._sync_streams(streams, parallel)
        finally:
            self.background.shutdown(wait=False, cancel_futures=True)
        for stream in self.streams.values():
            stream.log_sync_costs()
        if self.failed_accounts:
            names = "; ".join(f"{a}: {why}" for a, why in self.failed_accounts.items())
            raise TapError(
                f"{len(self.failed_accounts)} account(s) failed and were skipped (the others "
                f"completed and their state was kept): {names}"
            )

    def _sync_streams(self, streams: list[Stream], parallel: int) -> None:
        """Sync `streams`, up to `parallel` at once, starting one more only when it helps.

        Parallel streams overlap their waits for Stripe (for responses, for the rate
        budget). When nothing waits, the process already keeps a CPU busy and one more
        stream only competes for the GIL: without latency, four streams at once took ~30%
        longer than one after another. So a stream starts when another ends, or when the
        last 50 ms left at least half a CPU idle, or at once when Stripe's responses are
        slow (then every stream mostly waits). (Starting one whenever the CPU was 10% idle
        ran all four together at some point of a long sync: its peak memory, pages queued
        for four streams, was ~25% above a short sync's.) Every stream runs even if one
        fails; the first failure (in stream order) is raised at the end.
        """
        self.streams_started = True
        waiting = list(streams)
        futures: list[Future] = []
        running: set[Future] = set()
        room = CpuLoad(0.05)  # a quick look: streams start within a few responses
        with ThreadPoolExecutor(parallel, thread_name_prefix="stream") as pool:
            while waiting or running:
                slow = self.limiter.responses_slow
                while (
                    waiting
                    and len(running) < parallel
                    and (not running or slow or not room.busy(STREAM_START_BUSY))
                ):
                    future = pool.submit(self._sync_stream, waiting.pop(0))
                    futures.append(future)
                    running.add(future)
                    if not slow:
                        break  # one at a time: see whether the CPU is left idle
                # While a stream may still start, running ones split no `created` window:
                # a stream adds requests for full pages, a split window partial ones.
                self.stream_may_start = bool(waiting) and len(running) < parallel
                timeout = room.span if self.stream_may_start else None
                _, pending = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
                running = set(pending)
        self.stream_may_start = False
        for future in futures:
            future.result()

    def _sync_stream(self, stream: Stream) -> None:
        self.progress.stream_started(stream.name)
        stream.sync()
        stream.finalize_state_progress_markers()
        for done in (stream, *stream.descendent_streams):
            self.progress.stream_finished(done.name)


if __name__ == "__main__":
    TapStripeConnect.cli()
